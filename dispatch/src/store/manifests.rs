//! Manifests and deltas: a device's full manifest of its route-day (the departed parcels with
//! their current codes' tags, windows and attempts), and the signed deltas every change appends to
//! the journal of each device holding that route-day, numbered by the device's manifest sequence
//! (advanced in the transaction that signs, so two nodes never issue one number twice).
//!
//! A phone may hold several days (`device_day`: the days it said it held when it last fetched a
//! full manifest, and that manifest's day; a phone that says nothing, an earlier build that holds
//! one day, just that day). Full manifests go into the journal too, and a phone asking from
//! sequence `n` gets `n + 1` from the journal before anything new, whatever day it asks for: so
//! loading tomorrow never skips a change to today, and a full manifest lost on the way comes again.

use super::*;
use doorstep_core::protocol::{DoorRules, Task};
use parcels::CurrentCode;

impl Dispatch {
    /// The manifest a device should apply next: from its journal, `since + 1` when there is one;
    /// `None` when `since` is the latest and the device holds `date`; otherwise (no `since`, one
    /// the journal cannot continue, or a day the device does not hold yet) a new full manifest of
    /// `date`.
    pub fn manifest(&self, device_id: &str, date: NaiveDate, since: Option<u64>) -> Result<Option<Vec<u8>>> {
        self.next_manifest(device_id, None, date, since, None, &|| Ok(()))
    }

    /// [`Dispatch::manifest`] for a verified request naming the days the phone holds (`held`,
    /// `None` from an earlier build), asking `before_full` first whenever it is about to build a
    /// full manifest (the costly kind, from the whole route-day): the API draws the device's
    /// full-manifest budget there, whatever `since` the request named.
    /// The request is answered once: it is recorded in the transaction that builds the answer.
    pub fn manifest_or_refuse_full(
        &self,
        request: &VerifiedRequest,
        date: NaiveDate,
        since: Option<u64>,
        held: Option<&[NaiveDate]>,
        before_full: &dyn Fn() -> Result<()>,
    ) -> Result<Option<Vec<u8>>> {
        self.next_manifest(request.device_id(), Some(request), date, since, held, before_full)
    }

    fn next_manifest(
        &self,
        device_id: &str,
        request: Option<&VerifiedRequest>,
        date: NaiveDate,
        since: Option<u64>,
        held: Option<&[NaiveDate]>,
        before_full: &dyn Fn() -> Result<()>,
    ) -> Result<Option<Vec<u8>>> {
        // A copy of this request arriving while it is answered is refused before it costs a build.
        let _answering = request.map(|r| self.answering(r)).transpose()?;
        // The budget is drawn once per call, also when a transaction runs again.
        let budget_drawn = std::cell::Cell::new(false);
        let draw = || if budget_drawn.replace(true) { Ok(()) } else { before_full() };
        // A full manifest is built and signed (the costly part) with no transaction open and no
        // lock held, from what one read saw; the transaction below keeps it only if nothing it was
        // built from changed since (the device's sequence, the route-day's version), and builds
        // it again itself otherwise.
        let draft = match self.db.read(|tx| self.read_draft(tx, device_id, date, since))? {
            Some((device, spec, version, left_out)) => {
                draw()?;
                let sequence = spec.sequence;
                let ids = spec.parcels.iter().map(|p| p.parcel_id.clone()).collect();
                let envelope = self.issuer.build_manifest(&device, &spec)?;
                Some(Draft { route_id: spec.route_id, sequence, version, ids, left_out, envelope })
            }
            None => None,
        };
        self.db.run_locking(|tx| {
            if let Some(request) = request {
                self.answer_once(tx, request)?;
            }
            // The route-day's row before the device's, in the order `push_delta` takes them (a
            // device's route never changes): two transactions never wait for each other.
            let route_id: String = tx
                .opt("SELECT route_id FROM device WHERE device_id = ?1", params![device_id])?
                .ok_or_else(|| DispatchError::NotFound(format!("device {device_id}")))?;
            let version = self.claim_route_day(tx, &route_id, date)?;
            tx.lock("SELECT 1 FROM device WHERE device_id = ?1 FOR UPDATE", params![device_id])?;
            let (device, route_id, seq) = self.device(tx, device_id)?;
            match self.journal_answer(tx, device_id, seq, date, since)? {
                Some(JournalAnswer::Entry(next)) => {
                    return Ok(Some(tx.one(
                        "SELECT envelope FROM delta WHERE device_id = ?1 AND seq = ?2",
                        params![device_id, next],
                    )?));
                }
                Some(JournalAnswer::UpToDate) => return Ok(None),
                None => {}
            }
            draw()?;
            let envelope = match &draft {
                Some(d) if d.route_id == route_id && d.sequence == (seq + 1) as u64 && d.version == version => {
                    self.record_left_out(tx, &d.left_out)?;
                    self.record_sent(tx, device_id, ManifestKind::Full, &d.ids)?;
                    d.envelope.clone()
                }
                _ => {
                    let (parcels, left_out) = self.route_day_parcels(tx, &route_id, date)?;
                    self.record_left_out(tx, &left_out)?;
                    let spec = self.spec(tx, &route_id, date, seq + 1, ManifestKind::Full, parcels, vec![], vec![])?;
                    self.sign_for(tx, &device, spec)?
                }
            };
            tx.execute(
                "INSERT INTO delta (device_id, seq, envelope) VALUES (?1, ?2, ?3)",
                params![device_id, seq + 1, envelope],
            )?;
            tx.execute(
                "UPDATE device SET manifest_seq = ?1, manifest_date = ?2 WHERE device_id = ?3",
                params![seq + 1, date.to_string(), device_id],
            )?;
            // From now on the device is journalled the changes of this day and of the days it says
            // it holds (a phone skips a delta for a day it does not hold).
            tx.execute("DELETE FROM device_day WHERE device_id = ?1", params![device_id])?;
            let days = held.unwrap_or_default().iter().chain(std::iter::once(&date));
            for day in days {
                tx.execute(
                    "INSERT INTO device_day (device_id, delivery_date) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![device_id, day.to_string()],
                )?;
            }
            Ok(Some(envelope))
        })
    }

