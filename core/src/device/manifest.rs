//! Applying a manifest: verify, check it belongs here and follows the applied sequence, then apply
//! it all-or-nothing in one transaction. A refused manifest changes nothing. A delivered parcel is
//! never reverted, whatever the manifest says.
//!
//! A phone holds up to [`MAX_HELD_DAYS`] delivery days at once (tomorrow's route is loaded the
//! evening before while today's stays deliverable). One manifest sequence covers them all; a full
//! manifest replaces only its own day, a delta changes only its own day, and a day is let go
//! (its parcels and spent attempts forgotten) only once a later day is held and every parcel of it
//! is handed over or expired, past its window.

use std::collections::HashSet;

use chrono::NaiveDate;
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;

use super::{Device, LogLevel, Session};
use crate::crypto::VerifyingKey;
use crate::error::ManifestRejection;
use crate::protocol::{MAX_MANIFEST_BYTES, ManifestKind, ManifestPayload, domain};
use crate::{CoreError, Result};

/// What applying a manifest changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub manifest_id: String,
    pub sequence: u64,
    pub full: bool,
    pub added: u32,
    pub updated: u32,
    pub removed: u32,
    pub reset: u32,
    /// Parcels the manifest would have changed or removed, kept because they are delivered.
    pub kept_delivered: u32,
    /// Why none of the manifest applied although it was taken (its sequence, so the changes after
    /// it still arrive): a full manifest of a day the phone cannot hold (before every held day, or
    /// one day too many). `None` when it applied.
    pub not_applied: Option<String>,
}

/// Most delivery days a phone holds at once: yesterday's (until its last parcels expire),
/// today's and tomorrow's.
pub const MAX_HELD_DAYS: usize = 3;

/// The days the phone holds, oldest first, and the manifest sequence they share.
struct Held {
    sequence: Option<u64>,
    days: Vec<(NaiveDate, String)>,
}

impl Held {
    fn list(&self) -> String {
        self.days.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// Where a manifest that passed its checks goes.
#[derive(PartialEq, Eq)]
enum Target {
    /// Its own delivery day (held, or new for a full manifest).
    Day,
    /// A delta for a day the phone does not hold (let go, or whose full manifest it refused):
    /// only the sequence advances, so the deltas after it still apply.
    Skip,
}

/// Parses a manifest envelope, borrowing the payload text from the input so a large manifest is
/// not copied before it is decoded.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    format: &'a str,
    version: &'a str,
    key_id: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl Device {
    /// Verifies and applies a manifest envelope (full or delta) from dispatch.
    pub fn apply_manifest(&self, envelope: &[u8]) -> Result<ApplyReport> {
        if envelope.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestRejection::TooLarge { size: envelope.len(), limit: MAX_MANIFEST_BYTES }.into());
        }
        let report = self.write(|s| {
            let keys = s.keys()?;
            let (payload, signer) = open_envelope(envelope, &keys.dispatch)?;
            let manifest: ManifestPayload =
                serde_json::from_slice(&payload).map_err(|e| ManifestRejection::Malformed(e.to_string()))?;
            drop(payload);
            manifest.validate()?;
            if manifest.device_id != keys.device_id {
                return Err(ManifestRejection::WrongDevice.into());
            }
            let held = held(s)?;
            let target = check_sequence(&held, &manifest)?;
            if !manifest.dispatch_keys.is_empty() && !manifest.dispatch_keys.contains(&signer) {
                return Err(ManifestRejection::Malformed("announced keys must include the signing key".into()).into());
            }
            if target == Target::Skip {
                return skip(s, &manifest, None);
            }
            if manifest.kind == ManifestKind::Full && !held.days.iter().any(|(d, _)| *d == manifest.delivery_date) {
                // A new day: days that are over are let go first, then it must fit.
                super::purge::purge_due(s)?;
                let_go_of_finished_days(s)?;
                if let Some(refusal) = cannot_hold(&self::held(s)?, &manifest) {
                    return skip(s, &manifest, Some(refusal.to_string()));
                }
            }
            apply(s, &manifest)
        })?;
        self.reload_keys()?;
        self.log(
            LogLevel::Info,
            &format!(
                "manifest {} seq {} applied: +{} ~{} -{} reset {}",
                report.manifest_id, report.sequence, report.added, report.updated, report.removed, report.reset
            ),
        );
        Ok(report)
    }
}

