//! Operator credentials and the audit trail of what operators did.
//!
//! An operator key is `dso_<operator id>_<secret>` (hex): 32 random bytes of secret, shown once by
//! `doorstep operator add` and kept only as its SHA-256 (a 256-bit random secret needs no slow
//! hash), compared in constant time. A revoked key never opens anything again. Every operator
//! action is recorded, with who did it, in the same transaction as the action itself; a parcel's
//! history shows the actions on it.
//!
//! Operator authentication is on as soon as one key exists. With none, the operator routes are
//! open, which `serve` allows on a loopback address only (the embedded default for developers).
//!
//! The console (`/console`) logs in with a key once and then holds a session: a random token in
//! its cookie, kept here only as its SHA-256, ending after [`CONSOLE_SESSION_HOURS`], on logout,
//! or when the key is revoked. The key itself never sits in a browser.

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::error::{DispatchError, Result};
use crate::store::{Dispatch, Tx, params};
use doorstep_core::crypto::{random_bytes, sha256};

const KEY_PREFIX: &str = "dso_";

/// How long a console login lasts.
pub const CONSOLE_SESSION_HOURS: i64 = 12;

/// Who performs an operator action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operator {
    pub operator_id: String,
    pub name: String,
}

impl Operator {
    /// Dispatch itself, for what it records on its own (a parcel left out of a manifest).
    pub fn dispatch() -> Operator {
        Operator { operator_id: "dispatch".into(), name: "dispatch itself".into() }
    }

    /// Whoever runs `doorstep operator ...` on the host (access to the state folder is the credential).
    pub fn host() -> Operator {
        Operator { operator_id: "host".into(), name: "doorstep operator, on the host".into() }
    }

    /// The actor of operator routes on a loopback server with no operator keys.
    pub fn loopback() -> Operator {
        Operator { operator_id: "loopback".into(), name: "local caller (no operator keys yet)".into() }
    }
}

/// One recorded operator action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Action {
    pub at_ms: i64,
    pub operator_id: String,
    pub action: String,
    pub detail: Option<String>,
}

