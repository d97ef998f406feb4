//! Code proofs: `HMAC-SHA256(K_proof, "doorstep/proof/v1" ‖ receipt_id ‖ len‖parcel_id ‖ code)`.
//!
//! A "delivered" receipt carries one proof per code-protected parcel. Dispatch recomputes it with the
//! true code; a device that forged a hand-over (knowing only a candidate set from a truncated tag)
//! is caught unless it guessed the exact code.

use ring::hmac;

use super::{Code, ProofKey, tag::update_with_len};

pub const PROOF_LEN: usize = 32;
const PROOF_LABEL: &[u8] = b"doorstep/proof/v1";

pub fn code_proof(key: &ProofKey, receipt_id: &[u8; 16], parcel_id: &str, code: &Code) -> [u8; PROOF_LEN] {
    let mut ctx = hmac::Context::with_key(&key.0);
    ctx.update(PROOF_LABEL);
    ctx.update(receipt_id);
    update_with_len(&mut ctx, parcel_id.as_bytes());
    ctx.update(code.as_bytes());
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Constant-time check of a proof against the true code.
pub fn verify_code_proof(key: &ProofKey, receipt_id: &[u8; 16], parcel_id: &str, code: &Code, proof: &[u8]) -> bool {
    let mut msg = Vec::with_capacity(PROOF_LABEL.len() + 16 + 4 + parcel_id.len() + 6);
    msg.extend_from_slice(PROOF_LABEL);
    msg.extend_from_slice(receipt_id);
    msg.extend_from_slice(&(parcel_id.len() as u32).to_be_bytes());
    msg.extend_from_slice(parcel_id.as_bytes());
    msg.extend_from_slice(code.as_bytes());
    let ok = hmac::verify(&key.0, &msg, proof).is_ok();
    zeroize::Zeroize::zeroize(&mut msg);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeviceSecret;

    #[test]
    fn proof_verifies_only_with_the_true_code_and_ids() {
        let key = DeviceSecret::from_bytes(&[3u8; 32]).unwrap().proof_key();
        let code = Code::parse("314159").unwrap();
        let rid = [1u8; 16];
        let proof = code_proof(&key, &rid, "P1", &code);
        assert!(verify_code_proof(&key, &rid, "P1", &code, &proof));
        assert!(!verify_code_proof(&key, &rid, "P1", &Code::parse("314158").unwrap(), &proof));
        assert!(!verify_code_proof(&key, &[2u8; 16], "P1", &code, &proof));
        assert!(!verify_code_proof(&key, &rid, "P2", &code, &proof));
        let other = DeviceSecret::from_bytes(&[4u8; 32]).unwrap().proof_key();
        assert!(!verify_code_proof(&other, &rid, "P1", &code, &proof));
    }
}
