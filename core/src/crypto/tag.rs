//! Code tags: `trunc(tag_bits, HMAC-SHA256(K_tag, "doorstep/tag/v1" ‖ len‖parcel_id ‖ len‖salt ‖ code))`.
//!
//! Truncation is deliberate: someone who extracted the device secret can brute-force a tag only to
//! a *set* of about 10^6 / 2^tag_bits candidate codes, and every delivered receipt carries a code proof
//! that dispatch checks against the true code (see `docs/security.md`).

use ring::hmac;
use subtle::ConstantTimeEq;

use super::{Code, TagKey};

pub const MIN_TAG_BITS: u8 = 16;
pub const MAX_TAG_BITS: u8 = 32;
const TAG_LABEL: &[u8] = b"doorstep/tag/v1";

/// Namespace for the tag functions.
pub struct Tag;

impl Tag {
    /// The truncated tag: `ceil(bits / 8)` bytes, unused low bits of the last byte cleared.
    pub fn compute(key: &TagKey, parcel_id: &str, salt: &[u8], code: &Code, bits: u8) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&key.0);
        ctx.update(TAG_LABEL);
        update_with_len(&mut ctx, parcel_id.as_bytes());
        update_with_len(&mut ctx, salt);
        ctx.update(code.as_bytes());
        truncate(ctx.sign().as_ref(), bits)
    }

    /// Constant-time comparison of the tag of `code` with a stored tag.
    pub fn matches(key: &TagKey, parcel_id: &str, salt: &[u8], code: &Code, bits: u8, stored: &[u8]) -> bool {
        let computed = Tag::compute(key, parcel_id, salt, code, bits);
        computed.len() == stored.len() && bool::from(computed.ct_eq(stored))
    }

    /// Bytes a tag of `bits` bits takes.
    pub fn len_for(bits: u8) -> usize {
        usize::from(bits).div_ceil(8)
    }
}

pub(crate) fn update_with_len(ctx: &mut hmac::Context, field: &[u8]) {
    ctx.update(&(field.len() as u32).to_be_bytes());
    ctx.update(field);
}

fn truncate(mac: &[u8], bits: u8) -> Vec<u8> {
    let bits = bits.clamp(MIN_TAG_BITS, MAX_TAG_BITS);
    let mut out = mac[..Tag::len_for(bits)].to_vec();
    let spare = (out.len() * 8) as u32 - u32::from(bits);
    if let Some(last) = out.last_mut() {
        *last &= 0xFFu8.checked_shl(spare).unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeviceSecret;

    fn key() -> TagKey {
        DeviceSecret::from_bytes(&[9u8; 32]).unwrap().tag_key(0)
    }

    #[test]
    fn right_code_matches_wrong_code_does_not() {
        let code = Code::parse("123456").unwrap();
        let tag = Tag::compute(&key(), "P1", b"salt", &code, 32);
        assert!(Tag::matches(&key(), "P1", b"salt", &code, 32, &tag));
        assert!(!Tag::matches(&key(), "P1", b"salt", &Code::parse("123457").unwrap(), 32, &tag));
        assert!(!Tag::matches(&key(), "P2", b"salt", &code, 32, &tag));
        assert!(!Tag::matches(&key(), "P1", b"salu", &code, 32, &tag));
    }

    #[test]
    fn truncation_clears_spare_bits() {
        let code = Code::parse("000001").unwrap();
        let t20 = Tag::compute(&key(), "P", b"s", &code, 20);
        assert_eq!(t20.len(), 3);
        assert_eq!(t20[2] & 0x0F, 0);
        let t32 = Tag::compute(&key(), "P", b"s", &code, 32);
        assert_eq!(&t32[..2], &t20[..2]);
        assert_eq!(t32[2] & 0xF0, t20[2]);
    }

    #[test]
    fn length_prefix_separates_fields() {
        // "P1" + salt "2x" must not collide with "P12" + salt "x".
        let code = Code::parse("111111").unwrap();
        assert_ne!(Tag::compute(&key(), "P1", b"2x", &code, 32), Tag::compute(&key(), "P12", b"x", &code, 32));
    }

    #[test]
    fn sixteen_bit_tags_collide_about_as_often_as_predicted() {
        // With 16-bit tags about 10^6 / 2^16 ≈ 15 other codes share the true code's tag.
        let k = key();
        let truth = Tag::compute(&k, "P", b"s", &Code::parse("424242").unwrap(), 16);
        let hits = (0..1_000_000u32)
            .filter(|n| Tag::matches(&k, "P", b"s", &Code::parse(&format!("{n:06}")).unwrap(), 16, &truth))
            .count();
        assert!((5..=35).contains(&hits), "{hits} candidates");
    }
}