/// The verified payload bytes and the key that signed them.
fn open_envelope(bytes: &[u8], keys: &[VerifyingKey]) -> Result<(Vec<u8>, VerifyingKey), ManifestRejection> {
    let raw: RawEnvelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| ManifestRejection::Malformed(e.to_string()))?;
    if raw.format != domain::MANIFEST {
        return Err(ManifestRejection::Malformed(format!("format is {:?}", raw.format)));
    }
    if !crate::protocol::check_version(raw.version) {
        return Err(ManifestRejection::UnsupportedVersion(raw.version.to_owned()));
    }
    let key = keys
        .iter()
        .find(|k| k.key_id == raw.key_id)
        .ok_or_else(|| ManifestRejection::UnknownKeyId(raw.key_id.into()))?;
    let payload = crate::encoding::decode(raw.payload)
        .ok_or_else(|| ManifestRejection::Malformed("payload is not base64url".into()))?;
    let signature = crate::encoding::decode(raw.signature).ok_or(ManifestRejection::BadSignature)?;
    if !key.verify(&crate::protocol::signing_domain(domain::MANIFEST, raw.version), &payload, &signature) {
        return Err(ManifestRejection::BadSignature);
    }
    Ok((payload, key.clone()))
}

fn held(s: &Session<'_>) -> Result<Held> {
    let sequence: Option<i64> = s
        .tx
        .query_row("SELECT manifest_seq FROM device_state WHERE id = 1 AND manifest_id IS NOT NULL", [], |r| r.get(0))
        .optional()?
        .flatten();
    let days = s
        .tx
        .prepare_cached("SELECT delivery_date, route_id FROM held_day ORDER BY delivery_date")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .map(|(date, route)| Ok((date.parse().map_err(|_| CoreError::Integrity(format!("held day {date:?}")))?, route)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Held { sequence: sequence.map(|s| s as u64), days })
}

fn check_sequence(held: &Held, m: &ManifestPayload) -> Result<Target, ManifestRejection> {
    let Some(current) = held.sequence else {
        return match m.kind {
            ManifestKind::Full => Ok(Target::Day),
            ManifestKind::Delta => Err(ManifestRejection::DeltaWithoutBase),
        };
    };
    if m.sequence <= current {
        return Err(ManifestRejection::StaleSequence { got: m.sequence, current });
    }
    if m.kind == ManifestKind::Delta && m.sequence != current + 1 {
        return Err(ManifestRejection::SequenceGap { got: m.sequence, expected: current + 1 });
    }
    // A full manifest replaces only its own day: one that jumps the sequence may have skipped
    // changes to the other days held (dispatch journals every manifest, so asking again from
    // `current` gets them in order).
    if m.kind == ManifestKind::Full
        && m.sequence != current + 1
        && held.days.iter().any(|(date, _)| *date != m.delivery_date)
    {
        return Err(ManifestRejection::MissedChanges { current, got: m.sequence });
    }
    match (m.kind, held.days.iter().find(|(date, _)| *date == m.delivery_date)) {
        (ManifestKind::Delta, Some((_, route))) if *route != m.route_id => {
            Err(ManifestRejection::WrongRoute { got: m.route_id.clone(), expected: route.clone() })
        }
        (ManifestKind::Delta, None) => Ok(Target::Skip),
        _ => Ok(Target::Day),
    }
}

/// Why the phone cannot hold a new day's full manifest: a day before every day it holds (they only
/// move forward), or one day more than [`MAX_HELD_DAYS`]. Such a manifest is signed and next in
/// sequence, so it is taken without applying anything: refusing it would leave it first in
/// dispatch's journal, and no later change would ever arrive.
fn cannot_hold(held: &Held, m: &ManifestPayload) -> Option<ManifestRejection> {
    if held.days.first().is_some_and(|(oldest, _)| m.delivery_date < *oldest) {
        return Some(ManifestRejection::WrongDate { got: m.delivery_date.to_string(), expected: held.list() });
    }
    (held.days.len() >= MAX_HELD_DAYS)
        .then(|| ManifestRejection::TooManyDays { held: held.list(), limit: MAX_HELD_DAYS })
}

/// A manifest none of whose parcels apply (a delta for a day the phone does not hold, or a full
/// manifest of a day it cannot hold, `why`): the sequence moves on so the next one follows, and a
/// key announcement it carries still counts.
fn skip(s: &Session<'_>, m: &ManifestPayload, why: Option<String>) -> Result<ApplyReport> {
    s.tx.execute(
        "UPDATE device_state SET manifest_seq = ?1, last_sync_ms = ?2 WHERE id = 1",
        params![m.sequence as i64, s.now.trusted_ms],
    )?;
    announce_keys(&s.tx, m)?;
    s.saw_server_time(m.issued_at.timestamp_millis())?;
    Ok(ApplyReport {
        manifest_id: m.manifest_id.clone(),
        sequence: m.sequence,
        full: m.kind == ManifestKind::Full,
        not_applied: why,
        ..Default::default()
    })
}

fn apply(s: &Session<'_>, m: &ManifestPayload) -> Result<ApplyReport> {
    let mut report = ApplyReport {
        manifest_id: m.manifest_id.clone(),
        sequence: m.sequence,
        full: m.kind == ManifestKind::Full,
        ..Default::default()
    };
    let tx = &s.tx;
    let now = s.now.trusted_ms;
    let date = m.delivery_date.to_string();
    if m.kind == ManifestKind::Full {
        // Parcels of held days whose windows ended expire into receipts first, so those days can
        // be let go below.
        super::purge::purge_due(s)?;
        // A full manifest replaces its day: drop every parcel of that day it does not list, except
        // delivered ones (they stay delivered). Other days are not touched.
        let listed: HashSet<&str> = m.parcels.iter().map(|p| p.parcel_id.as_str()).collect();
        let existing: Vec<(String, String)> = tx
            .prepare("SELECT parcel_id, state FROM parcel WHERE delivery_date = ?1")?
            .query_map([&date], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, state) in existing {
            if listed.contains(id.as_str()) {
                continue;
            }
            if state == "delivered" {
                report.kept_delivered += 1;
                continue;
            }
            remove_parcel(tx, &id)?;
            report.removed += 1;
        }
    }
    let mut state_of = tx.prepare_cached("SELECT state FROM parcel WHERE parcel_id = ?1")?;
    let mut barcode_owner = tx.prepare_cached("SELECT parcel_id FROM parcel WHERE barcode = ?1")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO parcel (parcel_id, barcode, stop_id, stop_seq, address_hint, recipient_hint, needs_code, salt,
                             tag_bits, key_epoch, max_attempts, not_before_ms, not_after_ms, state, attempts_used,
                             manifest_id, updated_at_ms, attempt_epoch, delivery_date, rules, task)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending',
                 max(?16, coalesce((SELECT attempts_used FROM spent_attempts
                                    WHERE parcel_id = ?1 AND attempt_epoch >= ?17), 0)), ?14, ?15, ?17, ?18, ?19, ?20)
         ON CONFLICT (parcel_id) DO UPDATE SET
             barcode = excluded.barcode, stop_id = excluded.stop_id, stop_seq = excluded.stop_seq,
             address_hint = excluded.address_hint, recipient_hint = excluded.recipient_hint,
             needs_code = excluded.needs_code, salt = excluded.salt, tag_bits = excluded.tag_bits,
             key_epoch = excluded.key_epoch, max_attempts = excluded.max_attempts,
             not_before_ms = excluded.not_before_ms, not_after_ms = excluded.not_after_ms,
             attempts_used = CASE WHEN excluded.attempt_epoch > attempt_epoch THEN excluded.attempts_used
                                  ELSE max(attempts_used, excluded.attempts_used) END,
             attempt_epoch = max(attempt_epoch, excluded.attempt_epoch),
             state = CASE WHEN state = 'expired' AND excluded.not_after_ms > ?15 THEN 'pending'
                          WHEN state = 'locked' AND excluded.attempt_epoch > attempt_epoch THEN 'pending'
                          ELSE state END,
             manifest_id = excluded.manifest_id, updated_at_ms = excluded.updated_at_ms,
             delivery_date = excluded.delivery_date, rules = excluded.rules, task = excluded.task",
    )?;
    let mut clear_tags = tx.prepare_cached("DELETE FROM code_tag WHERE parcel_id = ?1")?;
    let mut insert_tag =
        tx.prepare_cached("INSERT INTO code_tag (parcel_id, holder, tag, qr_minted_after_ms) VALUES (?1, ?2, ?3, ?4)")?;
    for p in &m.parcels {
        let state: Option<String> = state_of.query_row([&p.parcel_id], |r| r.get(0)).optional()?;
        if state.as_deref() == Some("delivered") {
            report.kept_delivered += 1;
            continue;
        }
        if let Some(owner) = barcode_owner.query_row([&p.barcode], |r| r.get::<_, String>(0)).optional()?
            && owner != p.parcel_id
        {
            return Err(ManifestRejection::DuplicateBarcode(p.parcel_id.clone()).into());
        }
        let salt = p.needs_code().then_some(&p.salt.0);
        insert.execute(params![
            p.parcel_id,
            p.barcode,
            p.stop.id,
            p.stop.sequence,
            p.address_hint,
            p.recipient_hint,
            p.needs_code(),
            salt,
            m.policy.tag_bits,
            m.policy.key_epoch,
            m.policy.max_attempts,
            p.not_before.timestamp_millis(),
            p.not_after.timestamp_millis(),
            m.manifest_id,
            now,
            p.attempts_used,
            p.attempt_epoch,
            date,
            p.rules.bits(),
            p.task.as_str(),
        ])?;
        if state.is_some() {
            clear_tags.execute([&p.parcel_id])?;
            report.updated += 1;
        } else {
            report.added += 1;
        }
        for t in &p.tags {
            let minted_after = t.qr_minted_after.map(|at| at.timestamp_millis());
            insert_tag.execute(params![p.parcel_id, t.holder.to_key(), t.tag.0, minted_after])?;
        }
        super::parcels::reseal(tx, &p.parcel_id)?;
    }
    for id in &m.removals {
        match state_of.query_row([id], |r| r.get::<_, String>(0)).optional()?.as_deref() {
            Some("delivered") => report.kept_delivered += 1,
            Some(_) => {
                remove_parcel(tx, id)?;
                report.removed += 1;
            }
            None => {}
        }
    }
    for id in &m.resets {
        tx.execute("DELETE FROM spent_attempts WHERE parcel_id = ?1", [id])?;
        report.reset += tx.execute(
            "UPDATE parcel SET attempts_used = 0, updated_at_ms = ?2,
                 state = CASE WHEN state = 'locked' THEN 'pending' ELSE state END
             WHERE parcel_id = ?1 AND state != 'delivered'",
            params![id, now],
        )? as u32;
    }
    announce_keys(tx, m)?;
    tx.execute(
        "UPDATE device_state SET manifest_id = ?1, route_id = ?2, delivery_date = ?3, time_zone = ?4,
             manifest_seq = ?5, max_attempts = ?6, tag_bits = ?7, key_epoch = ?8, issued_at_ms = ?9,
             applied_at_ms = ?10, last_sync_ms = ?10
         WHERE id = 1",
        params![
            m.manifest_id,
            m.route_id,
            m.delivery_date.to_string(),
            m.time_zone,
            m.sequence as i64,
            m.policy.max_attempts,
            m.policy.tag_bits,
            m.policy.key_epoch,
            m.issued_at.timestamp_millis(),
            now
        ],
    )?;
    tx.execute(
        "INSERT INTO held_day (delivery_date, route_id, manifest_id, time_zone, issued_at_ms, applied_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (delivery_date) DO UPDATE SET route_id = excluded.route_id, manifest_id = excluded.manifest_id,
             time_zone = excluded.time_zone, issued_at_ms = excluded.issued_at_ms,
             applied_at_ms = excluded.applied_at_ms",
        params![date, m.route_id, m.manifest_id, m.time_zone, m.issued_at.timestamp_millis(), now],
    )?;
    let_go_of_finished_days(s)?;
    s.saw_server_time(m.issued_at.timestamp_millis())?;
    Ok(report)
}

