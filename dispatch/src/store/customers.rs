//! The customer's side: everything a customer link opens. A link opens one parcel until the end
//! of its delivery day; each action checks the link in the same transaction as the change, so a
//! reissue cannot fall between them.

use doorstep_core::protocol::{FailureReason, HandoverMethod};

use super::*;

/// Where a parcel stands, as its customer sees it (held-for-review hand-overs are not told).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParcelStatus {
    /// Not left the warehouse yet: no code exists.
    Preparing,
    OnItsWay,
    /// Handed over to `holder` (`None`: no code was needed) at `at`.
    HandedOver {
        holder: Option<Holder>,
        method: Option<HandoverMethod>,
        at: DateTime<Utc>,
    },
    /// A pickup: the return was collected from `holder` (`None`: no code was needed) at `at`.
    Collected {
        holder: Option<Holder>,
        at: DateTime<Utc>,
    },
    AttemptFailed {
        reason: Option<FailureReason>,
        at: DateTime<Utc>,
    },
    /// Too many wrong codes: the carrier must reset it (the QR token still opens it).
    Locked,
    /// Its day ended before it was handed over.
    Expired,
}

/// Everything the customer's page shows.
#[derive(Clone, Debug)]
pub struct CustomerPage {
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub time_zone: String,
    pub status: ParcelStatus,
    /// The customer's code (`None` before departure).
    pub code: Option<String>,
    /// Named delegates and their codes.
    pub delegates: Vec<(String, String)>,
    /// Whether the parcel can still be handed over (the page then shows the code, the QR code
    /// and the delegates).
    pub open: bool,
    /// A QR token for the customer (one per code, kept sealed and shown again on every visit, so
    /// reloading the page does not use up the parcel's tokens); `None` when not `open`, or when
    /// the parcel's tokens are used up (the code still works).
    pub qr_token: Option<String>,
    /// What the driver asks at the door beyond the code (an ID, the opened parcel's inspection).
    pub rules: DoorRules,
    /// A delivery, or a return the driver collects (the code is then a pickup code).
    pub task: Task,
}

impl Dispatch {
    /// The parcel, if `token` is a live link for it (404 otherwise, expired links included: a link
    /// never learns whether another parcel exists).
    fn customers_parcel(&self, tx: &Tx<'_>, token: &str, parcel_id: &str) -> Result<()> {
        let opens: bool = tx.one("SELECT EXISTS (SELECT 1 FROM customer_link WHERE token_hash = ?1 AND parcel_id = ?2 AND expires_at_ms > ?3)", params![sha256(token.as_bytes()).to_vec(), parcel_id, self.now_ms()?])?;
        if opens { Ok(()) } else { Err(DispatchError::NotFound(format!("parcel {parcel_id}"))) }
    }

    /// Customer: their current code for their parcel.
    pub fn customer_code(&self, token: &str, parcel_id: &str) -> Result<Option<String>> {
        self.run(|tx| {
            self.customers_parcel(tx, token, parcel_id)?;
            let codes = self.codes_of(tx, parcel_id)?;
            Ok(codes.into_iter().find(|(h, _)| *h == Holder::Customer).map(|(_, c)| c.reveal().to_owned()))
        })
    }

    /// Customer: names a trusted person with their own code (returned, for the customer to pass on).
    pub fn customer_name_delegate(&self, token: &str, parcel_id: &str, label: &str) -> Result<String> {
        // The link is checked in the same transaction as the change, so a reissue cannot fall
        // between them.
        self.run(|tx| {
            self.customers_parcel(tx, token, parcel_id)?;
            let code = self.name_delegate_in(tx, parcel_id, label)?;
            Ok(code)
        })
    }

