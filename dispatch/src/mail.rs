//! Customer e-mail: the code for a parcel that left the warehouse (and for a reissued code), and
//! the notice of what happened at the door (a hand-over, to whom and when, or a failed attempt).
//! A message is composed inside the transaction that issues the code and kept, sealed, in the
//! database's mail outbox (`store/mail.rs`); it is delivered after the commit and retried until it goes
//! out, so a code that exists always reaches the customer and a rolled-back one never does. By
//! default delivery writes an `.eml` file into the state folder's `outbox/`; with an SMTP relay
//! configured it is sent there (plain SMTP to a local relay; TLS is the relay's job).

use std::path::PathBuf;

use chrono::NaiveDate;
use lettre::address::{Address, Envelope};
use lettre::message::{Mailbox, header::ContentType};
use lettre::{FileTransport, Message, SmtpTransport, Transport};

use crate::error::{DispatchError, Result};

/// Where customer e-mail goes.
#[derive(Clone, Debug)]
pub enum MailConfig {
    /// `.eml` files in this folder.
    Folder(PathBuf),
    /// An SMTP relay at `host:port`.
    Smtp { host: String, port: u16 },
}

/// What a code e-mail says.
pub struct CodeMail<'a> {
    pub to: &'a str,
    pub parcel_id: &'a str,
    pub code: &'a str,
    pub delivery_date: NaiveDate,
    /// The customer's access token for the customer app (own code, delegates, QR token).
    pub customer_token: &'a str,
    /// The parcel's page (status, code, QR code, people you trust), when dispatch knows its
    /// public address.
    pub page: Option<&'a str>,
    pub reissued: bool,
    /// A return the driver collects: the code is a pickup code.
    pub pickup: bool,
    /// Only the addressee may take it (after an ID check): no one else may be given the code.
    pub addressee_only: bool,
}

/// The message, as the bytes that travel.
pub(crate) fn compose(mail: &CodeMail<'_>) -> Result<Vec<u8>> {
    let to: Mailbox =
        mail.to.parse().map_err(|_| DispatchError::BadRequest(format!("invalid e-mail {:?}", mail.to)))?;
    let (kind, opening, ask) = match (mail.pickup, mail.reissued) {
        (false, false) => ("Delivery", "Your parcel is on its way.", "at the door"),
        (true, false) => ("Pickup", "A driver will collect your return.", "when collecting it"),
        (pickup, true) => (
            if pickup { "Pickup" } else { "Delivery" },
            "Your code has changed. Codes of people you named before no\n\
             longer work: name them again in the app if you still want to.",
            if pickup { "when collecting it" } else { "at the door" },
        ),
    };
    let others = if mail.addressee_only {
        "Only you can take this parcel, with an ID (the driver notes its\n\
         kind, never its number): do not pass the code to anyone."
    } else {
        "If you cannot be there, you may pass the code to a person you\n\
         trust, or name them in the app so they get a code of their own."
    };
    // Lines stay under 76 characters so the message travels as plain 7-bit text.
    let body = format!(
        "{opening}\n\n\
         Parcel: {parcel}\n\
         {kind} code: {code}\n\n\
         The driver will ask for this code {ask}. It is valid until\n\
         the end of the delivery day, {date} (local time at the delivery\n\
         address).\n\n\
         {others}\n\n\
         Never tell this code to anyone by phone: the carrier will never\n\
         call you to ask for it.\n\n\
         Customer app access: {token}\n{page}",
        parcel = mail.parcel_id,
        code = mail.code,
        date = mail.delivery_date,
        token = mail.customer_token,
        page = mail
            .page
            .map_or(String::new(), |url| format!("\nYour parcel's page (code, QR code, people you trust):\n{url}\n")),
    );
    letter(&to, &format!("Your {} code for parcel {}", kind.to_lowercase(), mail.parcel_id), body)
}

/// What a notice of a hand-over or a failed attempt says.
pub struct DoorMail<'a> {
    pub to: &'a str,
    pub parcel_id: &'a str,
    pub what: Door<'a>,
    /// When, in the delivery address's local time (`2026-11-28 14:03 (Europe/Berlin)`).
    pub at: String,
}

