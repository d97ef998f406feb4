//! Dispatch's keys, kept as files in the state folder's `keys/` and never in the database:
//! signing keys (`<key id>.pk8`, the one named in `current` signs) and the key-encryption key
//! (`kek`) every code, device secret and queued e-mail is sealed under. Nodes sharing a
//! PostgreSQL database share these files by configuration (the same `keys/` deployed to each);
//! the database records which keys it was started with ([`register`]), and a node holding
//! other keys is refused instead of signing what phones cannot verify or sealing what the
//! other nodes cannot open.

use super::*;

pub(super) const CURRENT_KEY_FILE: &str = "current";
/// The key-encryption key's file in `keys/` (never a signing key: `load_or_create_issuer` reads
/// `*.pk8` only).
pub(super) const KEK_FILE: &str = "kek";
/// The new key-encryption key while a rotation runs.
pub(super) const NEXT_KEK_FILE: &str = "kek.next";

/// Loads the signing keys: `keys/<key_id>.pk8`, in key-id order; the one named in `keys/current`
/// (or the first, when none is named) signs; keys after it are announced but do not sign yet.
/// Creates `dispatch-1` on first start.
pub(super) fn load_or_create_issuer(dir: &Path) -> Result<(Issuer, Vec<VerifyingKey>)> {
    let mut keys = read_keys(dir)?;
    if keys.is_empty() {
        let key = SigningKey::generate("dispatch-1")?;
        write_private(&dir.join("dispatch-1.pk8"), key.pkcs8())?;
        keys.push(key);
    }
    let announced: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
    let current = match std::fs::read_to_string(dir.join(CURRENT_KEY_FILE)) {
        Ok(id) => id.trim().to_owned(),
        Err(_) => keys[0].key_id().to_owned(),
    };
    let position = keys
        .iter()
        .position(|k| k.key_id() == current)
        .ok_or_else(|| bad(format!("keys/current names {current:?}, which is not in keys/")))?;
    keys.truncate(position + 1);
    let mut keys = keys.into_iter();
    let mut issuer = Issuer::new(keys.next().ok_or_else(|| bad("no signing key"))?);
    for key in keys {
        issuer.rotate_to(key)?;
    }
    Ok((issuer, announced))
}

fn read_keys(dir: &Path) -> Result<Vec<SigningKey>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pk8"))
        .collect();
    // dispatch-2 before dispatch-10: order by the number after the last '-', then by name.
    files.sort_by_key(|f| {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let n: u64 = stem.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, stem)
    });
    let mut keys = Vec::new();
    for f in &files {
        let key_id = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        keys.push(SigningKey::from_pkcs8(key_id, &std::fs::read(f)?)?);
    }
    Ok(keys)
}

/// Key rotation, step 1: adds a new signing key to the state folder's `keys/`. Manifests announce
/// it from the next start on; it signs only after [`promote_key`]. Returns its id.
pub fn add_key(state: &Path) -> Result<String> {
    let dir = state.join("keys");
    private_folder(&dir)?;
    let next = read_keys(&dir)?.len() + 1;
    let key_id = format!("dispatch-{next}");
    let key = SigningKey::generate(key_id.clone())?;
    write_private(&dir.join(format!("{key_id}.pk8")), key.pkcs8())?;
    Ok(key_id)
}

/// Replaces the key-encryption key: every sealed code, device secret and queued e-mail is
/// re-sealed under a new `keys/kek` in one transaction, then the old key file is deleted. Stop
/// dispatch first (every node, on PostgreSQL, and give them the new `keys/kek` before they start
/// again). A run cut short is finished (or undone) by the next open: see [`finish_kek_rotation`].
/// Returns how many values were re-sealed.
pub fn rotate_kek(state: &Path, database: Option<&PostgresConfig>) -> Result<usize> {
    rotate_kek_until(state, database, true)
}

