//! Secrets at rest and the files that hold them.
//!
//! A [`SealingKey`] is an AES-256-GCM key (ring) kept in a 0600 file: dispatch's key-encryption key
//! `STATE/keys/kek`, or the terminal phone's `vault.key`. A sealed value is `nonce ‖ ciphertext ‖
//! tag` with a fresh random nonce. The associated data names the row it belongs to (for example
//! `code/<parcel>/<holder>/<issued ms>`), so a sealed value copied into another row does not open.
//! Dispatch seals every code and device secret this way. A database copied without the key file
//! reveals neither.
//!
//! Rotating the KEK: `doorstep keys rotate-kek --state STATE` re-seals every row under a new one
//! (`store::rotate_kek`).
//!
//! [`private_folder`] and [`private_file`] give the state folder 0700 and its files 0600.

use std::io::Write;
use std::path::Path;

use doorstep_core::crypto::random_bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::error::{DispatchError, Result};

/// An AES-256-GCM key read from (or first written to) a 0600 file.
pub struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// Reads the key at `path`, creating it (32 random bytes, 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<SealingKey> {
        let bytes = if path.exists() {
            std::fs::read(path)?
        } else {
            let fresh = random_bytes::<32>()?.to_vec();
            write_private(path, &fresh)?;
            fresh
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| integrity(format!("{} must hold 32 bytes", path.display())))?;
        Ok(SealingKey { key: LessSafeKey::new(key) })
    }

    /// Seals `plaintext` for the row named by `aad`.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut sealed)
            .map_err(|_| integrity("sealing failed".into()))?;
        Ok([&nonce[..], &sealed].concat())
    }

    /// Opens a value sealed for the row named by `aad`; `Integrity` when it was sealed for another
    /// row, under another key, or altered.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let unreadable = || integrity(format!("sealed value for {aad} does not open"));
        if sealed.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut body = body.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body).map_err(|_| unreadable())?;
        Ok(plain.to_vec())
    }
}

fn integrity(why: String) -> DispatchError {
    DispatchError::Core(doorstep_core::CoreError::Integrity(why))
}

/// Writes a new file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)?;
    Ok(())
}

/// Creates `path` if needed and makes it a folder only its owner can enter (0700).
pub fn private_folder(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// Makes an existing file readable by its owner only (0600); a missing file is left alone.
pub fn private_file(path: &Path) -> Result<()> {
    #[cfg(unix)]
    if path.exists() {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_row_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealingKey::load_or_create(&dir.path().join("kek")).unwrap();
        let sealed = key.seal("code/P1/customer/5", b"123456").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"123456"));
        assert_eq!(key.open("code/P1/customer/5", &sealed).unwrap(), b"123456");
        assert!(key.open("code/P2/customer/5", &sealed).is_err(), "moved to another row");
        let other = SealingKey::load_or_create(&dir.path().join("other")).unwrap();
        assert!(other.open("code/P1/customer/5", &sealed).is_err(), "another key");
        let again = SealingKey::load_or_create(&dir.path().join("kek")).unwrap();
        assert_eq!(again.open("code/P1/customer/5", &sealed).unwrap(), b"123456", "the key file is reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("kek")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
