//! The pages' words in English and German (the seed is German), chosen from `Accept-Language`.
//! One struct per language, so a missing translation is a compile error.

use axum::http::HeaderMap;

/// Every sentence a page says.
pub struct Text {
    pub lang: &'static str,
    pub parcel: &'static str,
    pub preparing: &'static str,
    pub on_its_way: &'static str,
    pub handed_to_you: &'static str,
    pub handed_to: &'static str,
    pub handed_no_code: &'static str,
    /// A pickup: the return was collected (from you, from the person named, at the door).
    pub collected_from_you: &'static str,
    pub collected_from: &'static str,
    pub collected_no_code: &'static str,
    pub attempt_failed: &'static str,
    pub locked: &'static str,
    pub expired: &'static str,
    pub at: &'static str,
    pub your_code: &'static str,
    pub your_pickup_code: &'static str,
    /// An addressee-only parcel: no trusted person, bring an ID.
    pub addressee_only: &'static str,
    /// An open-box parcel: it is opened with you first.
    pub open_box: &'static str,
    pub code_label: &'static str,
    pub valid_until: &'static str,
    pub in_zone: &'static str,
    pub rules: [&'static str; 4],
    pub qr_title: &'static str,
    pub qr_hint: &'static str,
    pub trusted_title: &'static str,
    pub trusted_hint: &'static str,
    pub trusted_none: &'static str,
    pub trusted_name: &'static str,
    pub trusted_add: &'static str,
    pub trusted_revoke: &'static str,
    pub not_found: &'static str,
}

pub const EN: Text = Text {
    lang: "en",
    parcel: "Parcel",
    preparing: "Your parcel is being prepared. Your code comes by e-mail once it leaves the warehouse.",
    on_its_way: "Your parcel is on its way.",
    handed_to_you: "Handed over to you",
    handed_to: "Handed over to",
    handed_no_code: "Handed over at the door",
    collected_from_you: "Your return was collected from you",
    collected_from: "Your return was collected from",
    collected_no_code: "Your return was collected at the door",
    attempt_failed: "Delivery attempt failed",
    locked: "Too many wrong codes were entered: the carrier must unlock the parcel. Your QR code still works.",
    expired: "The delivery day is over and the parcel was not handed over. The carrier will contact you.",
    at: "at",
    your_code: "Your delivery code",
    your_pickup_code: "Your pickup code",
    addressee_only: "Only you can take this parcel: have an ID ready. The driver notes its kind, never its number; no one else can take it for you.",
    open_box: "The driver opens the parcel with you first: check it, then give your code, or refuse it if it is damaged or not what you ordered.",
    code_label: "Delivery code, digit by digit",
    valid_until: "Valid until the end of",
    in_zone: "in",
    rules: [
        "Give the code in person, at the door, to the driver who has your parcel.",
        "You may pass it to a person you trust, or name them below so they get a code of their own.",
        "Never give it by phone or message: the carrier will never call you to ask for it.",
        "No neighbour or parcel locker: the parcel goes only to you or a person you named.",
    ],
    qr_title: "Or show this QR code",
    qr_hint: "The driver's phone scans it instead of hearing the code.",
    trusted_title: "People you trust",
    trusted_hint: "Each person you name gets a code of their own, for this parcel and this day only.",
    trusted_none: "You have named nobody.",
    trusted_name: "Name",
    trusted_add: "Give them a code",
    trusted_revoke: "Take it back",
    not_found: "This link has expired or is not valid.",
};

pub const DE: Text = Text {
    lang: "de",
    parcel: "Sendung",
    preparing: "Ihre Sendung wird vorbereitet. Ihren Code erhalten Sie per E-Mail, sobald sie das Lager verlässt.",
    on_its_way: "Ihre Sendung ist unterwegs.",
    handed_to_you: "An Sie übergeben",
    handed_to: "Übergeben an",
    handed_no_code: "An der Tür übergeben",
    collected_from_you: "Ihre Rücksendung wurde bei Ihnen abgeholt",
    collected_from: "Ihre Rücksendung wurde abgeholt bei",
    collected_no_code: "Ihre Rücksendung wurde an der Tür abgeholt",
    attempt_failed: "Zustellversuch gescheitert",
    locked: "Es wurden zu viele falsche Codes eingegeben: der Zusteller muss die Sendung freigeben. Ihr QR-Code gilt weiter.",
    expired: "Der Zustelltag ist vorbei, die Sendung wurde nicht übergeben. Der Zusteller meldet sich bei Ihnen.",
    at: "um",
    your_code: "Ihr Zustellcode",
    your_pickup_code: "Ihr Abholcode",
    addressee_only: "Nur Sie können dieses Paket annehmen: Halten Sie einen Ausweis bereit. Der Fahrer notiert nur die Art, nie die Nummer; niemand sonst kann es für Sie annehmen.",
    open_box: "Der Fahrer öffnet das Paket zuerst mit Ihnen: Prüfen Sie es, dann nennen Sie Ihren Code, oder lehnen Sie es ab, wenn es beschädigt ist oder nicht Ihrer Bestellung entspricht.",
    code_label: "Zustellcode, Ziffer für Ziffer",
    valid_until: "Gültig bis zum Ende des",
    in_zone: "in",
    rules: [
        "Nennen Sie den Code persönlich an der Tür dem Fahrer, der Ihre Sendung bringt.",
        "Sie dürfen ihn einer Person Ihres Vertrauens geben oder sie unten benennen: dann erhält sie einen eigenen Code.",
        "Geben Sie ihn nie am Telefon oder per Nachricht weiter: der Zusteller ruft Sie nie deswegen an.",
        "Keine Abgabe beim Nachbarn oder an einer Packstation: nur an Sie oder eine von Ihnen benannte Person.",
    ],
    qr_title: "Oder zeigen Sie diesen QR-Code",
    qr_hint: "Das Telefon des Fahrers scannt ihn, statt den Code zu hören.",
    trusted_title: "Personen Ihres Vertrauens",
    trusted_hint: "Jede benannte Person erhält einen eigenen Code, nur für diese Sendung und diesen Tag.",
    trusted_none: "Sie haben niemanden benannt.",
    trusted_name: "Name",
    trusted_add: "Code geben",
    trusted_revoke: "Zurücknehmen",
    not_found: "Dieser Link ist abgelaufen oder ungültig.",
};

/// German when the reader's first language is German, English otherwise.
pub fn choose(headers: &HeaderMap) -> &'static Text {
    let first = headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|l| l.trim().to_ascii_lowercase());
    match first {
        Some(l) if l == "de" || l.starts_with("de-") || l.starts_with("de;") => &DE,
        _ => &EN,
    }
}