    /// Customer: revokes a named person's code; devices that carry the parcel drop its tag.
    pub fn customer_revoke_delegate(&self, token: &str, parcel_id: &str, label: &str) -> Result<()> {
        self.run(|tx| {
            self.customers_parcel(tx, token, parcel_id)?;
            Self::count_delegate_change(tx, parcel_id)?;
            let revoked = tx.execute(
                "UPDATE code SET revoked_at_ms = ?3 WHERE parcel_id = ?1 AND holder = ?2 AND revoked_at_ms IS NULL",
                params![parcel_id, Holder::Delegate(label.to_owned()).to_key(), self.now_ms()?],
            )?;
            if revoked == 0 {
                return Err(DispatchError::NotFound(format!("delegate {label:?}")));
            }
            let (route, date) = Self::route_and_date(tx, parcel_id)?;
            let entry: Vec<IssuedParcel> = self.parcel_entry(tx, parcel_id)?.into_iter().collect();
            if !entry.is_empty() {
                self.push_delta(tx, &route, date, entry, vec![], vec![])?;
            }
            Ok(())
        })
    }

    /// Customer: everything their parcel's page shows (404 unless `token` is a live link for it).
    pub fn customer_page(&self, token: &str, parcel_id: &str) -> Result<CustomerPage> {
        self.run(|tx| {
            self.customers_parcel(tx, token, parcel_id)?;
            let (date, zone, departed): (String, String, bool) = tx.one(
                "SELECT delivery_date, time_zone, departed_at_ms IS NOT NULL FROM parcel WHERE parcel_id = ?1",
                params![parcel_id],
            )?;
            let codes = self.current_codes(tx, parcel_id)?;
            let status = self.customer_status(tx, parcel_id, &date, &zone, departed)?;
            let rules = Self::rules_of(tx, parcel_id)?;
            let open =
                matches!(status, ParcelStatus::OnItsWay | ParcelStatus::Locked | ParcelStatus::AttemptFailed { .. });
            let qr_token = match open {
                true => match self.page_qr(tx, parcel_id, &codes) {
                    Ok(token) => Some(token),
                    Err(DispatchError::Conflict(_)) => None,
                    Err(e) => return Err(e),
                },
                false => None,
            };
            let mut page = CustomerPage {
                parcel_id: parcel_id.to_owned(),
                delivery_date: date.parse().map_err(|_| bad("stored date"))?,
                time_zone: zone,
                status,
                open,
                code: None,
                delegates: Vec::new(),
                qr_token,
                rules,
                task: Self::task_of(tx, parcel_id)?,
            };
            for c in codes {
                match c.holder {
                    Holder::Customer => page.code = Some(c.code.reveal().to_owned()),
                    Holder::Delegate(label) => page.delegates.push((label, c.code.reveal().to_owned())),
                }
            }
            Ok(page)
        })
    }

    /// The parcel's standing from its stored receipts (flagged ones are held for review and not
    /// told), its latest reset and its window.
    pub(super) fn customer_status(
        &self,
        tx: &Tx<'_>,
        parcel_id: &str,
        date: &str,
        zone: &str,
        departed: bool,
    ) -> Result<ParcelStatus> {
        let bodies: Vec<Vec<u8>> = tx.all(
            "SELECT r.body FROM receipt_parcel rp JOIN receipt r ON r.receipt_id = rp.receipt_id
              WHERE rp.parcel_id = ?1 AND r.status = 'accepted'",
            params![parcel_id],
        )?;
        let mut receipts: Vec<ReceiptBody> = bodies.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect();
        receipts.sort_by_key(|r| r.trusted_time);
        let reset_at: Option<i64> =
            tx.opt("SELECT reset_at_ms FROM parcel_epoch WHERE parcel_id = ?1", params![parcel_id])?;
        let mut status = if departed { ParcelStatus::OnItsWay } else { ParcelStatus::Preparing };
        // The hand-over standing: its receipt, the phone that made it, and what it says.
        let mut handed: Option<(Uuid, String, ParcelStatus)> = None;
        for r in &receipts {
            match r.event {
                ReceiptEvent::Delivered => {
                    let at = r.trusted_time;
                    handed = Some((
                        r.receipt_id,
                        r.device_id.clone(),
                        ParcelStatus::HandedOver { holder: r.holder.clone(), method: r.method, at },
                    ));
                }
                ReceiptEvent::Collected => {
                    let at = r.trusted_time;
                    let status = ParcelStatus::Collected { holder: r.holder.clone(), at };
                    handed = Some((r.receipt_id, r.device_id.clone(), status));
                }
                // Only a reversal from the phone that made the hand-over undoes it.
                ReceiptEvent::Reversed
                    if handed.as_ref().is_some_and(|(id, by, _)| Some(*id) == r.reverses && *by == r.device_id) =>
                {
                    handed = None;
                }
                ReceiptEvent::Failed => status = ParcelStatus::AttemptFailed { reason: r.reason, at: r.trusted_time },
                ReceiptEvent::LockedOut if reset_at.is_none_or(|ms| ms < r.trusted_time.timestamp_millis()) => {
                    status = ParcelStatus::Locked;
                }
                ReceiptEvent::Expired => status = ParcelStatus::Expired,
                _ => {}
            }
        }
        if let Some((_, _, handed)) = handed {
            return Ok(handed);
        }
        let (_, ends) = stored_window(date, zone)?;
        if self.now()? >= ends {
            return Ok(ParcelStatus::Expired);
        }
        Ok(status)
    }