/// What happened at the door.
pub enum Door<'a> {
    /// Handed over, to the holder whose code or QR token was shown (`None`: no code was needed).
    HandedOver(Option<&'a doorstep_core::protocol::Holder>),
    /// A return collected, from the holder whose code or QR token was shown.
    Collected(Option<&'a doorstep_core::protocol::Holder>),
    /// Not handed over (or, a `pickup`, not collected): why, in words, and whether the
    /// customer's code still opens the parcel.
    Failed { why: String, code_still_valid: bool, pickup: bool },
}

/// A notice of what happened at the door, as the bytes that travel. No code is in it.
pub(crate) fn compose_door(mail: &DoorMail<'_>) -> Result<Vec<u8>> {
    let to: Mailbox =
        mail.to.parse().map_err(|_| DispatchError::BadRequest(format!("invalid e-mail {:?}", mail.to)))?;
    let whom = |holder: &Option<&doorstep_core::protocol::Holder>| match holder {
        Some(doorstep_core::protocol::Holder::Customer) => "you (with your code)".to_owned(),
        Some(doorstep_core::protocol::Holder::Delegate(label)) => format!("{label:?}, whom you named"),
        None => "the person at the door (it needed no code)".to_owned(),
    };
    let (subject, body) = match &mail.what {
        Door::Collected(holder) => (
            format!("Your return {} was collected", mail.parcel_id),
            format!(
                "Your return {parcel} was collected from {whom}\non {at}.\n\n\
                 If that was not you or a person you named, tell us at once\n\
                 by replying to this e-mail: the collection will be looked into.\n",
                parcel = mail.parcel_id,
                whom = whom(holder),
                at = mail.at,
            ),
        ),
        Door::HandedOver(holder) => {
            let whom = whom(holder);
            (
                format!("Parcel {} was handed over", mail.parcel_id),
                format!(
                    "Parcel {parcel} was handed over to {whom}\non {at}.\n\n\
                     If that was not you or a person you named, tell us at once\n\
                     by replying to this e-mail: the hand-over will be looked into.\n",
                    parcel = mail.parcel_id,
                    at = mail.at,
                ),
            )
        }
        Door::Failed { why, code_still_valid, pickup } => (
            match pickup {
                true => format!("Collection attempt for your return {}", mail.parcel_id),
                false => format!("Delivery attempt for parcel {}", mail.parcel_id),
            },
            format!(
                "The driver could not {what} {parcel}\non {at}: {why}.\n{still}",
                what = if *pickup { "collect your return" } else { "hand over parcel" },
                parcel = mail.parcel_id,
                at = mail.at,
                still =
                    if *code_still_valid { "\nYour code stays valid until the end of the delivery day.\n" } else { "" },
            ),
        ),
    };
    letter(&to, &subject, body)
}

/// A plain-text message from dispatch.
fn letter(to: &Mailbox, subject: &str, body: String) -> Result<Vec<u8>> {
    let from: Mailbox = "doorstep dispatch <dispatch@doorstep.invalid>".parse().map_err(mail_err)?;
    let message = Message::builder().from(from).to(to.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
    // A line over 76 characters (a long page link) would be quoted-printable, whose soft breaks
    // cut the link for a reader of the raw text: such a body goes as 8bit, lines kept whole (an
    // ASCII body, each line under SMTP's 998 since the public URL is at most 200).
    let message = if body.lines().all(|l| l.len() <= 76) {
        message.body(body)
    } else {
        let crlf = body.replace('\n', "\r\n").into_bytes();
        message.body(lettre::message::Body::dangerous_pre_encoded(
            crlf,
            lettre::message::header::ContentTransferEncoding::EightBit,
        ))
    }
    .map_err(mail_err)?;
    Ok(message.formatted())
}

/// How long one message may take to reach the relay.
const SMTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a message did not go out, and whether trying again can help (a relay's 5xx, such as an
/// unknown mailbox, cannot).
#[derive(Debug)]
pub(crate) struct Undelivered {
    pub permanent: bool,
    pub reason: String,
}

/// Delivers a composed message to `to`.
pub(crate) fn deliver(config: &MailConfig, to: &str, message: &[u8]) -> std::result::Result<(), Undelivered> {
    let failed = |permanent: bool| move |e: &dyn std::fmt::Display| Undelivered { permanent, reason: e.to_string() };
    let from = Address::new("dispatch", "doorstep.invalid").map_err(|e| failed(true)(&e))?;
    let to: Address = to.parse().map_err(|e| failed(true)(&e))?;
    let envelope = Envelope::new(Some(from), vec![to]).map_err(|e| failed(true)(&e))?;
    match config {
        MailConfig::Folder(dir) => {
            // The e-mail holds a code and a customer link: owner-only, like the rest of the state.
            crate::sealing::private_folder(dir).map_err(|e| failed(false)(&e))?;
            let id = FileTransport::new(dir).send_raw(&envelope, message).map_err(|e| failed(false)(&e))?;
            crate::sealing::private_file(&dir.join(format!("{id}.eml"))).map_err(|e| failed(false)(&e))?;
        }
        MailConfig::Smtp { host, port } => {
            SmtpTransport::builder_dangerous(host)
                .port(*port)
                .timeout(Some(SMTP_TIMEOUT))
                .build()
                .send_raw(&envelope, message)
                .map_err(|e| failed(e.is_permanent())(&e))?;
        }
    }
    Ok(())
}

fn mail_err(e: impl std::fmt::Display) -> DispatchError {
    DispatchError::Io(std::io::Error::other(format!("e-mail: {e}")))
}