    /// What a full manifest for the device would be built from, read in one go (the route-day's
    /// version first, so a change that the parcels read misses has a later version); `None` when
    /// the journal answers the request instead.
    fn read_draft(
        &self,
        tx: &Tx<'_>,
        device_id: &str,
        date: NaiveDate,
        since: Option<u64>,
    ) -> Result<Option<(EnrolledDevice, ManifestSpec, i64, LeftOut)>> {
        let (device, route_id, seq) = self.device(tx, device_id)?;
        if self.journal_answer(tx, device_id, seq, date, since)?.is_some() {
            return Ok(None);
        }
        let version: i64 = tx
            .opt(
                "SELECT version FROM route_day WHERE route_id = ?1 AND delivery_date = ?2",
                params![route_id, date.to_string()],
            )?
            .unwrap_or(0);
        let (parcels, left_out) = self.route_day_parcels(tx, &route_id, date)?;
        let spec = self.spec(tx, &route_id, date, seq + 1, ManifestKind::Full, parcels, vec![], vec![])?;
        Ok(Some((device, spec, version, left_out)))
    }

    /// What the journal answers a phone asking from sequence `since`: `n + 1` when it holds it,
    /// "up to date" when `since` is the latest and the phone holds `date`; `None` when a new full
    /// manifest is due (no `since`, one the journal cannot continue, or a day the phone does not
    /// hold yet). Whatever day the phone asks for, what it has not applied yet comes first, in
    /// order (a change to another day it holds, a full manifest it lost).
    fn journal_answer(
        &self,
        tx: &Tx<'_>,
        device_id: &str,
        seq: i64,
        date: NaiveDate,
        since: Option<u64>,
    ) -> Result<Option<JournalAnswer>> {
        let Some(n) = since else { return Ok(None) };
        // A `since` beyond the journal (even past i64) finds none: a full manifest follows.
        let next = i64::try_from(n).ok().and_then(|n| n.checked_add(1)).unwrap_or(i64::MAX);
        if next <= seq {
            let journalled: bool = tx.one(
                "SELECT EXISTS (SELECT 1 FROM delta WHERE device_id = ?1 AND seq = ?2)",
                params![device_id, next],
            )?;
            if journalled {
                return Ok(Some(JournalAnswer::Entry(next)));
            }
        }
        let holds: bool = tx.one(
            "SELECT EXISTS (SELECT 1 FROM device_day WHERE device_id = ?1 AND delivery_date = ?2)",
            params![device_id, date.to_string()],
        )?;
        Ok((next == seq + 1 && holds).then_some(JournalAnswer::UpToDate))
    }

