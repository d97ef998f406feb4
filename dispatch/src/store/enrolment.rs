//! Enrolment and device identity: one-time enrolment tokens (kept as hashes, single-use across
//! every node: the token is spent in the transaction that enrols), enrolled devices with their
//! sealed secrets, and the check of each signed device request (answered once: a replay inside
//! the clock window is refused, also when it reaches another node).

use super::*;

/// A device as stored: route, sealed secret, manifest sequence and date, public key.
type DeviceRow = (String, Vec<u8>, i64, Vec<u8>);

impl Dispatch {
    /// A one-time token that enrols one device for `route_id`.
    pub fn create_enrolment_token(&self, route_id: &str, by: &Operator) -> Result<String> {
        validate::id("route_id", route_id)?;
        let token = Uuid::from_bytes(random_bytes::<16>().map_err(DispatchError::Core)?).simple().to_string();
        self.run(|tx| {
            let now = self.now_ms()?;
            tx.execute(
                "INSERT INTO enrolment_token (token, route_id, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![token_hash(&token), route_id, now, now.saturating_add(self.enrolment_token_ttl_ms)],
            )?;
            audit(tx, now, by, "enrolment_token", None, Some(&format!("route {route_id}")))
        })?;
        Ok(token)
    }

    /// Enrols a device with a one-time token; returns the enrolment bundle (contains the device
    /// secret: answer only over TLS).
    pub fn enrol(&self, token: &str, request: &[u8]) -> Result<Vec<u8>> {
        self.run(|tx| {
            let route: Option<(String, Option<String>, i64, Option<i64>)> = tx.opt(
                "SELECT route_id, used_by, created_at_ms, expires_at_ms FROM enrolment_token WHERE token = ?1",
                params![token_hash(token)],
            )?;
            // Tokens made before their expiry was stored live the default lifetime.
            let default_end = |created: i64| created.saturating_add(DEFAULT_ENROLMENT_TOKEN_HOURS * 3_600_000);
            let route_id = match route {
                None => return Err(DispatchError::Forbidden("unknown enrolment token".into())),
                Some((_, Some(_), _, _)) => {
                    return Err(DispatchError::Forbidden("enrolment token already used".into()));
                }
                Some((_, None, created, expires))
                    if self.now_ms()? >= expires.unwrap_or_else(|| default_end(created)) =>
                {
                    return Err(DispatchError::Forbidden("enrolment token expired; ask for a new one".into()));
                }
                Some((route_id, None, _, _)) => route_id,
            };
            let device_id = format!("dev-{}", Uuid::now_v7().simple());
            let (device, bundle) = self.issuer.enrol(request, &device_id, self.now()?)?;
            let key_taken: bool = tx.one(
                "SELECT EXISTS (SELECT 1 FROM device WHERE public_key = ?1)",
                params![device.public_key.public],
            )?;
            if key_taken {
                return Err(DispatchError::Conflict("this device key is already enrolled".into()));
            }
            // Spent first, and only while unspent: of two nodes enrolling with one token, one wins.
            let spent = tx.execute(
                "UPDATE enrolment_token SET used_by = ?1 WHERE token = ?2 AND used_by IS NULL",
                params![device_id, token_hash(token)],
            )?;
            if spent != 1 {
                return Err(DispatchError::Forbidden("enrolment token already used".into()));
            }
            tx.execute(
                "INSERT INTO device (device_id, route_id, secret, public_key, enrolled_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    device_id,
                    route_id,
                    self.seal(tx, &device_secret_aad(&device_id), device.secret.expose())?,
                    device.public_key.public,
                    self.now_ms()?
                ],
            )?;
            Ok(bundle)
        })
    }

    /// A device with its unsealed secret, its route and the sequence of its latest manifest.
    pub(super) fn device(&self, tx: &Tx<'_>, device_id: &str) -> Result<(EnrolledDevice, String, i64)> {
        let row: Option<DeviceRow> = tx.opt(
            "SELECT route_id, secret, manifest_seq, public_key FROM device WHERE device_id = ?1",
            params![device_id],
        )?;
        let (route_id, secret, seq, public) =
            row.ok_or_else(|| DispatchError::NotFound(format!("device {device_id}")))?;
        let device = EnrolledDevice {
            device_id: device_id.to_owned(),
            secret: DeviceSecret::from_bytes(&self.kek.open(&device_secret_aad(device_id), &secret)?)?,
            public_key: device_verifying_key(device_id, public)?,
        };
        Ok((device, route_id, seq))
    }

    /// A device's enrolled request- and receipt-signing key (`None` for an unknown device): all a
    /// request's signature needs, without unsealing the device secret.
    pub(super) fn device_key(tx: &Tx<'_>, device_id: &str) -> Result<Option<VerifyingKey>> {
        let public: Option<Vec<u8>> =
            tx.opt("SELECT public_key FROM device WHERE device_id = ?1", params![device_id])?;
        public.map(|p| device_verifying_key(device_id, p)).transpose()
    }

    /// What can be checked of a device request before its body is read: the device exists and
    /// the `Device-Signature` names it, in form and in time. Refused like any bad signature.
    ///
    /// The trade-off: an upload naming an unknown device is answered at once, one naming a known
    /// device only after its body, so the timing confirms that a (leaked) device id exists. Ids
    /// carry 74 random bits, and reading every stranger's body would let strangers fill the
    /// upload places instead.
    pub fn check_device_request_header(&self, device_id: &str, header: Option<&str>) -> Result<()> {
        let refused = || DispatchError::Unauthorized(DEVICE_REFUSED.into());
        let header = header.ok_or_else(refused)?;
        let now = self.now_ms()?;
        doorstep_core::protocol::check_request_header(header, device_id, now, self.request_skew_ms)
            .map_err(|_| refused())?;
        self.run(|tx| Self::device_key(tx, device_id))?.ok_or_else(refused)?;
        Ok(())
    }

    /// Checks a device request's `Device-Signature` header (method, path with query, body) against
    /// the device's enrolled key and the server's clock. An unknown device, a bad or missing
    /// signature and a clock out of the window all get the same 401, and the time to answer does
    /// not depend on it either (uploads aside: see above). Nothing is written: the operation the
    /// request asks for records it in its own transaction ([`Dispatch::answer_once`]), so each
    /// signed request is answered once (a replay inside the clock window is refused, also at
    /// another node) at the cost of one commit, not two.
    pub fn verify_device_request(
        &self,
        device_id: &str,
        header: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<VerifiedRequest> {
        let refused = || DispatchError::Unauthorized(DEVICE_REFUSED.into());
        let header = header.unwrap_or_default();
        let signature_hash = sha256(header.as_bytes());
        // The device's key, and whether this signature was answered before (a replay is refused
        // here, before it draws on the device's request budget), in one read.
        let (known, seen) = self.db.read(|tx| {
            let seen: bool = tx
                .one("SELECT EXISTS (SELECT 1 FROM seen_request WHERE signature_hash = ?1)", params![signature_hash])?;
            Ok((Self::device_key(tx, device_id)?, seen))
        })?;
        let now = self.now_ms()?;
        // An unknown device goes through the same verification, against a key nobody holds, so
        // the time to answer does not tell which device ids exist.
        let key = known.clone().unwrap_or_else(|| VerifyingKey { key_id: String::new(), public: NOBODYS_KEY });
        let verified = doorstep_core::protocol::verify_request(
            header,
            device_id,
            &key,
            method,
            path,
            body,
            now,
            self.request_skew_ms,
        );
        let (Some(key), Ok(_), false) = (known, verified, seen) else {
            return Err(refused());
        };
        // The transaction that answers records it for good (two copies racing are settled there).
        Ok(VerifiedRequest { device_id: device_id.to_owned(), key, signature_hash, at_ms: now })
    }

    /// Marks a verified request as being answered by this node until the guard is dropped;
    /// refused (401) while another copy of it is. For work done before the transaction that
    /// records the request ([`Dispatch::answer_once`]): a replayed copy racing the first would
    /// otherwise cost that work again.
    pub(super) fn answering(&self, request: &VerifiedRequest) -> Result<Answering<'_>> {
        let mut set = self.answering.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !set.insert(request.signature_hash) {
            return Err(DispatchError::Unauthorized(DEVICE_REFUSED.into()));
        }
        Ok(Answering { dispatch: self, signature_hash: request.signature_hash })
    }

    /// Records a verified request inside the transaction that answers it; refused (401, and the
    /// transaction rolls back) when that signature was answered before.
    pub(super) fn answer_once(&self, tx: &Tx<'_>, request: &VerifiedRequest) -> Result<()> {
        // Older signatures fall outside the window anyway; forget them, once a minute per node
        // (concurrent requests deleting the same rows would only conflict with each other).
        let minute = request.at_ms.div_euclid(60_000);
        if self.seen_purged_minute.swap(minute, std::sync::atomic::Ordering::Relaxed) != minute {
            tx.execute(
                "DELETE FROM seen_request WHERE at_ms < ?1",
                params![request.at_ms.saturating_sub(2 * self.request_skew_ms)],
            )?;
        }
        let fresh = tx.execute(
            "INSERT INTO seen_request (signature_hash, at_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![request.signature_hash, request.at_ms],
        )?;
        if fresh == 0 {
            return Err(DispatchError::Unauthorized(DEVICE_REFUSED.into()));
        }
        Ok(())
    }
}

/// A device's enrolled key as stored.
fn device_verifying_key(device_id: &str, public: Vec<u8>) -> Result<VerifyingKey> {
    let public: [u8; 32] = public.try_into().map_err(|_| bad("stored public key is not 32 bytes"))?;
    Ok(VerifyingKey { key_id: format!("device:{device_id}"), public })
}

/// A request this node is answering (see [`Dispatch::answering`]).
pub(super) struct Answering<'a> {
    dispatch: &'a Dispatch,
    signature_hash: [u8; 32],
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let mut set = self.dispatch.answering.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        set.remove(&self.signature_hash);
    }
}

/// A device request whose signature verified, to be answered once (see
/// [`Dispatch::verify_device_request`]).
pub struct VerifiedRequest {
    device_id: String,
    /// The device's key the signature verified against.
    key: VerifyingKey,
    signature_hash: [u8; 32],
    at_ms: i64,
}

impl VerifiedRequest {
    /// The device that signed the request.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The device's enrolled key, as read when the request was verified.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}
