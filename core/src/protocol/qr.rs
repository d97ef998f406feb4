//! QR tokens: the customer app shows a token dispatch signed for one parcel and holder, valid until
//! `not_after`, with a nonce so the device accepts it once. No secret is needed on the device.
//!
//! Text form: `DSQ2.<key_id>.<payload base64url>.<signature base64url>`. The signature covers
//! `DSQ2 ‖ 0 ‖ key_id ‖ 0 ‖ payload` under the domain `doorstep.qr/2`: prefix, key id, format and
//! version are all bound. `DSQ1` tokens, minted by dispatch builds before protocol 1.1, still verify,
//! so a token a customer fetched before an update still opens the door: signed like `DSQ2` but
//! under `doorstep.qr/1.0`, or (the earliest builds) the payload alone under `doorstep.qr`, whose
//! key id only selects the key that must still verify the signature.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Base64Bytes, Holder, domain, signing_domain};
use crate::crypto::{SigningKey, VerifyingKey};
use crate::encoding;
use crate::error::QrRejection;

const PREFIX: &str = "DSQ2";
const LEGACY_PREFIX: &str = "DSQ1";
const MAX_TOKEN_LEN: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrToken {
    pub parcel_id: String,
    pub holder: Holder,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub nonce: Base64Bytes,
    /// When dispatch minted it. Dispatch flags a hand-over with a token minted before the
    /// holder's code was last reissued (a reissue answers a leak; tokens from before it are
    /// suspect). Absent in tokens of earlier builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
}

impl QrToken {
    pub fn sign(&self, key: &SigningKey) -> Result<String, serde_json::Error> {
        let payload = serde_json::to_vec(self)?;
        let sig = key.sign(&qr_domain(), &signed_message(PREFIX, key.key_id(), &payload));
        Ok(format!("{PREFIX}.{}.{}.{}", key.key_id(), encoding::encode(&payload), encoding::encode(&sig)))
    }

    /// Parses the text and verifies the signature; validity and single use are the caller's to judge.
    pub fn verify(text: &str, keys: &[VerifyingKey]) -> Result<QrToken, QrRejection> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(QrRejection::Malformed);
        }
        let mut parts = text.split('.');
        let (Some(prefix @ (PREFIX | LEGACY_PREFIX)), Some(key_id), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(QrRejection::Malformed);
        };
        let payload = encoding::decode(payload).ok_or(QrRejection::Malformed)?;
        let sig = encoding::decode(sig).ok_or(QrRejection::Malformed)?;
        let key =
            keys.iter().find(|k| k.key_id == key_id).ok_or_else(|| QrRejection::UnknownKeyId(key_id.to_owned()))?;
        let genuine = if prefix == PREFIX {
            key.verify(&qr_domain(), &signed_message(prefix, key_id, &payload), &sig)
        } else {
            key.verify(&signing_domain(domain::QR, "1.0"), &signed_message(prefix, key_id, &payload), &sig)
                || key.verify(domain::QR, &payload, &sig)
        };
        if !genuine {
            return Err(QrRejection::BadSignature);
        }
        serde_json::from_slice(&payload).map_err(|_| QrRejection::Malformed)
    }
}

/// Fixed by the token format (`DSQ2`), not by the protocol version: a token must verify on any
/// build that reads its prefix.
fn qr_domain() -> String {
    signing_domain(domain::QR, "2")
}

/// What a token's signature covers besides the domain: the text prefix, the key id, the payload.
fn signed_message(prefix: &str, key_id: &str, payload: &[u8]) -> Vec<u8> {
    [prefix.as_bytes(), &[0], key_id.as_bytes(), &[0], payload].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_tampering_is_caught() {
        let key = SigningKey::generate("k1").unwrap();
        let keys = [key.verifying_key()];
        let t = QrToken {
            parcel_id: "P1".into(),
            holder: Holder::Customer,
            not_before: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            not_after: DateTime::from_timestamp(1_800_086_400, 0).unwrap(),
            nonce: Base64Bytes(vec![1; 16]),
            issued_at: None,
        };
        let text = t.sign(&key).unwrap();
        assert_eq!(QrToken::verify(&text, &keys).unwrap(), t);
        let mut bytes = text.clone().into_bytes();
        let i = bytes.len() - 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(QrToken::verify(std::str::from_utf8(&bytes).unwrap(), &keys).is_err());
        assert_eq!(QrToken::verify("hello", &keys), Err(QrRejection::Malformed));
        assert_eq!(QrToken::verify(&text.replacen("k1", "k2", 1), &keys), Err(QrRejection::UnknownKeyId("k2".into())));
    }

    #[test]
    fn a_token_signature_binds_prefix_key_id_and_version() {
        let key = SigningKey::generate("k1").unwrap();
        // The same key known under a second id: the key id in the text is still bound.
        let alias = VerifyingKey { key_id: "k2".into(), ..key.verifying_key() };
        let keys = [key.verifying_key(), alias];
        let t = QrToken {
            parcel_id: "P1".into(),
            holder: Holder::Customer,
            not_before: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            not_after: DateTime::from_timestamp(1_800_086_400, 0).unwrap(),
            nonce: Base64Bytes(vec![2; 16]),
            issued_at: None,
        };
        let text = t.sign(&key).unwrap();
        assert_eq!(QrToken::verify(&text, &keys).unwrap(), t);
        assert_eq!(QrToken::verify(&text.replacen("k1", "k2", 1), &keys), Err(QrRejection::BadSignature));
        // A signature over the payload alone, under the old unversioned domain: refused as DSQ2 ...
        let payload = serde_json::to_vec(&t).unwrap();
        let old = |prefix: &str| {
            format!("{prefix}.k1.{}.{}", encoding::encode(&payload), encoding::encode(&key.sign(domain::QR, &payload)))
        };
        assert_eq!(QrToken::verify(&old(PREFIX), &keys), Err(QrRejection::BadSignature));
        // ... and accepted as the DSQ1 token an earlier dispatch minted.
        assert_eq!(QrToken::verify(&old(LEGACY_PREFIX), &keys).unwrap(), t);
        // A DSQ1 token as the builds just before 1.1 signed it: bound, under `doorstep.qr/1.0`.
        let bound_v1 = key.sign(&signing_domain(domain::QR, "1.0"), &signed_message(LEGACY_PREFIX, "k1", &payload));
        let v1 = format!("{LEGACY_PREFIX}.k1.{}.{}", encoding::encode(&payload), encoding::encode(&bound_v1));
        assert_eq!(QrToken::verify(&v1, &keys).unwrap(), t);
        // A DSQ2 signature relabelled DSQ1 (or the reverse) does not verify.
        assert_eq!(QrToken::verify(&text.replacen(PREFIX, LEGACY_PREFIX, 1), &keys), Err(QrRejection::BadSignature));
    }
}
