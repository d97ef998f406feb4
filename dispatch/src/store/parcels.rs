//! Parcels and their codes: import, departure (the customer's code is issued and its e-mail
//! queued in one transaction), delegates, QR tokens, and the operator's actions on a parcel
//! (reset, reissue, reassign), each capped and audited. Codes are stored sealed; a reissued code
//! replaces the earlier one and dispatch keeps both, so proofs made with the old one still verify.

use super::*;

/// One version of a holder's code: parcel, holder, sealed code, issued and revoked (ms).
type CodeVersion = (String, String, Vec<u8>, i64, Option<i64>);

impl Dispatch {
    /// Imports order lines (all or nothing); returns how many need a code under the policy.
    pub fn import_parcels(&self, parcels: &[NewParcel], by: &Operator) -> Result<usize> {
        self.run(|tx| {
            let now = self.now_ms()?;
            let mut coded = 0;
            for p in parcels {
                validate::new_parcel(p)?;
                delivery_window(p.delivery_date, &p.time_zone)?;
                let on_route: i64 = tx.one(
                    "SELECT count(*) FROM parcel WHERE route_id = ?1 AND delivery_date = ?2",
                    params![p.route_id, p.delivery_date.to_string()],
                )?;
                self.room_on_route(on_route, &p.route_id, p.delivery_date)?;
                let needs_code = self.policy.needs_code(p);
                coded += usize::from(needs_code);
                tx.execute(
                    "INSERT INTO parcel (parcel_id, barcode, route_id, stop_id, stop_seq, delivery_date, time_zone,
                                     value_cents, category, customer_email, address_hint, recipient_hint, needs_code)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        p.parcel_id,
                        p.barcode,
                        p.route_id,
                        p.stop_id,
                        p.stop_sequence,
                        p.delivery_date.to_string(),
                        p.time_zone,
                        p.declared_value_cents,
                        p.category,
                        p.customer_email,
                        p.address_hint,
                        p.recipient_hint,
                        needs_code
                    ],
                )
                .map_err(|e| match e.is_unique_violation() {
                    true => DispatchError::Conflict(format!("parcel {} or its barcode already exists", p.parcel_id)),
                    false => e.into(),
                })?;
                let rules = self.policy.rules(p);
                if !rules.is_none() {
                    tx.execute(
                        "INSERT INTO parcel_rules (parcel_id, rules) VALUES (?1, ?2)",
                        params![p.parcel_id, rules.bits()],
                    )?;
                }
                if p.task == Task::Pickup {
                    tx.execute("INSERT INTO pickup (parcel_id) VALUES (?1)", params![p.parcel_id])?;
                }
                if let Some(sscc) = &p.sscc {
                    let digits = validate::sscc_digits(sscc);
                    tx.execute(
                        "INSERT INTO parcel_gs1 (parcel_id, sscc, digits) VALUES (?1, ?2, ?3)",
                        params![p.parcel_id, sscc, digits],
                    )
                    .map_err(|e| match e.is_unique_violation() {
                        true => DispatchError::Conflict(format!(
                            "parcel {}: SSCC {sscc} already names another parcel",
                            p.parcel_id
                        )),
                        false => e.into(),
                    })?;
                }
                audit(tx, now, by, "import", Some(&p.parcel_id), Some(&format!("route {}", p.route_id)))?;
            }
            Ok(coded)
        })
    }

    /// "Left the warehouse": the parcel goes on the van; a high-value parcel gets its customer code,
    /// and phones already holding the route's manifest get it as a delta. Returns the code (to
    /// e-mail to the customer), or None when no code is needed. Idempotent.
    pub fn parcel_departed(&self, parcel_id: &str, by: &Operator) -> Result<Option<String>> {
        let (code, queued) = self.run(|tx| {
            let (needs_code, already): (bool, bool) = tx
                .opt(
                    "SELECT needs_code, departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1",
                    params![parcel_id],
                )?
                .ok_or_else(|| DispatchError::NotFound(format!("parcel {parcel_id}")))?;
            tx.execute(
                "UPDATE parcel SET departed_at_ms = coalesce(departed_at_ms, ?2) WHERE parcel_id = ?1",
                params![parcel_id, self.now_ms()?],
            )?;
            let mut queued = None;
            let code = if needs_code {
                let existing = self.codes_of(tx, parcel_id)?.into_iter().find(|(h, _)| *h == Holder::Customer);
                match existing {
                    Some((_, c)) => Some(c.reveal().to_owned()),
                    None => {
                        let code = self.store_code(tx, parcel_id, &Holder::Customer)?;
                        // Queued in the same transaction: the code exists only with its e-mail.
                        queued = Some(self.mail_code(tx, parcel_id, code.reveal(), false)?);
                        Some(code.reveal().to_owned())
                    }
                }
            } else {
                None
            };
            if !already {
                audit(tx, self.now_ms()?, by, "departed", Some(parcel_id), None)?;
                let (route, date) = Self::route_and_date(tx, parcel_id)?;
                let entry: Vec<IssuedParcel> = self.parcel_entry(tx, parcel_id)?.into_iter().collect();
                self.push_delta(tx, &route, date, entry, vec![], vec![])?;
            }
            Ok((code, queued))
        })?;
        if let Some(mail) = queued {
            self.mail_now(mail);
        }
        Ok(code)
    }

    /// Names a trusted person who may receive the parcel with their own code; returns that code
    /// (for the customer to pass on). Only for parcels that need a code.
    pub fn name_delegate(&self, parcel_id: &str, label: &str) -> Result<String> {
        self.run(|tx| {
            let code = self.name_delegate_in(tx, parcel_id, label)?;
            Ok(code)
        })
    }

    /// The parcel's rules at the door (none for a parcel without a row of them).
    pub(super) fn rules_of(tx: &Tx<'_>, parcel_id: &str) -> Result<DoorRules> {
        let bits: Option<i64> = tx.opt("SELECT rules FROM parcel_rules WHERE parcel_id = ?1", params![parcel_id])?;
        Ok(DoorRules::from_bits(bits.unwrap_or(0)))
    }

    /// Whether the parcel is a delivery or a pickup (a row in `pickup`).
    pub(super) fn task_of(tx: &Tx<'_>, parcel_id: &str) -> Result<Task> {
        let pickup: bool = tx.one("SELECT EXISTS (SELECT 1 FROM pickup WHERE parcel_id = ?1)", params![parcel_id])?;
        Ok(if pickup { Task::Pickup } else { Task::Delivery })
    }

    pub(super) fn name_delegate_in(&self, tx: &Tx<'_>, parcel_id: &str, label: &str) -> Result<String> {
        validate::label(label)?;
        if Self::rules_of(tx, parcel_id)?.addressee_only {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} is handed over to the addressee only, after an ID check: it cannot have a delegate"
            )));
        }
        Self::count_delegate_change(tx, parcel_id)?;
        // The policy's cap: each delegate is another valid code at the door. Renaming a delegate
        // already named replaces its code and does not count twice.
        let holder = Holder::Delegate(label.to_owned()).to_key();
        let others: u32 = tx.one(
            "SELECT count(DISTINCT holder) FROM code
             WHERE parcel_id = ?1 AND holder LIKE 'delegate:%' AND holder != ?2 AND revoked_at_ms IS NULL",
            params![parcel_id, holder],
        )?;
        if others >= u32::from(self.code_policy.max_delegates) {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} already has {others} delegates, the most the policy allows"
            )));
        }
        let code = self.issue_code(tx, parcel_id, &Holder::Delegate(label.to_owned()))?;
        Ok(code.reveal().to_owned())
    }

    /// Refuses the change once a parcel's delegates changed [`MAX_DELEGATE_CHANGES_PER_PARCEL`]
    /// times (named or revoked); counts it otherwise.
    pub(super) fn count_delegate_change(tx: &Tx<'_>, parcel_id: &str) -> Result<()> {
        let counted = tx.execute(
            "INSERT INTO delegate_changes (parcel_id, changes) VALUES (?1, 1)
             ON CONFLICT (parcel_id) DO UPDATE SET changes = delegate_changes.changes + 1 WHERE delegate_changes.changes < ?2",
            params![parcel_id, MAX_DELEGATE_CHANGES_PER_PARCEL],
        )?;
        if counted == 0 {
            return Err(DispatchError::Conflict(format!(
                "the delegates of parcel {parcel_id} changed {MAX_DELEGATE_CHANGES_PER_PARCEL} times, the most allowed; \
                 the delegates named now keep their codes"
            )));
        }
        Ok(())
    }

    /// Issues a new code for `holder` on a parcel that needs one, replacing the holder's earlier
    /// code on the devices that carry the parcel (a delta). Dispatch keeps the earlier code, so
    /// proofs made with it still verify.
    pub(super) fn issue_code(&self, tx: &Tx<'_>, parcel_id: &str, holder: &Holder) -> Result<Code> {
        let (route, date) = Self::route_and_date(tx, parcel_id)?;
        let needs_code: bool = tx.one("SELECT needs_code FROM parcel WHERE parcel_id = ?1", params![parcel_id])?;
        if !needs_code {
            return Err(DispatchError::Conflict(format!("parcel {parcel_id} needs no code")));
        }
        let code = self.store_code(tx, parcel_id, holder)?;
        let entry: Vec<IssuedParcel> = self.parcel_entry(tx, parcel_id)?.into_iter().collect();
        if !entry.is_empty() {
            self.push_delta(tx, &route, date, entry, vec![], vec![])?;
        }
        Ok(code)
    }

    /// A fresh code for `holder`, stored sealed (never in the clear at rest).
    pub(super) fn store_code(&self, tx: &Tx<'_>, parcel_id: &str, holder: &Holder) -> Result<Code> {
        let code = Code::generate()?;
        let (key, issued) = (holder.to_key(), self.now_ms()?);
        let sealed = self.seal(tx, &code_aad(parcel_id, &key, issued), code.reveal().as_bytes())?;
        tx.execute(
            "INSERT INTO code (parcel_id, holder, code, issued_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![parcel_id, key, sealed, issued],
        )?;
        Ok(code)
    }

    /// A QR token for the customer app: signed by dispatch, for one parcel and holder, valid for
    /// the parcel's delivery day.
    pub fn qr_token(&self, parcel_id: &str, holder: Holder) -> Result<String> {
        self.run(|tx| self.qr_token_in(tx, parcel_id, holder.clone()))
    }

    pub(super) fn qr_token_in(&self, tx: &Tx<'_>, parcel_id: &str, holder: Holder) -> Result<String> {
        let (date, zone): (String, String) = tx
            .opt("SELECT delivery_date, time_zone FROM parcel WHERE parcel_id = ?1", params![parcel_id])?
            .ok_or_else(|| DispatchError::NotFound(format!("parcel {parcel_id}")))?;
        let (not_before, not_after) = stored_window(&date, &zone)?;
        Ok(self.issuer.sign_qr(&doorstep_core::protocol::QrToken {
            parcel_id: parcel_id.to_owned(),
            holder,
            not_before,
            not_after,
            nonce: doorstep_core::protocol::Base64Bytes(random_bytes::<16>()?.to_vec()),
            issued_at: Some(self.now()?),
        })?)
    }

    /// The current code of each holder of a parcel (the customer's own view; tests).
    pub fn codes(&self, parcel_id: &str) -> Result<Vec<(Holder, String)>> {
        let codes = self.run(|tx| self.codes_of(tx, parcel_id))?;
        Ok(codes.into_iter().map(|(h, c)| (h, c.reveal().to_owned())).collect())
    }

    /// `Conflict` unless the parcel left the warehouse (its code was not e-mailed before that).
    pub(super) fn departed(tx: &Tx<'_>, parcel_id: &str) -> Result<()> {
        let departed: bool =
            tx.one("SELECT departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1", params![parcel_id])?;
        if departed {
            Ok(())
        } else {
            Err(DispatchError::Conflict(format!("parcel {parcel_id} has not left the warehouse yet")))
        }
    }

    pub(super) fn route_and_date(tx: &Tx<'_>, parcel_id: &str) -> Result<(String, NaiveDate)> {
        let (route, date): (String, String) = tx
            .opt("SELECT route_id, delivery_date FROM parcel WHERE parcel_id = ?1", params![parcel_id])?
            .ok_or_else(|| DispatchError::NotFound(format!("parcel {parcel_id}")))?;
        Ok((route, date.parse().map_err(|_| bad("stored date"))?))
    }

    /// Operator: resets a parcel's lockout on the devices that carry it (as a delta).
    pub fn reset_lockout(&self, parcel_id: &str, by: &Operator) -> Result<usize> {
        self.run(|tx| {
        let (route, date) = Self::route_and_date(tx, parcel_id)?;
        Self::departed(tx, parcel_id)?;
        let resets: u32 = tx.one("SELECT count(*) FROM operator_action WHERE parcel_id = ?1 AND action = 'reset'", params![parcel_id])?;
        if resets >= self.max_resets_per_parcel {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} was reset {resets} times, the most allowed; hand it back to the depot"
            )));
        }
        // A new attempt epoch: receipts from the old one (even those uploaded later) no longer count,
        // and the parcel's entry carries the epoch to every phone it reaches, also one that
        // missed this delta. The reset list is for phones of protocol 1.0, which know no epochs.
        tx.execute(
            "INSERT INTO parcel_epoch (parcel_id, attempt_epoch, reset_at_ms) VALUES (?1, 1, ?2)
             ON CONFLICT (parcel_id) DO UPDATE SET attempt_epoch = parcel_epoch.attempt_epoch + 1, reset_at_ms = excluded.reset_at_ms",
            params![parcel_id, self.now_ms()?],
        )?;
        let entry: Vec<IssuedParcel> = self.parcel_entry(tx, parcel_id)?.into_iter().collect();
        let n = self.push_delta(tx, &route, date, entry, vec![], vec![parcel_id.to_owned()])?;
        audit(tx, self.now_ms()?, by, "reset", Some(parcel_id), None)?;
        Ok(n)
        })
    }

    /// Operator: issues a new customer code (the old one stops working on the devices); returns it
    /// for the customer's e-mail.
    pub fn reissue_code(&self, parcel_id: &str, by: &Operator) -> Result<String> {
        let (code, mail) = self.run(|tx| {
        Self::route_and_date(tx, parcel_id)?;
        Self::departed(tx, parcel_id)?;
        let reissues: u32 = tx.one("SELECT count(*) FROM operator_action WHERE parcel_id = ?1 AND action = 'reissue'", params![parcel_id])?;
        if reissues >= MAX_REISSUES_PER_PARCEL {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} was reissued {reissues} times, the most allowed; hand it back to the depot"
            )));
        }
        // A reissue answers a leaked code or e-mail: the earlier links stop opening the parcel,
        // and the new e-mail carries the only live one. Whoever held the leak may have named
        // delegates with it, so every delegate's code ends too (the delta below carries the
        // parcel without them); the customer names again whom they still trust.
        tx.execute("DELETE FROM customer_link WHERE parcel_id = ?1", params![parcel_id])?;
        tx.execute(
            "UPDATE code SET revoked_at_ms = ?2 WHERE parcel_id = ?1 AND holder LIKE 'delegate:%' AND revoked_at_ms IS NULL",
            params![parcel_id, self.now_ms()?],
        )?;
        // What the leaked link spent (delegate changes, QR tokens) is given back to the customer:
        // the reissue cap bounds how often.
        tx.execute("DELETE FROM delegate_changes WHERE parcel_id = ?1", params![parcel_id])?;
        tx.execute("DELETE FROM qr_issued WHERE parcel_id = ?1", params![parcel_id])?;
        // The customer page's kept token was minted for the old code: the next visit mints anew.
        tx.execute("DELETE FROM page_qr WHERE parcel_id = ?1", params![parcel_id])?;
        audit(tx, self.now_ms()?, by, "reissue", Some(parcel_id), None)?;
        let code = self.issue_code(tx, parcel_id, &Holder::Customer)?;
        let mail = self.mail_code(tx, parcel_id, code.reveal(), true)?;
        Ok((code, mail))
        })?;
        self.mail_now(mail);
        Ok(code.reveal().to_owned())
    }

    /// Operator: moves a parcel to another route: it leaves the old route's devices and joins the
    /// new route's (both as deltas).
    /// Refuses one more parcel on a route-day that already holds `on_route`, once a phone's
    /// manifest could no longer carry them all (409, naming the route).
    pub(super) fn room_on_route(&self, on_route: i64, route_id: &str, date: NaiveDate) -> Result<()> {
        let capacity = route_day_capacity(&self.code_policy);
        if on_route >= capacity as i64 {
            return Err(DispatchError::Conflict(format!(
                "route {route_id} already has {capacity} parcels on {date}: the most one phone's manifest holds \
                 under this code policy; split the route"
            )));
        }
        Ok(())
    }

    pub fn reassign(&self, parcel_id: &str, new_route: &str, by: &Operator) -> Result<()> {
        validate::id("route_id", new_route)?;
        self.run(|tx| {
            let (old_route, date) = Self::route_and_date(tx, parcel_id)?;
            if old_route == new_route {
                return Ok(());
            }
            let on_new_route: i64 = tx.one(
                "SELECT count(*) FROM parcel WHERE route_id = ?1 AND delivery_date = ?2",
                params![new_route, date.to_string()],
            )?;
            self.room_on_route(on_new_route, new_route, date)?;
            tx.execute("UPDATE parcel SET route_id = ?1 WHERE parcel_id = ?2", params![new_route, parcel_id])?;
            tx.execute(
                "UPDATE parcel_sent SET withdrawn_at_ms = ?3
             WHERE parcel_id = ?1 AND withdrawn_at_ms IS NULL
               AND device_id IN (SELECT device_id FROM device WHERE route_id = ?2)",
                params![parcel_id, old_route, self.now_ms()?],
            )?;
            audit(
                tx,
                self.now_ms()?,
                by,
                "reassign",
                Some(parcel_id),
                Some(&format!("route {old_route} to {new_route}")),
            )?;
            self.push_delta(tx, &old_route, date, vec![], vec![parcel_id.to_owned()], vec![])?;
            let entry: Vec<IssuedParcel> = self.parcel_entry(tx, parcel_id)?.into_iter().collect();
            if !entry.is_empty() {
                self.push_delta(tx, new_route, date, entry, vec![], vec![])?;
            }
            Ok(())
        })
    }

    /// The latest code of each holder of a parcel (a reissued code replaces the earlier one).
    pub(super) fn codes_of(&self, tx: &Tx<'_>, parcel_id: &str) -> Result<Vec<(Holder, Code)>> {
        Ok(self.current_codes(tx, parcel_id)?.into_iter().map(|c| (c.holder, c.code)).collect())
    }

    /// Each holder's current code, with its issue instant when it replaced an earlier one.
    pub(super) fn current_codes(&self, tx: &Tx<'_>, parcel_id: &str) -> Result<Vec<CurrentCode>> {
        let mut codes = self.current_codes_where(tx, "c.parcel_id = ?1", params![parcel_id])?;
        Ok(codes.remove(parcel_id).unwrap_or_default())
    }

    /// The current codes of every parcel `filter` (SQL on `code c`) selects, by parcel: one query
    /// for a whole route-day.
    pub(super) fn current_codes_where(
        &self,
        tx: &Tx<'_>,
        filter: &str,
        params: &[&dyn db::ToParam],
    ) -> Result<std::collections::HashMap<String, Vec<CurrentCode>>> {
        // Every version, oldest first; the newest of each holder is current unless revoked (plain
        // rows and the grouping here: cheaper than asking the database to rank them).
        let rows: Vec<CodeVersion> = tx.all(
            &format!(
                "SELECT c.parcel_id, c.holder, c.code, c.issued_at_ms, c.revoked_at_ms FROM code c
                  WHERE {filter} ORDER BY c.parcel_id, c.holder, c.id"
            ),
            params,
        )?;
        let mut codes: std::collections::HashMap<String, Vec<CurrentCode>> = std::collections::HashMap::new();
        let mut rows = rows.into_iter().peekable();
        while let Some((parcel_id, h, mut sealed, mut issued, mut revoked)) = rows.next() {
            let mut versions = 1;
            while let Some((_, _, newer, at, until)) = rows.next_if(|(p, holder, ..)| *p == parcel_id && *holder == h) {
                (sealed, issued, revoked, versions) = (newer, at, until, versions + 1);
            }
            if revoked.is_some() {
                continue;
            }
            let code = open_code(&self.kek, &parcel_id, &h, issued, &sealed)?;
            let reissued_at = match versions > 1 {
                true => Some(DateTime::from_timestamp_millis(issued).ok_or_else(|| bad("stored issue instant"))?),
                false => None,
            };
            let holder = Holder::from_key(&h).ok_or_else(|| bad("stored holder"))?;
            codes.entry(parcel_id).or_default().push(CurrentCode { holder, code, reissued_at });
        }
        Ok(codes)
    }
}

/// A holder's current code; `reissued_at` when it replaced an earlier one (QR tokens minted
/// before that are refused at the door).
pub(super) struct CurrentCode {
    pub(super) holder: Holder,
    pub(super) code: Code,
    pub(super) reissued_at: Option<DateTime<Utc>>,
}