pub(super) fn rotate_kek_until(state: &Path, database: Option<&PostgresConfig>, swap_files: bool) -> Result<usize> {
    // Opening brings the state up to date and checks the old key opens it.
    let dispatch = Dispatch::open_with(state, database, HighValuePolicy::default())?;
    let keys = state.join("keys");
    let old = SealingKey::load_or_create(&keys.join(KEK_FILE))?;
    let next_path = keys.join(NEXT_KEK_FILE);
    if next_path.exists() {
        std::fs::remove_file(&next_path)?;
    }
    let next = SealingKey::load_or_create(&next_path)?;
    let keys_pair = (&old, &next);
    let resealed = dispatch.run(|tx| {
        let codes: Vec<(i64, String, String, i64, Vec<u8>)> =
            tx.all("SELECT id, parcel_id, holder, issued_at_ms, code FROM code", params![])?;
        let devices: Vec<(String, Vec<u8>)> = tx.all("SELECT device_id, secret FROM device", params![])?;
        // Customer e-mail still queued carries a code too.
        let mail: Vec<(i64, Vec<u8>)> = tx.all("SELECT id, message FROM mail_outbox", params![])?;
        for (id, parcel, holder, issued, sealed) in &codes {
            let aad = code_aad(parcel, holder, *issued);
            tx.execute("UPDATE code SET code = ?2 WHERE id = ?1", params![id, reseal(keys_pair, &aad, sealed)?])?;
        }
        for (id, sealed) in &devices {
            let aad = device_secret_aad(id);
            tx.execute(
                "UPDATE device SET secret = ?2 WHERE device_id = ?1",
                params![id, reseal(keys_pair, &aad, sealed)?],
            )?;
        }
        for (id, sealed) in &mail {
            let aad = mail_aad(*id);
            tx.execute(
                "UPDATE mail_outbox SET message = ?2 WHERE id = ?1",
                params![id, reseal(keys_pair, &aad, sealed)?],
            )?;
        }
        let check: Vec<u8> = tx.one("SELECT value FROM key_registry WHERE name = ?1", params![KEK_CHECK])?;
        tx.execute(
            "UPDATE key_registry SET value = ?2 WHERE name = ?1",
            params![KEK_CHECK, reseal(keys_pair, KEK_CHECK, &check)?],
        )?;
        Ok(codes.len() + devices.len() + mail.len())
    })?;
    // No old page of the SQLite file keeps a value sealed under the old key.
    dispatch.db.checkpoint()?;
    drop(dispatch);
    if swap_files {
        let db = match database {
            None => Db::sqlite(Connection::open(state.join("dispatch.db"))?),
            Some(config) => Db::postgres(config)?,
        };
        finish_kek_rotation(&keys, &db)?;
    }
    Ok(resealed)
}

/// One sealed value, opened with the first key and sealed again with the second.
fn reseal((old, next): (&SealingKey, &SealingKey), aad: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    next.seal(aad, &old.open(aad, sealed)?)
}

/// Completes a KEK rotation that stopped between its commit and the file swap: when the
/// database's check value opens under `keys/kek.next`, it becomes `keys/kek` (the old key is
/// deleted); when it does not, the rotation never committed and `kek.next` is deleted.
pub(super) fn finish_kek_rotation(keys: &Path, db: &Db) -> Result<()> {
    let next_path = keys.join(NEXT_KEK_FILE);
    if !next_path.exists() {
        return Ok(());
    }
    let next = SealingKey::load_or_create(&next_path)?;
    let check: Option<Vec<u8>> =
        db.run(|tx| Ok(tx.opt("SELECT value FROM key_registry WHERE name = ?1", params![KEK_CHECK])?))?;
    let opens = |key: &SealingKey| check.as_deref().is_some_and(|c| key.open(KEK_CHECK, c).is_ok());
    let old_path = keys.join(KEK_FILE);
    if opens(&next) {
        std::fs::rename(&next_path, old_path)?;
    } else if old_path.exists() && opens(&SealingKey::load_or_create(&old_path)?) {
        // The rotation never committed: the old key still opens this database.
        std::fs::remove_file(&next_path)?;
    } else {
        // Neither key opens this database (another database, or one that never saw these keys):
        // keep both files and say so, since deleting either could lose the only key to the data.
        return Err(bad(format!(
            "{} is left from a key-encryption key rotation, and neither it nor keys/kek opens this database: \
             start with the database the rotation ran on (--database), or restore the keys that belong to it",
            next_path.display()
        )));
    }
    Ok(())
}