/// The dispatch keys a manifest announces (during a rotation) replace the phone's.
fn announce_keys(tx: &rusqlite::Transaction<'_>, m: &ManifestPayload) -> Result<()> {
    if !m.dispatch_keys.is_empty() {
        tx.execute("DELETE FROM dispatch_key", [])?;
        for k in &m.dispatch_keys {
            tx.execute(
                "INSERT INTO dispatch_key (key_id, public_key) VALUES (?1, ?2)",
                params![k.key_id, k.public.to_vec()],
            )?;
        }
    }
    Ok(())
}

/// When a delivery date has ended in every time zone (at UTC-12: noon UTC the next day), in ms.
/// The phone does not judge zones itself; a day is over for it only once it is over everywhere.
fn ended_everywhere_ms(date: NaiveDate) -> i64 {
    date.succ_opt().and_then(|next| next.and_hms_opt(12, 0, 0)).map_or(i64::MAX, |t| t.and_utc().timestamp_millis())
}

/// Lets go of every held day older than the newest one that has ended everywhere and whose
/// parcels are all handed over or expired, past their windows (and the grace the purge keeps
/// after both): its parcels, their tags and the attempts spent on its parcels are forgotten. A
/// day with no parcel yet is kept until it has ended. Returns how many days were let go.
pub(super) fn let_go_of_finished_days(s: &Session<'_>) -> Result<usize> {
    let cutoff = s.now.trusted_ms - super::purge::PURGE_GRACE_MS;
    let candidates: Vec<String> =
        s.tx.prepare_cached(
            "SELECT h.delivery_date FROM held_day h
              WHERE h.delivery_date < (SELECT max(delivery_date) FROM held_day)
                AND NOT EXISTS (SELECT 1 FROM parcel p WHERE p.delivery_date = h.delivery_date
                                   AND (p.state NOT IN ('delivered', 'expired') OR p.not_after_ms > ?1))",
        )?
        .query_map([cutoff], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let finished: Vec<String> = candidates
        .into_iter()
        .filter(|date| date.parse::<NaiveDate>().is_ok_and(|d| ended_everywhere_ms(d) <= cutoff))
        .collect();
    for date in &finished {
        s.tx.execute("DELETE FROM parcel WHERE delivery_date = ?1", [date])?;
        s.tx.execute("DELETE FROM spent_attempts WHERE delivery_date = ?1", [date])?;
        s.tx.execute("DELETE FROM held_day WHERE delivery_date = ?1", [date])?;
    }
    Ok(finished.len())
}

/// Takes a parcel off the device, remembering the attempts spent on it (a parcel that comes back
/// resumes its count: only a signed reset gives attempts back).
fn remove_parcel(tx: &rusqlite::Transaction<'_>, parcel_id: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO spent_attempts (parcel_id, attempts_used, attempt_epoch, delivery_date)
             SELECT parcel_id, attempts_used, attempt_epoch, delivery_date FROM parcel
              WHERE parcel_id = ?1 AND attempts_used > 0
         ON CONFLICT (parcel_id) DO UPDATE SET delivery_date = excluded.delivery_date,
             attempts_used = CASE WHEN excluded.attempt_epoch > attempt_epoch THEN excluded.attempts_used
                                  ELSE max(attempts_used, excluded.attempts_used) END,
             attempt_epoch = max(attempt_epoch, excluded.attempt_epoch)",
    )?
    .execute([parcel_id])?;
    tx.prepare_cached("DELETE FROM parcel WHERE parcel_id = ?1")?.execute([parcel_id])?;
    Ok(())
}
