//! Signed device requests: a device proves an HTTP request is its own with its receipt-signing key.
//!
//! Header value: `<device_id>.<unix_ms>.<nonce>.<signature>` (nonce: 16 random bytes, base64url),
//! the signature over `"doorstep.request/1.1" ‖ 0 ‖ method ‖ 0 ‖ path ‖ 0 ‖ unix_ms ‖ 0 ‖ nonce ‖ 0 ‖
//! SHA-256(body)`. The server accepts it within [`REQUEST_SKEW_MS`] of its own time and answers each
//! signature once (it keeps those it saw inside the window), so a replay changes nothing; the nonce
//! keeps two genuine requests in the same millisecond apart. Builds of protocol 1.0 sent
//! `<device_id>.<unix_ms>.<signature>` over the same fields without the nonce under
//! `doorstep.request/1.0`; that form still verifies.

use crate::crypto::{VerifyingKey, sha256};
use crate::encoding;

pub const REQUEST_HEADER: &str = "Device-Signature";
pub const REQUEST_SKEW_MS: i64 = 5 * 60 * 1000;
const DOMAIN: &str = "doorstep.request/1.1";
const LEGACY_DOMAIN: &str = "doorstep.request/1.0";

/// The bytes a request signature covers (the signing key adds the domain); `nonce` is absent only
/// in the 1.0 form.
pub(crate) fn request_message(method: &str, path: &str, unix_ms: i64, nonce: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(method.len() + path.len() + 96);
    let ms = unix_ms.to_string();
    for part in [method.as_bytes(), path.as_bytes(), ms.as_bytes()].into_iter().chain(nonce.map(str::as_bytes)) {
        msg.extend_from_slice(part);
        msg.push(0);
    }
    msg.extend_from_slice(&sha256(body));
    msg
}

pub(crate) fn request_domain() -> &'static str {
    DOMAIN
}

/// A fresh request nonce (text form).
pub(crate) fn request_nonce() -> crate::Result<String> {
    Ok(encoding::encode(&crate::crypto::random_bytes::<16>()?))
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

/// A header's parts.
struct Parts<'a> {
    id: &'a str,
    ms: &'a str,
    /// `None` in the 1.0 form.
    nonce: Option<&'a str>,
    sig: &'a str,
}

/// Splits a header from the right (device ids may contain dots, the other parts never do). Four
/// parts whose second is a time are the 1.1 form; otherwise the 1.0 form.
fn split(header: &str) -> Option<Parts<'_>> {
    let mut four = header.rsplitn(4, '.');
    let (sig, nonce, ms, id) = (four.next()?, four.next()?, four.next(), four.next());
    if let (Some(ms), Some(id)) = (ms, id)
        && ms.parse::<i64>().is_ok()
        && !id.is_empty()
    {
        return Some(Parts { id, ms, nonce: Some(nonce), sig });
    }
    let mut three = header.rsplitn(3, '.');
    let (sig, ms, id) = (three.next()?, three.next()?, three.next()?);
    (!id.is_empty()).then_some(Parts { id, ms, nonce: None, sig })
}

/// The device id a header claims (to look up its key), without verifying anything.
pub fn request_device(header: &str) -> Option<&str> {
    split(header).map(|p| p.id)
}

/// Checks everything about a `Device-Signature` header that needs neither the key nor the body:
/// its form, the device it names and its time. Dispatch runs this before it reads a request's
/// body, so a stranger's upload is refused without being held in memory.
pub fn check_request_header(
    header: &str,
    device_id: &str,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<(), RequestRejection> {
    header_time(header, device_id, now_ms, max_skew_ms).map(|_| ())
}

/// The request's time and the parts of its header, once form, device and time are checked.
fn header_time<'a>(
    header: &'a str,
    device_id: &str,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<(Parts<'a>, i64), RequestRejection> {
    let parts = split(header).ok_or(RequestRejection::Malformed)?;
    if parts.id != device_id {
        return Err(RequestRejection::WrongDevice);
    }
    let unix_ms: i64 = parts.ms.parse().map_err(|_| RequestRejection::Malformed)?;
    // Only the canonical form ("+5", "05" parse too): one signed request has exactly one header,
    // so dispatch's once-only check cannot be dodged by respelling the time.
    if parts.ms != unix_ms.to_string() {
        return Err(RequestRejection::Malformed);
    }
    if now_ms.abs_diff(unix_ms) > max_skew_ms.unsigned_abs() {
        return Err(RequestRejection::Stale);
    }
    Ok((parts, unix_ms))
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
    let (parts, unix_ms) = header_time(header, device_id, now_ms, max_skew_ms)?;
    let sig = encoding::decode(parts.sig).ok_or(RequestRejection::Malformed)?;
    let domain = if parts.nonce.is_some() { DOMAIN } else { LEGACY_DOMAIN };
    if !key.verify(domain, &request_message(method, path, unix_ms, parts.nonce, body), &sig) {
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

    #[test]
    fn two_requests_in_one_millisecond_differ_and_the_old_form_still_verifies() {
        let signing = SigningKey::generate("device:d.x").unwrap();
        let key = signing.verifying_key();
        let now = 1_800_000_000_000;
        let sign = |nonce: Option<&str>, domain| {
            let sig = signing.sign(domain, &request_message("GET", "/m", now, nonce, b""));
            match nonce {
                Some(n) => format!("d.x.{now}.{n}.{}", encoding::encode(&sig)),
                None => format!("d.x.{now}.{}", encoding::encode(&sig)),
            }
        };
        let (a, b) = (request_nonce().unwrap(), request_nonce().unwrap());
        let (first, second) = (sign(Some(&a), DOMAIN), sign(Some(&b), DOMAIN));
        assert_ne!(first, second);
        for header in [&first, &second, &sign(None, LEGACY_DOMAIN)] {
            assert_eq!(request_device(header), Some("d.x"));
            assert_eq!(verify_request(header, "d.x", &key, "GET", "/m", b"", now, REQUEST_SKEW_MS), Ok(()));
        }
        // The nonce is signed; the 1.1 signature does not pass as 1.0 or the other way round.
        let swapped = first.replace(&a, &b);
        assert_eq!(
            verify_request(&swapped, "d.x", &key, "GET", "/m", b"", now, REQUEST_SKEW_MS),
            Err(RequestRejection::BadSignature)
        );
        let downgraded = sign(None, DOMAIN);
        assert_eq!(
            verify_request(&downgraded, "d.x", &key, "GET", "/m", b"", now, REQUEST_SKEW_MS),
            Err(RequestRejection::BadSignature)
        );
    }

    #[test]
    fn a_respelled_time_is_malformed_so_one_request_has_one_header() {
        let signing = SigningKey::generate("device:d").unwrap();
        let now = 1_800_000_000_000;
        let nonce = request_nonce().unwrap();
        let sig = encoding::encode(&signing.sign(DOMAIN, &request_message("GET", "/m", now, Some(&nonce), b"")));
        let key = signing.verifying_key();
        let check = |ms: &str| {
            verify_request(&format!("d.{ms}.{nonce}.{sig}"), "d", &key, "GET", "/m", b"", now, REQUEST_SKEW_MS)
        };
        assert_eq!(check(&now.to_string()), Ok(()));
        for respelled in [format!("+{now}"), format!("0{now}"), format!("00{now}")] {
            assert_eq!(check(&respelled), Err(RequestRejection::Malformed), "{respelled}");
        }
    }
}
