//! Manifests and deltas: a device's full manifest of its route-day (the departed parcels with
//! their current codes' tags, windows and attempts), and the signed deltas every change appends to
//! the journal of each device holding that route-day, numbered by the device's manifest sequence
//! (advanced in the transaction that signs, so two nodes never issue one number twice).

use super::*;

/// A parcel's columns a manifest entry needs: barcode, stop id and sequence, delivery date and
/// zone, address and recipient hints, whether it needs a code.
type EntryRow = (String, String, u32, String, String, String, String, bool);

impl Dispatch {
    /// The manifest a device should apply next. Without `since` (or when `since` is not a sequence
    /// this device can continue from, or the date changed): a new full manifest. With `since` equal
    /// to the latest sequence: `None`, nothing new. Otherwise the delta `since + 1`.
    pub fn manifest(&self, device_id: &str, date: NaiveDate, since: Option<u64>) -> Result<Option<Vec<u8>>> {
        self.manifest_or_refuse_full(device_id, date, since, &|| Ok(()))
    }

    /// [`Dispatch::manifest`], asking `before_full` first whenever it is about to build a full
    /// manifest (the costly kind, from the whole route-day): the API draws the device's
    /// full-manifest budget there, whatever `since` the request named.
    pub fn manifest_or_refuse_full(
        &self,
        device_id: &str,
        date: NaiveDate,
        since: Option<u64>,
        before_full: &dyn Fn() -> Result<()>,
    ) -> Result<Option<Vec<u8>>> {
        let budget_drawn = std::cell::Cell::new(false);
        self.run(|tx| {
            let (device, route_id, seq) = self.device(tx, device_id)?;
            let current_date: Option<String> =
                tx.one("SELECT manifest_date FROM device WHERE device_id = ?1", params![device_id])?;
            if let Some(n) = since
                && current_date.as_deref() == Some(&date.to_string())
            {
                if i64::try_from(n) == Ok(seq) {
                    return Ok(None);
                }
                // A `since` beyond any stored delta (even past i64) finds none: a full manifest follows.
                let next = i64::try_from(n).ok().and_then(|n| n.checked_add(1)).unwrap_or(i64::MAX);
                let delta: Option<Vec<u8>> =
                    tx.opt("SELECT envelope FROM delta WHERE device_id = ?1 AND seq = ?2", params![device_id, next])?;
                if delta.is_some() {
                    return Ok(delta);
                }
            }
            // The budget is drawn once per call, also when PostgreSQL runs the transaction again.
            if !budget_drawn.replace(true) {
                before_full()?;
            }
            let ids: Vec<String> = tx.all(
                "SELECT parcel_id FROM parcel WHERE route_id = ?1 AND delivery_date = ?2 AND departed_at_ms IS NOT NULL
             ORDER BY stop_seq, parcel_id",
                params![route_id, date.to_string()],
            )?;
            let mut parcels = Vec::with_capacity(ids.len());
            for id in &ids {
                // One parcel that cannot be put into a manifest never breaks the route: it is left
                // out and the reason recorded in its history (once per reason).
                match self.parcel_entry(tx, id) {
                    Ok(entry) => parcels.extend(entry),
                    Err(e @ (DispatchError::Conflict(_) | DispatchError::BadRequest(_) | DispatchError::Core(_))) => {
                        let why = format!("left out of the manifest: {e}");
                        let known: bool = tx.one(
                            "SELECT EXISTS (SELECT 1 FROM operator_action WHERE parcel_id = ?1 AND detail = ?2)",
                            params![id, why],
                        )?;
                        if !known {
                            audit(tx, self.now_ms()?, &Operator::dispatch(), "left_out", Some(id), Some(&why))?;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            let envelope =
                self.sign_for(tx, &device, &route_id, date, seq + 1, ManifestKind::Full, parcels, vec![], vec![])?;
            tx.execute(
                "UPDATE device SET manifest_seq = ?1, manifest_date = ?2 WHERE device_id = ?3",
                params![seq + 1, date.to_string(), device_id],
            )?;
            Ok(Some(envelope))
        })
    }

    /// A signed full manifest of the departed parcels of the device's route for `date`.
    pub fn full_manifest(&self, device_id: &str, date: NaiveDate) -> Result<Vec<u8>> {
        self.manifest(device_id, date, None)?.ok_or_else(|| bad("no manifest"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn sign_for(
        &self,
        tx: &Tx<'_>,
        device: &EnrolledDevice,
        route_id: &str,
        date: NaiveDate,
        sequence: i64,
        kind: ManifestKind,
        parcels: Vec<IssuedParcel>,
        removals: Vec<String>,
        resets: Vec<String>,
    ) -> Result<Vec<u8>> {
        let zone: Option<String> = tx.opt(
            "SELECT time_zone FROM parcel WHERE route_id = ?1 AND delivery_date = ?2 LIMIT 1",
            params![route_id, date.to_string()],
        )?;
        // The phone may make receipts for these parcels from now on.
        for p in &parcels {
            tx.execute(
                "INSERT INTO parcel_sent (device_id, parcel_id) VALUES (?1, ?2)
                 ON CONFLICT (device_id, parcel_id) DO UPDATE SET withdrawn_at_ms = NULL",
                params![device.device_id, p.parcel_id],
            )?;
        }
        let spec = ManifestSpec {
            manifest_id: Uuid::now_v7().to_string(),
            route_id: route_id.to_owned(),
            delivery_date: date,
            time_zone: zone.unwrap_or_else(|| "UTC".into()),
            issued_at: self.now()?,
            sequence: sequence as u64,
            kind,
            policy: self.code_policy,
            parcels,
            removals,
            resets,
            // Announce the key set while a rotation is under way (more than one key on disk).
            dispatch_keys: if self.announced_keys.len() > 1 { self.announced_keys.clone() } else { Vec::new() },
        };
        Ok(self.issuer.build_manifest(device, &spec)?)
    }

    /// Appends one signed delta to the journal of every device that holds `route_id`'s manifest
    /// for `date`. Returns how many devices get it (none: the next full manifest carries it).
    pub(super) fn push_delta(
        &self,
        tx: &Tx<'_>,
        route_id: &str,
        date: NaiveDate,
        parcels: Vec<IssuedParcel>,
        removals: Vec<String>,
        resets: Vec<String>,
    ) -> Result<usize> {
        let devices: Vec<String> = tx.all(
            "SELECT device_id FROM device WHERE route_id = ?1 AND manifest_date = ?2 AND manifest_seq > 0",
            params![route_id, date.to_string()],
        )?;
        for device_id in &devices {
            let (device, _, seq) = self.device(tx, device_id)?;
            let envelope = self.sign_for(
                tx,
                &device,
                route_id,
                date,
                seq + 1,
                ManifestKind::Delta,
                parcels.clone(),
                removals.clone(),
                resets.clone(),
            )?;
            tx.execute(
                "INSERT INTO delta (device_id, seq, envelope) VALUES (?1, ?2, ?3)",
                params![device_id, seq + 1, envelope],
            )?;
            tx.execute("UPDATE device SET manifest_seq = ?1 WHERE device_id = ?2", params![seq + 1, device_id])?;
        }
        Ok(devices.len())
    }

    /// The manifest entry of a departed parcel (None if it has not left the warehouse yet), with the
    /// latest code of each holder.
    pub(super) fn parcel_entry(&self, tx: &Tx<'_>, parcel_id: &str) -> Result<Option<IssuedParcel>> {
        let max_attempts = self.code_policy.max_attempts;
        let row: Option<EntryRow> = tx.opt(
            "SELECT barcode, stop_id, stop_seq, delivery_date, time_zone, address_hint, recipient_hint, needs_code
             FROM parcel WHERE parcel_id = ?1 AND departed_at_ms IS NOT NULL",
            params![parcel_id],
        )?;
        let Some((barcode, stop_id, stop_seq, date, tz, address_hint, recipient_hint, needs_code)) = row else {
            return Ok(None);
        };
        let (not_before, not_after) = stored_window(&date, &tz)?;
        let current = if needs_code { self.current_codes(tx, parcel_id)? } else { Vec::new() };
        let qr_minted_after = current.iter().filter_map(|c| Some((c.holder.clone(), c.reissued_at?))).collect();
        let codes: Vec<(Holder, Code)> = current.into_iter().map(|c| (c.holder, c.code)).collect();
        let attempt_epoch: u32 =
            tx.opt("SELECT attempt_epoch FROM parcel_epoch WHERE parcel_id = ?1", params![parcel_id])?.unwrap_or(0);
        let (receipts, highest): (u32, u32) = tx.one(
            "SELECT count(*), coalesce(max(attempts_used), 0) FROM wrong_attempt
             WHERE parcel_id = ?1 AND attempt_epoch = ?2",
            params![parcel_id, attempt_epoch],
        )?;
        let attempts_used = receipts.max(highest).min(u32::from(max_attempts));
        if codes.len() > 1 + usize::from(self.code_policy.max_delegates) {
            // Named under an earlier, looser policy: the phones would refuse the whole manifest.
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} has more delegates than the policy allows ({}); revoke some",
                self.code_policy.max_delegates
            )));
        }
        if needs_code && codes.is_empty() {
            // Never ship a parcel that needs a code without its tags: it would look like a parcel
            // that needs none.
            return Err(DispatchError::Conflict(format!("parcel {parcel_id} needs a code but none was issued")));
        }
        Ok(Some(IssuedParcel {
            parcel_id: parcel_id.to_owned(),
            barcode,
            stop: Stop { id: stop_id, sequence: stop_seq },
            address_hint,
            recipient_hint,
            codes,
            qr_minted_after,
            not_before,
            not_after,
            attempts_used,
            attempt_epoch,
        }))
    }
}

/// How many parcels a phone's full manifest (at most `MAX_MANIFEST_BYTES`, 16 MiB) holds when every
/// entry is as large as the API lets it be: ids and hints at their longest and made of `"` (two
/// bytes each in JSON), every holder the policy allows with the longest label, and the payload
/// base64-encoded in the envelope. Measured on a real entry, so it follows the wire format.
pub fn route_day_capacity(policy: &Policy) -> usize {
    let json = serde_json::to_vec(&widest_entry(policy)).map_or(usize::MAX, |b| b.len() + 1);
    // Base64 in the envelope: 4 bytes for every 3; 64 KiB kept for the manifest's own fields.
    let per_entry = json.div_ceil(3) * 4;
    ((doorstep_core::protocol::MAX_MANIFEST_BYTES - 64 * 1024) / per_entry).min(MAX_PARCELS_PER_ROUTE_DAY)
}

/// The largest manifest entry the API lets a parcel have under `policy`.
pub(super) fn widest_entry(policy: &Policy) -> doorstep_core::protocol::ParcelEntry {
    use doorstep_core::crypto::Tag;
    use doorstep_core::protocol::{Base64Bytes, HolderTag, MAX_HINT_LEN, MAX_ID_LEN, ParcelEntry, SALT_LEN};
    let widest = |n: usize| "\"".repeat(n);
    let holders = (0..=usize::from(policy.max_delegates)).map(|i| HolderTag {
        holder: if i == 0 { Holder::Customer } else { Holder::Delegate(widest(validate::MAX_LABEL_LEN)) },
        tag: Base64Bytes(vec![0xff; Tag::len_for(policy.tag_bits)]),
        qr_minted_after: Some(DateTime::<Utc>::MAX_UTC),
    });
    ParcelEntry {
        parcel_id: widest(MAX_ID_LEN),
        barcode: widest(MAX_ID_LEN),
        stop: Stop { id: widest(MAX_ID_LEN), sequence: u32::MAX },
        address_hint: widest(MAX_HINT_LEN),
        recipient_hint: widest(MAX_HINT_LEN),
        salt: Base64Bytes(vec![0xff; SALT_LEN]),
        tags: holders.collect(),
        not_before: DateTime::<Utc>::MAX_UTC,
        not_after: DateTime::<Utc>::MAX_UTC,
        attempts_used: u32::MAX,
        attempt_epoch: u32::MAX,
    }
}