    /// The route-day's version, taken for this transaction: the row is written (its count of full
    /// manifests), so a change journalling a delta to the route-day waits for this transaction
    /// and then sees the device among those holding the day, or, on PostgreSQL, runs again when
    /// its snapshot began before this commit; one that wrote first makes this read its version.
    fn claim_route_day(&self, tx: &Tx<'_>, route_id: &str, date: NaiveDate) -> Result<i64> {
        Ok(tx.one(
            "INSERT INTO route_day (route_id, delivery_date, version, full_manifests) VALUES (?1, ?2, 0, 1)
             ON CONFLICT (route_id, delivery_date) DO UPDATE SET full_manifests = route_day.full_manifests + 1
             RETURNING version",
            params![route_id, date.to_string()],
        )?)
    }

    /// The route-day's departed parcels for a full manifest. One parcel that cannot be put into a
    /// manifest never breaks the route: it is left out, with the reason (see `record_left_out`).
    fn route_day_parcels(&self, tx: &Tx<'_>, route_id: &str, date: NaiveDate) -> Result<(Vec<IssuedParcel>, LeftOut)> {
        let mut parcels = Vec::new();
        let mut left_out = Vec::new();
        for (id, entry) in self.entries(tx, Departed::RouteDay(route_id, date))? {
            match entry {
                Ok(entry) => parcels.push(entry),
                Err(e @ (DispatchError::Conflict(_) | DispatchError::BadRequest(_) | DispatchError::Core(_))) => {
                    left_out.push((id, format!("left out of the manifest: {e}")));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((parcels, left_out))
    }

    /// Records in each parcel's history why a kept manifest left it out (once per reason).
    fn record_left_out(&self, tx: &Tx<'_>, left_out: &LeftOut) -> Result<()> {
        for (id, why) in left_out {
            let known: bool = tx.one(
                "SELECT EXISTS (SELECT 1 FROM operator_action WHERE parcel_id = ?1 AND detail = ?2)",
                params![id, why],
            )?;
            if !known {
                audit(tx, self.now_ms()?, &Operator::dispatch(), "left_out", Some(id), Some(why))?;
            }
        }
        Ok(())
    }

    /// A signed full manifest of the departed parcels of the device's route for `date`.
    pub fn full_manifest(&self, device_id: &str, date: NaiveDate) -> Result<Vec<u8>> {
        self.manifest(device_id, date, None)?.ok_or_else(|| bad("no manifest"))
    }

    /// Signs `spec` for the device, recording that it may make receipts for its parcels.
    pub(super) fn sign_for(&self, tx: &Tx<'_>, device: &EnrolledDevice, spec: ManifestSpec) -> Result<Vec<u8>> {
        let ids: Vec<String> = spec.parcels.iter().map(|p| p.parcel_id.clone()).collect();
        self.record_sent(tx, &device.device_id, spec.kind, &ids)?;
        Ok(self.issuer.build_manifest(device, &spec)?)
    }

    /// Records that the device may make receipts for these parcels from now on. A full manifest
    /// again mostly repeats what the phone was sent: only what is new is written.
    fn record_sent(&self, tx: &Tx<'_>, device_id: &str, kind: ManifestKind, ids: &[String]) -> Result<()> {
        let held: std::collections::HashSet<String> = match kind {
            ManifestKind::Full => tx
                .all::<String>(
                    "SELECT parcel_id FROM parcel_sent WHERE device_id = ?1 AND withdrawn_at_ms IS NULL",
                    params![device_id],
                )?
                .into_iter()
                .collect(),
            _ => Default::default(),
        };
        let new: Vec<&String> = ids.iter().filter(|id| !held.contains(*id)).collect();
        // In statements of 256, 128, … rows: few round trips, and few statement texts to prepare.
        for chunk in db::shapes(&new) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("(?1, ?{})", i + 2)).collect();
            let mut bound: Vec<&dyn db::ToParam> = vec![&device_id];
            bound.extend(chunk.iter().map(|id| *id as &dyn db::ToParam));
            tx.execute(
                &format!(
                    "INSERT INTO parcel_sent (device_id, parcel_id) VALUES {}
                     ON CONFLICT (device_id, parcel_id) DO UPDATE SET withdrawn_at_ms = NULL
                     WHERE parcel_sent.withdrawn_at_ms IS NOT NULL",
                    values.join(", ")
                ),
                &bound,
            )?;
        }
        Ok(())
    }

    /// Everything a manifest of the route-day says, before its tags are computed and it is signed.
    #[allow(clippy::too_many_arguments)]
    fn spec(
        &self,
        tx: &Tx<'_>,
        route_id: &str,
        date: NaiveDate,
        sequence: i64,
        kind: ManifestKind,
        parcels: Vec<IssuedParcel>,
        removals: Vec<String>,
        resets: Vec<String>,
    ) -> Result<ManifestSpec> {
        let zone: Option<String> = tx.opt(
            "SELECT time_zone FROM parcel WHERE route_id = ?1 AND delivery_date = ?2 LIMIT 1",
            params![route_id, date.to_string()],
        )?;
        Ok(ManifestSpec {
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
        })
    }

    /// Appends one signed delta to the journal of every device that holds `route_id`'s manifest
    /// for `date`. Returns how many devices get it (none: the next full manifest carries it).
    /// Every change to what the route-day's manifest says comes through here.
    pub(super) fn push_delta(
        &self,
        tx: &Tx<'_>,
        route_id: &str,
        date: NaiveDate,
        parcels: Vec<IssuedParcel>,
        removals: Vec<String>,
        resets: Vec<String>,
    ) -> Result<usize> {
        // The route-day's version first, before the devices holding the day are read: a full
        // manifest read before this change is not kept (see `claim_route_day`), and one kept
        // before it is among those devices.
        tx.execute(
            "INSERT INTO route_day (route_id, delivery_date, version, full_manifests) VALUES (?1, ?2, 1, 0)
             ON CONFLICT (route_id, delivery_date) DO UPDATE SET version = route_day.version + 1",
            params![route_id, date.to_string()],
        )?;
        let devices: Vec<String> = tx.all(
            "SELECT d.device_id FROM device d JOIN device_day h ON h.device_id = d.device_id
              WHERE d.route_id = ?1 AND h.delivery_date = ?2 AND d.manifest_seq > 0 ORDER BY d.device_id",
            params![route_id, date.to_string()],
        )?;
        for device_id in &devices {
            let (device, _, seq) = self.device(tx, device_id)?;
            let spec = self.spec(
                tx,
                route_id,
                date,
                seq + 1,
                ManifestKind::Delta,
                parcels.clone(),
                removals.clone(),
                resets.clone(),
            )?;
            let envelope = self.sign_for(tx, &device, spec)?;
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
        self.entries(tx, Departed::Parcel(parcel_id))?.pop().map(|(_, entry)| entry).transpose()
    }

    /// The manifest entries of the departed parcels `which` names, in stop order, each with its
    /// own verdict (a parcel that cannot be put into a manifest does not stop the others). Three
    /// queries whatever the number of parcels (the parcels with their epochs, their codes, their
    /// wrong-code counts), and each day's window worked out once.
    fn entries(&self, tx: &Tx<'_>, which: Departed<'_>) -> Result<Vec<(String, Result<IssuedParcel>)>> {
        let (parcel_filter, code_filter, key, date) = match which {
            Departed::Parcel(id) => ("p.parcel_id = ?1", "c.parcel_id = ?1", id, None),
            Departed::RouteDay(route, date) => (
                "p.route_id = ?1 AND p.delivery_date = ?2",
                "c.parcel_id IN (SELECT parcel_id FROM parcel
                                 WHERE route_id = ?1 AND delivery_date = ?2 AND departed_at_ms IS NOT NULL)",
                route,
                Some(date.to_string()),
            ),
        };
        let params: Vec<&dyn db::ToParam> =
            std::iter::once(&key as &dyn db::ToParam).chain(date.as_ref().map(|d| d as &dyn db::ToParam)).collect();
        let params = params.as_slice();
        let rows = tx.rows(
            &format!(
                "SELECT p.parcel_id, p.barcode, p.stop_id, p.stop_seq, p.delivery_date, p.time_zone, p.address_hint,
                        p.recipient_hint, p.needs_code, coalesce(e.attempt_epoch, 0), coalesce(r.rules, 0),
                        k.parcel_id IS NOT NULL
                   FROM parcel p LEFT JOIN parcel_epoch e ON e.parcel_id = p.parcel_id
                                 LEFT JOIN parcel_rules r ON r.parcel_id = p.parcel_id
                                 LEFT JOIN pickup k ON k.parcel_id = p.parcel_id
                  WHERE p.departed_at_ms IS NOT NULL AND {parcel_filter}
                  ORDER BY p.stop_seq, p.parcel_id"
            ),
            params,
        )?;
        let mut codes = self.current_codes_where(tx, code_filter, params)?;
        // Wrong-code receipts by parcel and epoch: few parcels have any.
        let attempts: std::collections::HashMap<(String, u32), (u32, u32)> = tx
            .all::<(String, u32, u32, u32)>(
                &format!(
                    "SELECT w.parcel_id, w.attempt_epoch, count(*), max(w.attempts_used) FROM wrong_attempt w
                      WHERE w.parcel_id IN (SELECT p.parcel_id FROM parcel p WHERE {parcel_filter})
                      GROUP BY w.parcel_id, w.attempt_epoch"
                ),
                params,
            )?
            .into_iter()
            .map(|(parcel, epoch, n, highest)| ((parcel, epoch), (n, highest)))
            .collect();
        let mut windows = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let parcel_id: String = row.get(0)?;
            let (date, zone): (String, String) = (row.get(4)?, row.get(5)?);
            let window = match windows.get(&(date.clone(), zone.clone())) {
                Some(w) => Ok(*w),
                None => stored_window(&date, &zone).inspect(|w| {
                    windows.insert((date, zone), *w);
                }),
            };
            let needs_code: bool = row.get(8)?;
            let current = if needs_code { codes.remove(&parcel_id).unwrap_or_default() } else { Vec::new() };
            let attempt_epoch: u32 = row.get(9)?;
            let rules = DoorRules::from_bits(row.get(10)?);
            let task = if row.get::<bool>(11)? { Task::Pickup } else { Task::Delivery };
            let (receipts, highest) = attempts.get(&(parcel_id.clone(), attempt_epoch)).copied().unwrap_or((0, 0));
            let entry = window.and_then(|(not_before, not_after)| {
                let parcel = IssuedParcel {
                    parcel_id: parcel_id.clone(),
                    barcode: row.get(1)?,
                    stop: Stop { id: row.get(2)?, sequence: row.get(3)? },
                    address_hint: row.get(6)?,
                    recipient_hint: row.get(7)?,
                    codes: Vec::new(),
                    qr_minted_after: Vec::new(),
                    not_before,
                    not_after,
                    attempts_used: receipts.max(highest).min(u32::from(self.code_policy.max_attempts)),
                    attempt_epoch,
                    rules,
                    task,
                };
                self.with_codes(parcel, needs_code, current)
            });
            out.push((parcel_id, entry));
        }
        Ok(out)
    }

