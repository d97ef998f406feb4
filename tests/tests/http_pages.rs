//! The pages for people, over real HTTP (a real browser drives them in `tests/browser/`): the
//! customer's page shows the status, the code announced digit by digit, the QR code and the rules,
//! in English or German, names and revokes delegates whose codes work at the door, and says "handed
//! over to you" with the time; the operator's console needs a key (kept in a strict cookie), puts
//! flagged receipts first, and resets a locked parcel only after a confirmation, refusing a form
//! from another origin. Every page is `no-store` with a script-free Content-Security-Policy.

use doorstep_core::device::{HandoverOutcome, ScannedParcel};
use doorstep_core::protocol::Holder;
use doorstep_tests::http::Server;

/// (status, headers as lowercase "name: value" lines, body) without following redirects.
fn fetch(method: &str, url: &str, headers: &[(&str, &str)], form: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
    let mut response = match (method, form) {
        ("POST", body) => {
            let mut req = agent.post(url).header("Content-Type", "application/x-www-form-urlencoded");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body.unwrap_or_default()).unwrap()
        }
        _ => {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call().unwrap()
        }
    };
    let head: Vec<String> = response
        .headers()
        .iter()
        .map(|(k, v)| format!("{}: {}", k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or_default()))
        .collect();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), head.join("\n"), body)
}

fn scan(barcode: &str) -> Vec<ScannedParcel> {
    vec![ScannedParcel::scanned(barcode)]
}

#[test]
fn the_customers_page_shows_the_code_digit_by_digit_the_qr_code_and_the_rules_and_is_never_cached() {
    let server = Server::start();
    server.day();
    let (code, token) = server.read_email("P0");
    let url = server.url(&format!("/parcel/P0/{token}"));
    let (status, head, body) = fetch("GET", &url, &[], None);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(!body.contains("<script"), "no script");
    assert!(body.contains(&format!("{} {}", &code[..3], &code[3..])), "the code, as people read it");
    let spoken: Vec<String> = code.chars().map(String::from).collect();
    assert!(body.contains(&format!("aria-label=\"Delivery code, digit by digit: {}\"", spoken.join(" "))), "{body}");
    assert!(body.contains("Valid until the end of 2026-11-26 in Europe/Berlin"), "{body}");
    assert!(body.contains("Never give it by phone") && body.contains("No neighbour or parcel locker"));
    assert!(body.contains("<svg"), "the QR code");
    // A reload shows the same QR code (the parcel's tokens are not used up by visits).
    let svg = |b: &str| b.split("<svg").nth(1).map(str::to_owned);
    assert_eq!(svg(&fetch("GET", &url, &[], None).2), svg(&body));
    // German for a German reader.
    let (_, _, german) = fetch("GET", &url, &[("Accept-Language", "de-DE,de;q=0.9,en;q=0.5")], None);
    assert!(german.contains("Ihr Zustellcode") && german.contains("lang=\"de\""), "{german}");
    // The link opens this parcel only, and says nothing about others.
    let (status, head, other) = fetch("GET", &server.url(&format!("/parcel/P1/{token}")), &[], None);
    assert_eq!(status, 404);
    assert!(head.contains("content-type: text/html") && other.contains("expired or is not valid"), "{other}");
}

