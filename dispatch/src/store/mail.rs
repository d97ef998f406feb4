//! Customer e-mail, kept in the database until it is out: a code's message is queued (sealed)
//! in the transaction that issues the code, sent after the commit, and retried in the background.
//! Each message is claimed just before it travels, one at a time, so two senders never send it
//! twice, however slow the relay; one that fails waits its own backoff, and one the relay refused
//! for good is kept and not tried again.

use super::*;

/// How long one call of the mail sender goes on taking messages (`serve` calls it every 30 s): a
/// queue of a busy day's notices drains in rounds, in the order the messages fell due, so a code
/// e-mail waiting for its retry is never stuck behind notices queued after it.
const MAIL_ROUND: std::time::Duration = std::time::Duration::from_secs(25);

/// How long a sender's claim on a message lasts (a sender that died leaves it to the next): far
/// longer than one delivery may take (`mail::SMTP_TIMEOUT`).
const MAIL_CLAIM_MS: i64 = 5 * 60_000;

/// The wait before trying a message again after its `attempts`-th failure: 30 s doubling, at
/// most an hour.
fn mail_backoff_ms(attempts: i64) -> i64 {
    (30_000i64 << attempts.clamp(0, 7)).min(3_600_000)
}

/// A customer e-mail that did not go out (yet), for an operator: never its content, which holds
/// the code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Undelivered {
    pub id: i64,
    pub parcel_id: String,
    pub recipient: String,
    pub attempts: i64,
    /// What the relay (or the sender) said the last time.
    pub last_error: String,
    /// The relay refused it for good (an unknown mailbox): it is not tried again; correct the
    /// address and reissue the code.
    pub given_up: bool,
}

/// A queued message as claimed: id, recipient, the sealed message, earlier attempts.
type QueuedMail = (i64, String, Vec<u8>, i64);

pub(super) fn mail_aad(id: i64) -> String {
    format!("mail/{id}")
}

impl Dispatch {
    /// Tries the message just queued at once, after the commit that queued it (only that one, so
    /// a request never waits on the rest of the queue). A relay that is down or slow leaves it
    /// queued for the background sender; the code is issued either way.
    pub(super) fn mail_now(&self, id: i64) {
        if let Err(e) = self.send_mail(Some(id)) {
            eprintln!("customer e-mail stays queued: {e}");
        }
    }

    pub(super) fn mail_code(&self, tx: &Tx<'_>, parcel_id: &str, code: &str, reissued: bool) -> Result<i64> {
        let addressee_only = Self::rules_of(tx, parcel_id)?.addressee_only;
        let pickup = Self::task_of(tx, parcel_id)? == Task::Pickup;
        let (email, date, zone): (String, String, String) = tx.one(
            "SELECT customer_email, delivery_date, time_zone FROM parcel WHERE parcel_id = ?1",
            params![parcel_id],
        )?;
        // A fresh link for this parcel, valid to the end of its delivery day; kept as its hash.
        let token = crate::operators::hex(&random_bytes::<16>()?);
        let (_, expires) = stored_window(&date, &zone)?;
        tx.execute(
            "INSERT INTO customer_link (token_hash, parcel_id, expires_at_ms) VALUES (?1, ?2, ?3)",
            params![sha256(token.as_bytes()).to_vec(), parcel_id, expires.timestamp_millis()],
        )?;
        let message = crate::mail::compose(&CodeMail {
            to: &email,
            parcel_id,
            code,
            delivery_date: date.parse().map_err(|_| bad("stored date"))?,
            customer_token: &token,
            page: self.customer_link(parcel_id, &token).as_deref(),
            reissued,
            pickup,
            addressee_only,
        })?;
        // Kept sealed with the code it carries; delivered once this transaction commits.
        self.queue_mail(tx, parcel_id, &email, &message)
    }

    /// Queues `message` to `recipient` about `parcel_id`, sealed; it goes out once the
    /// transaction commits. Returns its id.
    pub(super) fn queue_mail(&self, tx: &Tx<'_>, parcel_id: &str, recipient: &str, message: &[u8]) -> Result<i64> {
        let id: i64 = tx.one(
            "INSERT INTO mail_outbox (parcel_id, recipient, message, created_at_ms, retry_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
            params![parcel_id, recipient, Vec::<u8>::new(), self.now_ms()?],
        )?;
        tx.execute(
            "UPDATE mail_outbox SET message = ?2 WHERE id = ?1",
            params![id, self.seal(tx, &mail_aad(id), message)?],
        )?;
        Ok(id)
    }