/// The key registry's row holding a value sealed under the key-encryption key (and its
/// associated data): whoever opens it holds the database's KEK.
const KEK_CHECK: &str = "kek-check";

impl Dispatch {
    /// Seals a value to store in `tx`, after checking in the same transaction that this node's
    /// key-encryption key is still the database's: a node left running through a rotation (its
    /// `keys/kek` replaced on disk and in the database, its memory not) refuses instead of
    /// sealing what no node could open again. On PostgreSQL a rotation committing meanwhile
    /// conflicts with this read, and the transaction runs again and refuses.
    pub(super) fn seal(&self, tx: &Tx<'_>, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let check: Option<Vec<u8>> = tx.opt("SELECT value FROM key_registry WHERE name = ?1", params![KEK_CHECK])?;
        if check.is_some_and(|c| self.kek.open(KEK_CHECK, &c).is_err()) {
            return Err(DispatchError::Core(CoreError::KeyVault(
                "this dispatch node's key-encryption key was rotated away: restart it with the new keys/kek".into(),
            )));
        }
        self.kek.seal(aad, plaintext)
    }
}

/// Records the keys this database is used with on first use, and refuses keys that differ from
/// those recorded: a key-encryption key that does not open the check value, or a signing key
/// whose id is recorded with another public key. Keys added later are recorded when first seen.
pub(super) fn register(tx: &Tx<'_>, kek: &SealingKey, announced: &[VerifyingKey]) -> Result<()> {
    let refuse = |what: String| {
        bad(format!(
            "{what}: every dispatch node on one database needs the same keys/ (copy the folder from a node that runs)"
        ))
    };
    match tx.opt::<Vec<u8>>("SELECT value FROM key_registry WHERE name = ?1", params![KEK_CHECK])? {
        Some(check) if kek.open(KEK_CHECK, &check).is_err() => {
            return Err(refuse("keys/kek is not the key-encryption key this database was started with".into()));
        }
        Some(_) => {}
        None => {
            tx.execute(
                "INSERT INTO key_registry (name, value) VALUES (?1, ?2)",
                params![KEK_CHECK, kek.seal(KEK_CHECK, b"doorstep key-encryption key")?],
            )?;
        }
    }
    for key in announced {
        let name = format!("signing:{}", key.key_id);
        match tx.opt::<Vec<u8>>("SELECT value FROM key_registry WHERE name = ?1", params![name])? {
            Some(public) if public != key.public => {
                return Err(refuse(format!("keys/{}.pk8 is not the key of that id this database knows", key.key_id)));
            }
            Some(_) => {}
            None => {
                tx.execute("INSERT INTO key_registry (name, value) VALUES (?1, ?2)", params![name, key.public])?;
            }
        }
    }
    Ok(())
}

/// Key rotation, step 2 (once devices have synced a manifest announcing it): the key signs from
/// the next start on. Devices that never saw the announcement must enrol again.
pub fn promote_key(state: &Path, key_id: &str) -> Result<()> {
    let dir = state.join("keys");
    if !read_keys(&dir)?.iter().any(|k| k.key_id() == key_id) {
        return Err(DispatchError::NotFound(format!("key {key_id}")));
    }
    let path = dir.join(CURRENT_KEY_FILE);
    std::fs::write(&path, key_id)?;
    private_file(&path)?;
    Ok(())
}
