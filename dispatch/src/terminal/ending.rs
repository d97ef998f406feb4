//! How a `doorstep device` command ends, as an exit code a script can act on, and an error that
//! says what happened and what to do. The codes are part of the command's interface (the table
//! in docs/dispatch.md): a wrong code at the door is not a crash, an unreachable dispatch is not
//! bad input, and none of them loses a receipt (the outbox keeps them until dispatch
//! acknowledges).

use std::fmt;

use doorstep_core::CoreError;
use serde_json::Value;

/// The ways a command ends, each with its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Handed over, recorded, synced, uploaded, listed: 0.
    Done,
    /// Something unforeseen: a damaged device folder, a failing disk: 1.
    Failed,
    /// The command's input is wrong (as for clap's usage errors): 2.
    BadInput,
    /// Refused at the door: wrong code, locked, expired, not yet valid, already handed over,
    /// unknown parcel, a QR token that does not open the parcel: 3.
    RefusedAtDoor,
    /// Dispatch could not be reached (connection, name, TLS, timeout): 4.
    Unreachable,
    /// Dispatch answered with an error: 5.
    DispatchRefused,
}

impl Ending {
    pub fn code(self) -> u8 {
        match self {
            Ending::Done => 0,
            Ending::Failed => 1,
            Ending::BadInput => 2,
            Ending::RefusedAtDoor => 3,
            Ending::Unreachable => 4,
            Ending::DispatchRefused => 5,
        }
    }

    /// How a command that ran ends: a hand-over the door refused is [`Ending::RefusedAtDoor`].
    pub fn of(result: &Value) -> Ending {
        match result.get("outcome").and_then(Value::as_str) {
            None | Some("accepted") => Ending::Done,
            // A code given for parcels that need none: `verify BARCODE` without one.
            Some("no_code_needed") => Ending::BadInput,
            Some(_) => Ending::RefusedAtDoor,
        }
    }
}

/// A command that could not do what it was asked: what happened, what to do, and how it ends.
#[derive(Debug)]
pub struct TerminalError {
    pub ending: Ending,
    pub message: String,
}

impl TerminalError {
    pub fn new(ending: Ending, message: impl Into<String>) -> TerminalError {
        TerminalError { ending, message: message.into() }
    }

    /// Dispatch answered `status` with `body`: what it means for the person at the terminal.
    pub fn from_dispatch(status: u16, body: &[u8]) -> TerminalError {
        let said = String::from_utf8_lossy(body);
        let said = serde_json::from_str::<Value>(&said)
            .ok()
            .and_then(|v| v.get("detail").or_else(|| v.get("error")).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| said.chars().take(300).collect());
        let todo = match status {
            401 | 403 => {
                "is this device enrolled with this dispatch (--dispatch)? A revoked or re-installed \
                          device enrols again with a new token"
            }
            404 => "check the id or date; `doorstep device status` shows what this device holds",
            409 => "the request conflicts with dispatch's state; sync, then try again",
            413 | 400 | 422 => "the request was refused as it is; nothing was changed",
            429 => "too many requests: wait a minute and try again (receipts stay in the outbox)",
            500..=599 => "dispatch failed; try again later (receipts stay in the outbox)",
            _ => "nothing was changed on this device",
        };
        TerminalError::new(Ending::DispatchRefused, format!("dispatch answered HTTP {status}: {said}; {todo}"))
    }
}

impl fmt::Display for TerminalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TerminalError {}

impl From<CoreError> for TerminalError {
    fn from(e: CoreError) -> TerminalError {
        let ending = match &e {
            CoreError::MalformedCode | CoreError::InvalidInput { .. } | CoreError::DoorCheckMissing { .. } => {
                Ending::BadInput
            }
            CoreError::NotEnrolled | CoreError::AlreadyEnrolled => Ending::BadInput,
            CoreError::UnknownParcel(_) | CoreError::InvalidState { .. } | CoreError::QrRejected(_) => {
                Ending::RefusedAtDoor
            }
            CoreError::ManifestRejected(_) | CoreError::AckRejected(_) | CoreError::EnrolmentRejected(_) => {
                Ending::DispatchRefused
            }
            _ => Ending::Failed,
        };
        let message = match &e {
            CoreError::NotEnrolled => {
                "this device is not enrolled: run `doorstep device enrol --token TOKEN` first".into()
            }
            CoreError::AlreadyEnrolled => {
                "this device is already enrolled; use another --dir for another device".into()
            }
            CoreError::UnknownParcel(barcode) => {
                format!("no parcel {barcode} on this device: check the barcode, or run `doorstep device sync`")
            }
            CoreError::DoorCheckMissing { .. } => format!(
                "{e} (`doorstep device verify … --id-checked passport`, or `--inspected` / `--reservation TEXT`)"
            ),
            other => other.to_string(),
        };
        TerminalError::new(ending, message)
    }
}

impl From<ureq::Error> for TerminalError {
    fn from(e: ureq::Error) -> TerminalError {
        TerminalError::new(
            Ending::Unreachable,
            format!("cannot reach dispatch ({e}); check --dispatch and the network; nothing was lost"),
        )
    }
}

impl From<std::io::Error> for TerminalError {
    fn from(e: std::io::Error) -> TerminalError {
        TerminalError::new(Ending::Failed, format!("the device folder: {e}"))
    }
}

impl From<crate::DispatchError> for TerminalError {
    fn from(e: crate::DispatchError) -> TerminalError {
        TerminalError::new(Ending::Failed, e.to_string())
    }
}