    /// A parcel's entry with its current codes, unless the policy or a missing code keeps it out.
    fn with_codes(
        &self,
        mut parcel: IssuedParcel,
        needs_code: bool,
        current: Vec<CurrentCode>,
    ) -> Result<IssuedParcel> {
        let parcel_id = &parcel.parcel_id;
        if current.len() > 1 + usize::from(self.code_policy.max_delegates) {
            // Named under an earlier, looser policy: the phones would refuse the whole manifest.
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} has more delegates than the policy allows ({}); revoke some",
                self.code_policy.max_delegates
            )));
        }
        if needs_code && current.is_empty() {
            // Never ship a parcel that needs a code without its tags: it would look like a parcel
            // that needs none.
            return Err(DispatchError::Conflict(format!("parcel {parcel_id} needs a code but none was issued")));
        }
        parcel.qr_minted_after = current.iter().filter_map(|c| Some((c.holder.clone(), c.reissued_at?))).collect();
        parcel.codes = current.into_iter().map(|c| (c.holder, c.code)).collect();
        Ok(parcel)
    }
}

/// A full manifest built and signed outside the transaction that may keep it, with what it was
/// built from.
struct Draft {
    route_id: String,
    sequence: u64,
    /// The route-day's version when its parcels were read.
    version: i64,
    /// The parcels it carries, and those it left out with the reason.
    ids: Vec<String>,
    left_out: LeftOut,
    envelope: Vec<u8>,
}

/// Parcels a full manifest left out, each with the reason.
type LeftOut = Vec<(String, String)>;

/// What the journal holds for a phone asking from a sequence.
enum JournalAnswer {
    /// The entry with this sequence, the next the phone applies.
    Entry(i64),
    /// Nothing: the phone holds the latest.
    UpToDate,
}

/// Which departed parcels [`Dispatch::entries`] reads.
enum Departed<'a> {
    Parcel(&'a str),
    RouteDay(&'a str, NaiveDate),
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
        rules: DoorRules { addressee_only: true, open_box: true },
        task: Task::Pickup,
    }
}