/// An operator key as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OperatorEntry {
    pub operator_id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl Dispatch {
    /// Creates an operator key; returns it (the only time its secret exists outside the caller).
    pub fn add_operator(&self, name: &str) -> Result<(Operator, String)> {
        let name = name.trim();
        crate::validate::hint("operator name", name)?;
        if name.is_empty() || name.len() > 64 {
            return Err(DispatchError::BadRequest("operator name must be 1..=64 printable characters".into()));
        }
        let id = hex(&random_bytes::<6>()?);
        let secret = hex(&random_bytes::<32>()?);
        self.run(|tx| {
            let now = self.now_ms()?;
            tx.execute(
                "INSERT INTO operator (operator_id, name, secret_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id, name, sha256(secret.as_bytes()).to_vec(), now],
            )?;
            audit(tx, now, &Operator::host(), "operator_add", None, Some(&format!("{id} {name}")))?;
            Ok((Operator { operator_id: id.clone(), name: name.to_owned() }, format!("{KEY_PREFIX}{id}_{secret}")))
        })
    }

    /// Revokes an operator key at once; `NotFound` for an unknown or already revoked one.
    pub fn revoke_operator(&self, operator_id: &str) -> Result<()> {
        self.run(|tx| {
            let now = self.now_ms()?;
            let changed = tx.execute(
                "UPDATE operator SET revoked_at_ms = ?2 WHERE operator_id = ?1 AND revoked_at_ms IS NULL",
                params![operator_id, now],
            )?;
            if changed == 0 {
                return Err(DispatchError::NotFound(format!("active operator {operator_id}")));
            }
            audit(tx, now, &Operator::host(), "operator_revoke", None, Some(operator_id))?;
            Ok(())
        })
    }

    /// The actions recorded on no parcel (operator keys, enrolment tokens), oldest first.
    pub fn service_actions(&self) -> Result<Vec<Action>> {
        self.actions(
            "SELECT at_ms, operator_id, action, detail FROM operator_action WHERE parcel_id IS NULL ORDER BY id",
            params![],
        )
    }

    pub fn operators(&self) -> Result<Vec<OperatorEntry>> {
        let rows: Vec<(String, String, i64, Option<i64>)> = self.run(|tx| {
            Ok(tx.all(
                "SELECT operator_id, name, created_at_ms, revoked_at_ms FROM operator ORDER BY created_at_ms, operator_id",
                params![],
            )?)
        })?;
        Ok(rows
            .into_iter()
            .map(|(operator_id, name, created_at_ms, revoked_at_ms)| OperatorEntry {
                operator_id,
                name,
                created_at_ms,
                revoked_at_ms,
            })
            .collect())
    }

    /// Console: a new session for the operator whose key this is (`Unauthorized` as for the API);
    /// returns the session token for the cookie.
    pub fn open_console_session(&self, key: &str) -> Result<String> {
        let operator = self.authenticate_operator(Some(key), false)?;
        let token = hex(&random_bytes::<32>()?);
        self.run(|tx| {
            let now = self.now_ms()?;
            tx.execute("DELETE FROM console_session WHERE expires_at_ms <= ?1", params![now])?;
            tx.execute(
                "INSERT INTO console_session (token_hash, operator_id, expires_at_ms) VALUES (?1, ?2, ?3)",
                params![
                    sha256(token.as_bytes()).to_vec(),
                    operator.operator_id,
                    now + CONSOLE_SESSION_HOURS * 3_600_000
                ],
            )?;
            audit(tx, now, &operator, "console_login", None, None)?;
            Ok(token.clone())
        })
    }

    /// Console: the operator a live session belongs to (`Unauthorized` for none, an ended one, or
    /// one whose key was revoked since).
    pub fn console_operator(&self, session: Option<&str>) -> Result<Operator> {
        let denied = || DispatchError::Unauthorized("log in to the console with an operator key".into());
        let session = session.ok_or_else(denied)?;
        let row: Option<(String, String)> = self.run(|tx| {
            Ok(tx.opt(
                "SELECT o.operator_id, o.name FROM console_session s JOIN operator o ON o.operator_id = s.operator_id
                  WHERE s.token_hash = ?1 AND s.expires_at_ms > ?2 AND o.revoked_at_ms IS NULL",
                params![sha256(session.as_bytes()).to_vec(), self.now_ms()?],
            )?)
        })?;
        let (operator_id, name) = row.ok_or_else(denied)?;
        Ok(Operator { operator_id, name })
    }

    /// Console: ends a session (logging out); nothing for an unknown one.
    pub fn close_console_session(&self, session: &str) -> Result<()> {
        self.run(|tx| {
            tx.execute(
                "DELETE FROM console_session WHERE token_hash = ?1",
                params![sha256(session.as_bytes()).to_vec()],
            )?;
            Ok(())
        })
    }

    /// Whether operator routes need a key: as soon as one was ever created (revoking every key
    /// does not reopen them).
    pub fn operator_auth_on(&self) -> Result<bool> {
        self.run(|tx| Ok(tx.one("SELECT EXISTS (SELECT 1 FROM operator)", params![])?))
    }

    /// The operator a presented key belongs to. Any failure (no key, malformed, unknown id, wrong
    /// secret, revoked) is the same `Unauthorized`, so nothing tells which part was wrong.
    ///
    /// With no key yet, the routes are open only to a direct local caller (`direct_local`: the
    /// peer is a loopback address and the request came through no proxy and from no web page), so
    /// a TLS proxy on the same host, or a browser, opens nothing.
    pub fn authenticate_operator(&self, presented: Option<&str>, direct_local: bool) -> Result<Operator> {
        let denied =
            || DispatchError::Unauthorized("an operator key is required (Authorization: Bearer dso_...)".into());
        if !self.operator_auth_on()? {
            return if direct_local { Ok(Operator::loopback()) } else { Err(denied()) };
        }
        let (id, secret) =
            presented.and_then(|k| k.strip_prefix(KEY_PREFIX)).and_then(|k| k.split_once('_')).ok_or_else(denied)?;
        let row: Option<(String, Vec<u8>, Option<i64>)> = self.run(|tx| {
            Ok(tx.opt("SELECT name, secret_hash, revoked_at_ms FROM operator WHERE operator_id = ?1", params![id])?)
        })?;
        // Hash and compare even for an unknown id, so timing does not tell ids apart.
        let (name, stored, revoked) = row.unwrap_or_else(|| (String::new(), vec![0; 32], Some(0)));
        let matches: bool = sha256(secret.as_bytes()).as_slice().ct_eq(stored.as_slice()).into();
        if !matches || revoked.is_some() {
            return Err(denied());
        }
        Ok(Operator { operator_id: id.to_owned(), name })
    }

    /// The operator actions recorded on a parcel, oldest first.
    pub fn parcel_actions(&self, parcel_id: &str) -> Result<Vec<Action>> {
        self.actions(
            "SELECT at_ms, operator_id, action, detail FROM operator_action WHERE parcel_id = ?1 ORDER BY id",
            params![parcel_id],
        )
    }

    fn actions(&self, sql: &str, params: &[&dyn crate::store::db::ToParam]) -> Result<Vec<Action>> {
        let rows: Vec<(i64, String, String, Option<String>)> = self.run(|tx| Ok(tx.all(sql, params)?))?;
        Ok(rows
            .into_iter()
            .map(|(at_ms, operator_id, action, detail)| Action { at_ms, operator_id, action, detail })
            .collect())
    }
}

/// Records an operator action inside the transaction that performs it.
pub(crate) fn audit(
    tx: &Tx<'_>,
    at_ms: i64,
    by: &Operator,
    action: &str,
    parcel_id: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO operator_action (at_ms, operator_id, action, parcel_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at_ms, by.operator_id, action, parcel_id, detail],
    )?;
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
