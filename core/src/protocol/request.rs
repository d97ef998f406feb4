//! Signed device requests: a device proves an HTTP request is its own with its receipt-signing key.
//!
//! Header value: `<device_id>.<unix_ms>.<signature base64url>`, the signature over
//! `"doorstep.request/1.0" ‖ 0 ‖ method ‖ 0 ‖ path ‖ 0 ‖ unix_ms ‖ 0 ‖ SHA-256(body)`. The server accepts
//! it within [`REQUEST_SKEW_MS`] of its own time. A replay inside that window can only repeat the
//! same idempotent request (fetch a manifest, upload the same batch).

use crate::crypto::{VerifyingKey, sha256};
use crate::encoding;

pub const REQUEST_HEADER: &str = "Device-Signature";
pub const REQUEST_SKEW_MS: i64 = 5 * 60 * 1000;
const DOMAIN: &str = "doorstep.request/1.0";

/// The bytes a request signature covers (the signing key adds the domain).
pub(crate) fn request_message(method: &str, path: &str, unix_ms: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(method.len() + path.len() + 64);
    for part in [method.as_bytes(), path.as_bytes(), unix_ms.to_string().as_bytes()] {
        msg.extend_from_slice(part);
        msg.push(0);
    }
    msg.extend_from_slice(&sha256(body));
    msg
}

pub(crate) fn request_domain() -> &'static str {
    DOMAIN
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRejection {
    #[error("missing or malformed Device-Signature header")]
    Malformed,
    #[error("the request is signed by another device")]
    WrongDevice,
    #[error("the request's time is too far from the server's (check the phone's clock)")]
    Stale,
    #[error("the request signature does not verify")]
    BadSignature,
}

/// Splits a header into (device id, unix_ms, signature), from the right: device ids may contain
/// dots, the other two parts never do.
fn split(header: &str) -> Option<(&str, &str, &str)> {
    let mut parts = header.rsplitn(3, '.');
    let (sig, ms, id) = (parts.next()?, parts.next()?, parts.next()?);
    (!id.is_empty()).then_some((id, ms, sig))
}

/// The device id a header claims (to look up its key), without verifying anything.
pub fn request_device(header: &str) -> Option<&str> {
    split(header).map(|(id, _, _)| id)
}

/// Verifies a `Device-Signature` header for `device_id` against its public key at `now_ms`,
/// accepting request times within `max_skew_ms` of it (normally [`REQUEST_SKEW_MS`]).
#[allow(clippy::too_many_arguments)]
pub fn verify_request(
    header: &str,
    device_id: &str,
    key: &VerifyingKey,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<(), RequestRejection> {
    let (id, ms, sig) = split(header).ok_or(RequestRejection::Malformed)?;
    if id != device_id {
        return Err(RequestRejection::WrongDevice);
    }
    let unix_ms: i64 = ms.parse().map_err(|_| RequestRejection::Malformed)?;
    if now_ms.abs_diff(unix_ms) > max_skew_ms.unsigned_abs() {
        return Err(RequestRejection::Stale);
    }
    let sig = encoding::decode(sig).ok_or(RequestRejection::Malformed)?;
    if !key.verify(DOMAIN, &request_message(method, path, unix_ms, body), &sig) {
        return Err(RequestRejection::BadSignature);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;

    #[test]
    fn a_header_with_an_extreme_time_is_stale_not_a_panic() {
        let key = SigningKey::generate("device:d").unwrap().verifying_key();
        for ms in [i64::MIN, i64::MAX, -1] {
            let header = format!("d.{ms}.AAAA");
            let verdict = verify_request(&header, "d", &key, "GET", "/", b"", 1_800_000_000_000, REQUEST_SKEW_MS);
            assert_eq!(verdict, Err(RequestRejection::Stale), "{ms}");
        }
        let header = format!("d.{}.AAAA", i64::MIN);
        assert_eq!(
            verify_request(&header, "d", &key, "GET", "/", b"", i64::MAX, i64::MAX),
            Err(RequestRejection::Stale)
        );
    }
}