#[test]
fn a_delegate_named_on_the_page_has_a_code_that_works_at_the_door_until_revoked() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let (_, token) = server.read_email("P0");
    let page = format!("/parcel/P0/{token}");
    let (status, head, _) = fetch("POST", &server.url(&format!("{page}/delegates")), &[], Some("label=Neighbour+Anna"));
    assert_eq!(status, 303);
    assert!(head.contains(&format!("location: {page}")), "{head}");
    let (_, _, body) = fetch("GET", &server.url(&page), &[], None);
    assert!(body.contains("<strong>Neighbour Anna</strong>"), "{body}");
    let anna =
        server.dispatch.codes("P0").unwrap().into_iter().find(|(h, _)| *h == Holder::Delegate("Neighbour Anna".into()));
    let (_, anna) = anna.unwrap();
    // Named, revoked on the page, named again: the first code is gone.
    let (status, _, _) =
        fetch("POST", &server.url(&format!("{page}/delegates/revoke")), &[], Some("label=Neighbour+Anna"));
    assert_eq!(status, 303);
    assert!(fetch("GET", &server.url(&page), &[], None).2.contains("You have named nobody."));
    assert!(!server.dispatch.codes("P0").unwrap().iter().any(|(_, c)| *c == anna));
    fetch("POST", &server.url(&format!("{page}/delegates")), &[], Some("label=Neighbour+Anna"));
    let anna = server.dispatch.codes("P0").unwrap().into_iter().find(|(h, _)| *h != Holder::Customer).unwrap().1;
    server.sync(&phone, &device_id);
    let outcome = phone.verify_code(&scan("BC0"), &anna, None).unwrap();
    assert!(
        matches!(&outcome, HandoverOutcome::Accepted { holder: Holder::Delegate(l), .. } if l == "Neighbour Anna"),
        "{outcome:?}"
    );
    // The page then says to whom, and when, in the delivery address's time.
    server.upload(&phone, &device_id);
    let (_, _, body) = fetch("GET", &server.url(&page), &[], None);
    assert!(body.contains("Handed over to Neighbour Anna, at 2026-11-26 12:00 (Europe/Berlin)."), "{body}");
    assert!(!body.contains("<svg"), "no QR code once handed over");
}

#[test]
fn the_page_says_handed_over_to_you_with_the_time() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let (code, token) = server.read_email("P1");
    phone.verify_code(&scan("BC1"), &code, None).unwrap();
    server.upload(&phone, &device_id);
    let (_, _, body) = fetch("GET", &server.url(&format!("/parcel/P1/{token}")), &[], None);
    assert!(body.contains("Handed over to you, at 2026-11-26 12:00 (Europe/Berlin)."), "{body}");
}

#[test]
fn the_console_needs_a_key_and_resets_a_locked_parcel_only_after_a_confirmation_from_its_own_origin() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let right = server.code("P2");
    let wrong: String = right.bytes().map(|b| char::from(b'0' + (b - b'0' + 5) % 10)).collect();
    for _ in 0..5 {
        phone.verify_code(&scan("BC2"), &wrong, None).unwrap();
    }
    server.upload(&phone, &device_id);

    let (status, head, _) = fetch("GET", &server.url("/console"), &[], None);
    assert_eq!(status, 303);
    assert!(head.contains("location: /console/login"), "{head}");
    let (status, _, _) = fetch("POST", &server.url("/console/login"), &[], Some("key=dso_nope_nope"));
    assert_eq!(status, 401);
    let (status, head, _) =
        fetch("POST", &server.url("/console/login"), &[], Some(&format!("key={}", server.operator_key)));
    assert_eq!(status, 303);
    let set = head.lines().find(|l| l.starts_with("set-cookie: ")).unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/console"), "{set}");
    let cookie = set.trim_start_matches("set-cookie: ").split(';').next().unwrap().to_owned();
    let with = [("Cookie", cookie.as_str())];

    let (status, head, body) = fetch("GET", &server.url("/console?date=2026-11-26"), &with, None);
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("cache-control: no-store"));
    assert!(body.contains("Route R1") && body.contains(">P2</a></td><td>2</td><td>yes</td><td>locked</td>"), "{body}");
    // A day that is not one is said, not replaced by today.
    let (status, _, body) = fetch("GET", &server.url("/console?date=someday"), &with, None);
    assert!(status == 400 && body.contains("YYYY-MM-DD"), "{status} {body}");
    let (_, _, confirm) = fetch("GET", &server.url("/console/parcels/P2/reset"), &with, None);
    assert!(confirm.contains("Yes, reset parcel P2"), "{confirm}");
    // Not confirmed, or from another site: nothing happens.
    assert_eq!(fetch("POST", &server.url("/console/parcels/P2/reset"), &with, Some("")).0, 400);
    let evil = [("Cookie", cookie.as_str()), ("Origin", "http://evil.example")];
    assert_eq!(fetch("POST", &server.url("/console/parcels/P2/reset"), &evil, Some("confirm=yes")).0, 403);
    assert_eq!(server.sync(&phone, &device_id), 0, "no reset reached the phone");
    // Confirmed: the phone receives the reset and the parcel is deliverable again.
    let (status, _, _) = fetch("POST", &server.url("/console/parcels/P2/reset"), &with, Some("confirm=yes"));
    assert_eq!(status, 303);
    assert_eq!(server.sync(&phone, &device_id), 1);
    let outcome = phone.verify_code(&scan("BC2"), &right, None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "{outcome:?}");
    let (_, _, history) = fetch("GET", &server.url("/console/parcels/P2"), &with, None);
    assert!(history.contains("reset"), "the action is audited: {history}");
}