    /// Delivers customer e-mail that is due (for up to [`MAIL_ROUND`]; `serve` calls this every
    /// 30 s). Each message is claimed before it travels, so two senders never send it twice;
    /// one that fails waits its own backoff (30 s doubling, at most an hour), and one the relay
    /// refused for good (5xx) is kept, with the reason, and not tried again. Returns how many went
    /// out. The database is not locked while a message travels.
    pub fn send_pending_mail(&self) -> Result<usize> {
        self.send_mail(None)
    }

    fn send_mail(&self, only: Option<i64>) -> Result<usize> {
        if only.is_none() {
            // The notices uploads recorded become e-mail first (a round's worth).
            while self.compose_notices(100)? == 100 {}
        }
        let mut sent = 0;
        // One message at a time, each claimed just before it travels: a claim covers one
        // delivery (the relay's timeout is well inside it), never a batch a slow relay could
        // outlast while another sender takes the rest.
        let started = std::time::Instant::now();
        while started.elapsed() < MAIL_ROUND {
            let Some((id, recipient, sealed, attempts)) = self.claim_mail(only)? else {
                break;
            };
            let outcome = match self.kek.open(&mail_aad(id), &sealed) {
                Ok(message) => crate::mail::deliver(&self.mail, &recipient, &message),
                Err(e) => Err(crate::mail::Undelivered { permanent: false, reason: e.to_string() }),
            };
            match outcome {
                Ok(()) => {
                    self.run(|tx| Ok(tx.execute("DELETE FROM mail_outbox WHERE id = ?1", params![id])?))?;
                    sent += 1;
                }
                Err(failure) => {
                    let retry_at =
                        if failure.permanent { i64::MAX } else { self.now_ms()? + mail_backoff_ms(attempts) };
                    self.run(|tx| {
                        Ok(tx.execute(
                            "UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?2, retry_at_ms = ?3 WHERE id = ?1",
                            params![id, failure.reason, retry_at],
                        )?)
                    })?;
                }
            }
            if only.is_some() {
                break;
            }
        }
        Ok(sent)
    }

    /// Claims the next message due (`only`: that one, if due) for [`MAIL_CLAIM_MS`], in one
    /// transaction: of two senders claiming at once, one runs again and finds it claimed.
    fn claim_mail(&self, only: Option<i64>) -> Result<Option<QueuedMail>> {
        let now = self.now_ms()?;
        self.run(|tx| {
            let row: Option<QueuedMail> = tx.opt(
                "SELECT id, recipient, message, attempts FROM mail_outbox
                 WHERE retry_at_ms <= ?1 AND (CAST(?2 AS BIGINT) IS NULL OR id = ?2) ORDER BY retry_at_ms, id LIMIT 1",
                params![now, only],
            )?;
            if let Some((id, ..)) = &row {
                tx.execute("UPDATE mail_outbox SET retry_at_ms = ?2 WHERE id = ?1", params![id, now + MAIL_CLAIM_MS])?;
            }
            Ok(row)
        })
    }

    /// Operator: customer e-mail that failed at least once and is still kept, oldest first (at
    /// most 500), with why and whether it will be tried again.
    pub fn undelivered_mail(&self) -> Result<Vec<Undelivered>> {
        let rows: Vec<(i64, String, String, i64, Option<String>, i64)> = self.run(|tx| {
            Ok(tx.all(
                "SELECT id, parcel_id, recipient, attempts, last_error, retry_at_ms FROM mail_outbox
                  WHERE attempts > 0 ORDER BY id LIMIT 500",
                params![],
            )?)
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, parcel_id, recipient, attempts, last_error, retry_at_ms)| Undelivered {
                id,
                parcel_id,
                recipient,
                attempts,
                last_error: last_error.unwrap_or_default(),
                given_up: retry_at_ms == i64::MAX,
            })
            .collect())
    }

    /// Customer e-mail not delivered yet (notices not composed yet included).
    pub fn pending_mail(&self) -> Result<usize> {
        self.run(|tx| {
            Ok(tx.one("SELECT (SELECT count(*) FROM mail_outbox) + (SELECT count(*) FROM notice)", params![])?)
        })
    }
}
