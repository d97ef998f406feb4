//! Validation at the door of the API: every field an operator or a customer posts is checked
//! against the limits the phones enforce on a manifest (`doorstep_core::protocol::is_valid_id`,
//! `MAX_HINT_LEN`), for control characters and for invisible ones (zero-width, bidirectional
//! overrides, line separators: they make a label or hint read differently on the driver's screen),
//! and e-mail addresses for the syntax the code e-mail is sent with (lettre's `Mailbox`), before
//! anything is stored. A bad field is a 400 that names it; nothing one row or one customer sends
//! can later break a route's manifest or its e-mail.

use doorstep_core::protocol::{MAX_HINT_LEN, MAX_ID_LEN, is_valid_id};

use crate::error::{DispatchError, Result};
use crate::store::NewParcel;

/// Longest delegate label a customer may give.
pub const MAX_LABEL_LEN: usize = 64;

fn bad(what: &str, why: String) -> DispatchError {
    DispatchError::BadRequest(format!("{what}: {why}"))
}

/// Characters that change how text around them reads without showing themselves: soft hyphen,
/// Arabic letter mark, Mongolian vowel separator, zero-width and joiner characters, directional
/// marks, embeddings, overrides and isolates, line and paragraph separators, invisible operators,
/// the byte-order mark, interlinear annotations and tag characters (Unicode's format and
/// separator characters outside plain spaces).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

fn plain(value: &str) -> bool {
    !value.chars().any(|c| c.is_control() || invisible(c))
}

/// An id field (parcel, barcode, stop, route).
pub fn id(what: &str, value: &str) -> Result<()> {
    if is_valid_id(value) && plain(value) {
        Ok(())
    } else {
        Err(bad(what, format!("must be 1..={MAX_ID_LEN} bytes without control or invisible characters")))
    }
}

/// A free-text field shown on the phone (address or recipient hint): may be empty.
pub fn hint(what: &str, value: &str) -> Result<()> {
    if value.len() <= MAX_HINT_LEN && plain(value) {
        Ok(())
    } else {
        Err(bad(what, format!("must be at most {MAX_HINT_LEN} bytes without control or invisible characters")))
    }
}

/// The label a customer gives a delegate: no spaces around it either, so " Anna" is not a
/// second Anna.
pub fn label(value: &str) -> Result<()> {
    if !value.is_empty() && value.trim() == value && value.len() <= MAX_LABEL_LEN && plain(value) {
        Ok(())
    } else {
        Err(bad(
            "delegate label",
            format!("must be 1..={MAX_LABEL_LEN} bytes, no spaces around it, without control or invisible characters"),
        ))
    }
}

/// An e-mail address the code mail can go to.
pub fn email(what: &str, value: &str) -> Result<()> {
    // The address as the code e-mail is addressed (a `Mailbox`), which is stricter than a bare
    // `Address` (no IP literals, no quoted local parts): an address that imports must also depart.
    if value.len() <= 254
        && value.parse::<lettre::Address>().is_ok()
        && value.parse::<lettre::message::Mailbox>().is_ok()
    {
        Ok(())
    } else {
        Err(bad(what, "is not a valid e-mail address".into()))
    }
}

/// One imported order line, every field.
pub fn new_parcel(p: &NewParcel) -> Result<()> {
    let at = |field: &str| format!("parcel {:?}: {field}", p.parcel_id.chars().take(MAX_ID_LEN).collect::<String>());
    id(&at("parcel_id"), &p.parcel_id)?;
    id(&at("barcode"), &p.barcode)?;
    id(&at("route_id"), &p.route_id)?;
    id(&at("stop_id"), &p.stop_id)?;
    hint(&at("address_hint"), &p.address_hint)?;
    hint(&at("recipient_hint"), &p.recipient_hint)?;
    id(&at("category"), &p.category).or_else(|e| if p.category.is_empty() { Ok(()) } else { Err(e) })?;
    email(&at("customer_email"), &p.customer_email)?;
    if p.declared_value_cents < 0 {
        return Err(bad(&at("declared_value_cents"), "must not be negative".into()));
    }
    if p.stop_sequence == 0 {
        return Err(bad(&at("stop_sequence"), "must be 1 or more".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_overlong_ids_and_bad_addresses_are_refused_by_name() {
        assert!(id("route_id", "R1").is_ok());
        for bad_id in ["", "a\0b", "a\r\nb", &"x".repeat(129)] {
            assert!(id("route_id", bad_id).unwrap_err().to_string().contains("route_id"));
        }
        assert!(hint("address_hint", "").is_ok());
        assert!(hint("address_hint", &"x".repeat(257)).is_err());
        assert!(label("Anna").is_ok());
        assert!(label(" ").is_err() && label("a\nb").is_err() && label(&"x".repeat(65)).is_err());
        assert!(email("e", "a@example.test").is_ok());
        for bad_mail in ["nobody", "a@b\r\nBcc: x@y.z", "a b@c.d", "@c.d", "a@[::1]", "\"a b\"@example.com"] {
            assert!(email("e", bad_mail).is_err(), "{bad_mail:?}");
        }
    }

    /// The review put a right-to-left override, a line separator and a zero-width space into
    /// barcodes, hints and labels, and named " Anna" beside "Anna".
    #[test]
    fn invisible_characters_and_padded_labels_are_refused() {
        for sneaky in ["B\u{202E}XYZ", "12 Elm\u{2028}St", "An\u{200B}na", "\u{FEFF}x"] {
            assert!(id("barcode", sneaky).is_err(), "{sneaky:?}");
            assert!(hint("address_hint", sneaky).is_err(), "{sneaky:?}");
            assert!(label(sneaky).is_err(), "{sneaky:?}");
        }
        assert!(label(" Anna").is_err() && label("Anna ").is_err());
        assert!(
            label("Anna Maria").is_ok() && hint("h", "Straße 5, Hinterhaus").is_ok() && id("b", "Ünïcode-1").is_ok()
        );
    }
}
