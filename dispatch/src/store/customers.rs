//! The customer's side: everything a customer link opens. A link opens one parcel until the end
//! of its delivery day; each action checks the link in the same transaction as the change, so a
//! reissue cannot fall between them.

use super::*;

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

    /// Customer: a QR token for the customer app to show at the door.
    pub fn customer_qr(&self, token: &str, parcel_id: &str) -> Result<String> {
        // Link, count and mint in one transaction: a token is never minted for a link a reissue
        // has just ended.
        self.run(|tx| {
            self.customers_parcel(tx, token, parcel_id)?;
            // Each token opens the parcel, locked or not: a parcel yields a bounded number.
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
            let qr = self.qr_token_in(tx, parcel_id, Holder::Customer)?;
            Ok(qr)
        })
    }
}
