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

/// Characters that show nothing, or nothing of their own, and so can make a label or hint read
/// differently on the driver's screen: Unicode's Default_Ignorable_Code_Point set (soft hyphen,
/// combining grapheme joiner, Hangul fillers, zero-width characters, directional marks, embeddings,
/// overrides and isolates, invisible operators, variation selectors, the byte-order mark, tag
/// characters: DerivedCoreProperties.txt, Unicode 15.1), the other format characters (prepended
/// concatenation marks, Egyptian and shorthand format controls, interlinear annotations), the line
/// and paragraph separators, and two blanks that look like nothing (Braille blank, object
/// replacement).
fn invisible(c: char) -> bool {
    matches!(c,
        // Default_Ignorable_Code_Point
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}'
        // other format characters (general category Cf)
        | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{0890}'..='\u{0891}' | '\u{08E2}'
        | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}' | '\u{FFF9}'..='\u{FFFB}'
        // line and paragraph separators; blanks
        | '\u{2028}'..='\u{2029}' | '\u{2800}' | '\u{FFFC}'
        // private use (no meaning anyone agreed on) and noncharacters
        | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{10FFFF}' | '\u{FDD0}'..='\u{FDEF}' | '\u{FFFE}'..='\u{FFFF}')
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
    let readable = value.chars().any(char::is_alphanumeric);
    if readable && value.trim() == value && value.len() <= MAX_LABEL_LEN && plain(value) {
        Ok(())
    } else {
        Err(bad(
            "delegate label",
            format!(
                "must be 1..={MAX_LABEL_LEN} bytes with a letter or digit, no spaces around it, without control or \
                 invisible characters"
            ),
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
    if let Some(sscc) = &p.sscc {
        self::sscc(&at("sscc"), sscc)?;
    }
    Ok(())
}

/// The 18 digits a valid SSCC (either form) names.
pub fn sscc_digits(sscc: &str) -> String {
    match sscc.strip_prefix("urn:epc:id:sscc:") {
        Some(rest) => crate::epcis::hash::sscc_of_urn(rest).unwrap_or_default(),
        None => sscc.to_owned(),
    }
}

/// An SSCC: 18 digits whose last is their GS1 check digit, or an `urn:epc:id:sscc:` URN (company
/// prefix of 6 to 12 digits, then the serial reference, 17 digits in all).
fn sscc(field: &str, value: &str) -> Result<()> {
    use crate::epcis::hash::{check_digit, sscc_of_urn};
    let valid = match value.strip_prefix("urn:epc:id:sscc:") {
        Some(rest) => sscc_of_urn(rest).is_some(),
        None => {
            value.len() == 18
                && value.bytes().all(|b| b.is_ascii_digit())
                && check_digit(&value[..17]) == value[17..].parse().ok()
        }
    };
    match valid {
        true => Ok(()),
        false => Err(bad(
            field,
            "must be an SSCC: 18 digits ending in their GS1 check digit, or urn:epc:id:sscc:<company prefix>.<serial reference>"
                .into(),
        )),
    }
}

/// The fields a CSV import's first line names (`address_hint` and `recipient_hint` may be left
/// out).
pub const CSV_FIELDS: [&str; 10] = [
    "parcel_id",
    "barcode",
    "route_id",
    "stop_id",
    "stop_sequence",
    "delivery_date",
    "time_zone",
    "declared_value_cents",
    "category",
    "customer_email",
];

/// Order lines from a CSV import (its first line naming the fields), each line's error naming
/// the line. The fields are checked by [`new_parcel`] when the import is stored.
pub fn csv_import(body: &[u8]) -> Result<Vec<NewParcel>> {
    let mut reader = csv::Reader::from_reader(body);
    let named = reader.headers().map_err(|e| DispatchError::BadRequest(format!("CSV line 1: {e}")))?.clone();
    let missing: Vec<&str> = CSV_FIELDS.into_iter().filter(|f| !named.iter().any(|h| h == *f)).collect();
    if !missing.is_empty() {
        return Err(DispatchError::BadRequest(format!(
            "CSV line 1 must name the fields ({}; address_hint and recipient_hint optional); missing: {}",
            CSV_FIELDS.join(","),
            missing.join(",")
        )));
    }
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.map_err(|e| DispatchError::BadRequest(format!("CSV line {}: {}", i + 2, in_words(&e)))))
        .collect()
}

/// Order lines from a JSON import (a list).
pub fn json_import(body: &[u8]) -> Result<Vec<NewParcel>> {
    serde_json::from_slice(body).map_err(|e| DispatchError::BadRequest(in_words(&e)))
}

/// An import's parse error in words: a date that does not parse (chrono's "input contains
/// invalid characters") says what a date looks like.
fn in_words(error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    if text.contains("input contains invalid characters") || text.contains("premature end of input") {
        format!("{text} (dates are YYYY-MM-DD)")
    } else {
        text
    }
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
        for sneaky in [
            "B\u{202E}XYZ",
            "12 Elm\u{2028}St",
            "An\u{200B}na",
            "\u{FEFF}x",
            // the second review's: Hangul fillers, a variation selector, Braille blank, CGJ
            "\u{3164}Anna",
            "Anna\u{FE0F}",
            "A\u{2800}nna",
            "An\u{034F}na",
            "\u{115F}x",
            "x\u{E0100}",
        ] {
            assert!(id("barcode", sneaky).is_err(), "{sneaky:?}");
            assert!(hint("address_hint", sneaky).is_err(), "{sneaky:?}");
            assert!(label(sneaky).is_err(), "{sneaky:?}");
        }
        assert!(label(" Anna").is_err() && label("Anna ").is_err());
        assert!(label("\u{0301}").is_err(), "a lone combining mark shows nothing");
        assert!(id("b", "x\u{E000}").is_err() && hint("h", "\u{FFFE}").is_err());
        assert!(
            label("Anna Maria").is_ok() && hint("h", "Straße 5, Hinterhaus").is_ok() && id("b", "Ünïcode-1").is_ok()
        );
    }
}