#[test]
fn the_pages_share_the_customer_routes_rate_limit_per_address() {
    let limits =
        doorstep_dispatch::api::Limits { customer_per_minute: 3, ..doorstep_dispatch::api::Limits::unlimited() };
    let server = Server::start_with_limits(doorstep_tests::http::Scene::default_day(), |d| d, limits);
    server.day();
    let (_, token) = server.read_email("P0");
    let url = server.url(&format!("/parcel/P0/{token}"));
    let statuses: Vec<u16> = (0..4).map(|_| fetch("GET", &url, &[], None).0).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // The JSON customer route draws on the same budget.
    let (status, _) = doorstep_tests::http::get_as(&server.url("/v1/customer/parcels/P0/code"), &token);
    assert_eq!(status, 429);
}

#[test]
fn the_page_still_shows_the_code_when_the_parcels_qr_tokens_are_used_up() {
    let server = Server::start();
    server.day();
    let (code, token) = server.read_email("P0");
    for _ in 0..doorstep_dispatch::store::MAX_QR_TOKENS_PER_HOLDER {
        assert_eq!(doorstep_tests::http::get_as(&server.url("/v1/customer/parcels/P0/qr"), &token).0, 200);
    }
    let (status, _, body) = fetch("GET", &server.url(&format!("/parcel/P0/{token}")), &[], None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{} {}", &code[..3], &code[3..])) && !body.contains("<svg"), "{body}");
}

#[test]
fn a_console_session_is_not_the_key_and_ends_on_logout_or_when_the_key_is_revoked() {
    let server = Server::start();
    server.day();
    let login = || {
        let (status, head, _) =
            fetch("POST", &server.url("/console/login"), &[], Some(&format!("key={}", server.operator_key)));
        assert_eq!(status, 303);
        let set = head.lines().find(|l| l.starts_with("set-cookie: ")).unwrap().to_owned();
        set.trim_start_matches("set-cookie: ").split(';').next().unwrap().to_owned()
    };
    let cookie = login();
    assert!(!cookie.contains(&server.operator_key) && !cookie.contains("dso_"), "the key never goes to the browser");
    let get = |cookie: &str| fetch("GET", &server.url("/console"), &[("Cookie", cookie)], None).0;
    assert_eq!(get(&cookie), 200);
    let (status, _, _) = fetch("POST", &server.url("/console/logout"), &[("Cookie", cookie.as_str())], Some(""));
    assert_eq!(status, 303);
    assert_eq!(get(&cookie), 303, "logged out: back to the login page");
    let cookie = login();
    server.dispatch.revoke_operator(&server.operator.operator_id).unwrap();
    assert_eq!(get(&cookie), 303, "the key was revoked");
}

#[test]
fn the_page_of_an_addressee_only_parcel_offers_no_trusted_person_and_a_return_shows_its_pickup_code() {
    let server = Server::start();
    let mut parcels = server.parcels(4);
    parcels[0].addressee_only = true;
    parcels[2].open_box = true;
    parcels[2].task = doorstep_core::protocol::Task::Pickup;
    assert_eq!(server.op_post("/v1/parcels", &serde_json::to_vec(&parcels).unwrap()).0, 201);
    for id in ["P0", "P2"] {
        assert_eq!(server.op_post(&format!("/v1/parcels/{id}/departed"), b"").0, 200);
    }
    let page = |id: &str| {
        let (_, token) = server.read_email(id);
        let (status, _, body) = fetch("GET", &server.url(&format!("/parcel/{id}/{token}")), &[], None);
        assert_eq!(status, 200, "{body}");
        body
    };
    let only = page("P0");
    assert!(only.contains("Only you can take this parcel: have an ID ready"), "{only}");
    assert!(!only.contains("/delegates\""), "no form to name a trusted person: {only}");
    let pickup = page("P2");
    assert!(pickup.contains("Your pickup code") && pickup.contains("The driver opens the parcel with you first"));
    assert!(pickup.contains("/delegates\""), "{pickup}");
}
