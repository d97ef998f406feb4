//! Serde helpers: binary fields travel as unpadded URL-safe base64 (QR- and URL-friendly).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// `#[serde(with = "crate::encoding::b64")]` for `Vec<u8>`.
pub(crate) mod b64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::decode(&text).ok_or_else(|| D::Error::custom("invalid base64url (unpadded)"))
    }
}

/// `#[serde(with = "crate::encoding::b64_32")]` for `[u8; 32]` (hashes, public keys, proofs).
pub(crate) mod b64_32 {
    use serde::{Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        super::b64::serialize(bytes, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let bytes = super::b64::deserialize(d)?;
        bytes.try_into().map_err(|_| D::Error::custom("expected exactly 32 bytes"))
    }
}
