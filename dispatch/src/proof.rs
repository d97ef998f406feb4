//! `doorstep evidence` and `doorstep verify-evidence`: a parcel's evidence file written from a
//! dispatch state, and any evidence file checked offline against a published keys document (what
//! `GET /v1/dispatch-keys` answers). Checking needs no state, no network and no secret.

use std::path::Path;

use doorstep_core::crypto::VerifyingKey;
use doorstep_core::evidence::{self, EvidenceReport};

use crate::error::{DispatchError, Result};
use crate::store::Dispatch;

/// Writes `parcel_id`'s evidence to `out` (and dispatch's public keys to `keys_out`); returns a
/// line saying what was written and how to check it.
pub fn write(dispatch: &Dispatch, parcel_id: &str, out: &Path, keys_out: Option<&Path>) -> Result<String> {
    let file = dispatch.evidence(parcel_id)?;
    std::fs::write(out, &file)?;
    let keys = match keys_out {
        Some(path) => {
            std::fs::write(path, serde_json::to_vec_pretty(&dispatch.public_keys()).unwrap_or_default())?;
            path.display().to_string()
        }
        None => "KEYS.json (GET /v1/dispatch-keys)".into(),
    };
    Ok(format!(
        "wrote the evidence about parcel {parcel_id} to {} ({} bytes); check it with: doorstep verify-evidence {} --keys {keys}",
        out.display(),
        file.len(),
        out.display()
    ))
}

/// At most `limit` bytes of the file at `path` (one byte more tells it is larger).
fn read_at_most(path: &Path, limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| DispatchError::BadRequest(format!("{}: {e}", path.display())))?;
    if bytes.len() > limit {
        return Err(DispatchError::BadRequest(format!("{} is larger than {limit} bytes", path.display())));
    }
    Ok(bytes)
}

/// The trusted keys from a keys document (a JSON array of `{"key_id", "public"}`).
pub fn read_keys(path: &Path) -> Result<Vec<VerifyingKey>> {
    let bytes = read_at_most(path, 1 << 20)?;
    let keys: Vec<VerifyingKey> = serde_json::from_slice(&bytes).map_err(|e| {
        DispatchError::BadRequest(format!(
            "{} is not a keys document (a JSON array of {{\"key_id\", \"public\"}}, as GET /v1/dispatch-keys answers): {e}",
            path.display()
        ))
    })?;
    if keys.is_empty() {
        return Err(DispatchError::BadRequest(format!("{} names no key", path.display())));
    }
    Ok(keys)
}

/// Checks the evidence file at `path` against `keys`.
pub fn check(path: &Path, keys: &[VerifyingKey]) -> Result<std::result::Result<EvidenceReport, String>> {
    let bytes = read_at_most(path, evidence::MAX_EVIDENCE_BYTES)?;
    Ok(evidence::verify(&bytes, keys).map_err(|e| e.to_string()))
}

/// A verified report for people: one line for the file, one per receipt.
pub fn describe(report: &EvidenceReport) -> Vec<String> {
    let mut lines = vec![format!(
        "valid: evidence about parcel {}, stated by dispatch key {} at {}; {} receipts",
        report.parcel_id,
        report.signed_by,
        report.issued_at.to_rfc3339(),
        report.events.len()
    )];
    for e in &report.events {
        let mut line =
            format!("{}  device {} #{}  {}", e.trusted_time.to_rfc3339(), e.device_id, e.seq, name(&e.event));
        if let Some(holder) = &e.holder {
            line.push_str(&format!(" to {}", holder.to_key()));
        }
        if let Some(method) = &e.method {
            line.push_str(&format!(" by {}", name(method)));
        }
        if let Some(reason) = &e.reason {
            line.push_str(&format!(" ({})", name(reason)));
        }
        line.push_str(&format!("  dispatch: {}", name(&e.status)));
        if let Some(why) = &e.status_reason {
            line.push_str(&format!(" ({why})"));
        }
        lines.push(line);
    }
    lines
}

/// A wire enum's own name (`delivered`, `customer`, `delegate:Anna`...).
fn name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}