    /// The customer's QR token for the page: the one kept for the current code, or a new one
    /// (counted against the parcel's tokens, like the app's), kept sealed.
    fn page_qr(&self, tx: &Tx<'_>, parcel_id: &str, codes: &[parcels::CurrentCode]) -> Result<String> {
        // A token minted before the customer's code was reissued is refused at the door.
        let code_since = codes
            .iter()
            .find(|c| c.holder == Holder::Customer)
            .and_then(|c| c.reissued_at)
            .map_or(0, |t| t.timestamp_millis());
        let aad = format!("page-qr/{parcel_id}");
        let kept: Option<(Vec<u8>, i64)> =
            tx.opt("SELECT token, minted_at_ms FROM page_qr WHERE parcel_id = ?1", params![parcel_id])?;
        if let Some((sealed, minted)) = kept
            && minted >= code_since
        {
            let token = self.kek.open(&aad, &sealed)?;
            return String::from_utf8(token).map_err(|_| bad("stored QR token"));
        }
        let token = self.mint_customer_qr(tx, parcel_id)?;
        tx.execute(
            "INSERT INTO page_qr (parcel_id, token, minted_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (parcel_id) DO UPDATE SET token = excluded.token, minted_at_ms = excluded.minted_at_ms",
            params![parcel_id, self.kek.seal(&aad, token.as_bytes())?, self.now_ms()?],
        )?;
        Ok(token)
    }

    /// Customer: a QR token for the customer app to show at the door.
    pub fn customer_qr(&self, token: &str, parcel_id: &str) -> Result<String> {
        // Link, count and mint in one transaction: a token is never minted for a link a reissue
        // has just ended.
        self.run(|tx| {
            self.customers_parcel(tx, token, parcel_id)?;
            self.mint_customer_qr(tx, parcel_id)
        })
    }

    /// A new QR token for the customer, counted: each token opens the parcel, locked or not, so a
    /// parcel yields at most [`MAX_QR_TOKENS_PER_HOLDER`] (`Conflict` after; the code still works).
    fn mint_customer_qr(&self, tx: &Tx<'_>, parcel_id: &str) -> Result<String> {
        let issued = tx.execute(
            "INSERT INTO qr_issued (parcel_id, holder, issued) VALUES (?1, 'customer', 1)
             ON CONFLICT (parcel_id, holder) DO UPDATE SET issued = qr_issued.issued + 1 WHERE qr_issued.issued < ?2",
            params![parcel_id, MAX_QR_TOKENS_PER_HOLDER],
        )?;
        if issued == 0 {
            return Err(DispatchError::Conflict(format!(
                "parcel {parcel_id} already has {MAX_QR_TOKENS_PER_HOLDER} QR tokens; use the code"
            )));
        }
        self.qr_token_in(tx, parcel_id, Holder::Customer)
    }
}
