//! Forged hand-overs, by every path, uploaded over real HTTP by an insider who holds a phone's
//! secrets (see `doorstep_tests::insider`): dispatch re-checks every claim a receipt makes with the
//! phone's own rules and flags what it cannot verify; a storage error fails the upload instead of
//! accepting it. And the attempt limit follows a parcel wherever it goes: to another phone, off and
//! back onto the same phone, onto a reinstalled app.

use chrono::TimeDelta;
use doorstep_core::CoreError;
use doorstep_core::device::{HandoverOutcome, ParcelState, ScannedParcel};
use doorstep_core::error::QrRejection;
use doorstep_core::protocol::{HandoverMethod, Holder, QrToken, ReceiptBody, ReceiptEvent, ReceiptStatus};
use doorstep_tests::http::Server;
use doorstep_tests::insider::Insider;

type Verdict = Result<doorstep_core::protocol::ReceiptResult, (u16, String)>;

/// Flagged, for the reason named (each attack uses a parcel of its own, so no earlier flag on the
/// parcel explains the verdict instead).
fn flagged(result: Verdict, because: &str) {
    let result = result.expect("the upload itself is answered");
    assert_eq!(result.status, ReceiptStatus::Flagged, "{because}: {result:?}");
    let reason = result.reason.unwrap_or_default();
    assert!(reason.contains(because), "expected a flag for {because:?}, got {reason:?}");
}

fn accepted(result: Verdict, why: &str) {
    let result = result.expect("the upload itself is answered");
    assert_eq!(result.status, ReceiptStatus::Accepted, "{why}: {result:?}");
}

fn delegate(label: &str) -> Option<Holder> {
    Some(Holder::Delegate(label.into()))
}

/// A server whose day has 16 parcels (P0..P15, the even ones and P1, P11 need a code), all
/// departed, and a phone on R1 that synced them, with the insider holding its keys.
fn big_day() -> (Server, doorstep_core::device::Device, tempfile::TempDir, Insider) {
    let server = Server::start();
    let (phone, dir, device_id) = server.day();
    server.dispatch.import_parcels(&server.parcels(16)[8..], &server.operator).unwrap();
    for i in 8..16 {
        server.dispatch.parcel_departed(&format!("P{i}"), &server.operator).unwrap();
    }
    // Parcels that leave the warehouse after the phone synced reach it as deltas.
    assert_eq!(server.sync(&phone, &device_id), 8);
    assert!(phone.parcel("P15").is_ok());
    let insider = Insider::of(&dir.path().join("d.db"));
    (server, phone, dir, insider)
}

#[test]
fn a_handover_by_an_invented_delegate_without_a_code_proof_is_flagged() {
    let (server, phone, _dir, insider) = big_day();
    let body = insider.handover("P0", HandoverMethod::DelegateCode, delegate("x"), None, server.clock.now());
    flagged(insider.upload(&server, &phone, body), "has no code proof");
    let body = insider.handover("P2", HandoverMethod::Code, Some(Holder::Customer), None, server.clock.now());
    flagged(insider.upload(&server, &phone, body), "has no code proof");
    let code = server.code("P4");
    let body = insider.handover("P4", HandoverMethod::DelegateCode, delegate("x"), Some(&code), server.clock.now());
    flagged(insider.upload(&server, &phone, body), "was never issued a code");
}

#[test]
fn a_proof_made_with_another_holders_code_or_a_mismatched_method_is_flagged() {
    let (server, phone, _dir, insider) = big_day();
    let now = server.clock.now();
    let anna0 = server.dispatch.name_delegate("P0", "Anna").unwrap();
    let body = insider.handover("P0", HandoverMethod::Code, Some(Holder::Customer), Some(&anna0), now);
    flagged(insider.upload(&server, &phone, body), "does not match any code issued to customer");
    let anna2 = server.dispatch.name_delegate("P2", "Anna").unwrap();
    let body = insider.handover("P2", HandoverMethod::Code, delegate("Anna"), Some(&anna2), now);
    flagged(insider.upload(&server, &phone, body), "does not fit holder");
    let anna4 = server.dispatch.name_delegate("P4", "Anna").unwrap();
    let body = insider.handover("P4", HandoverMethod::DelegateCode, delegate("Anna"), Some(&anna4), now);
    accepted(insider.upload(&server, &phone, body), "Anna with her own code");
}

#[test]
fn a_revoked_delegate_code_passes_before_its_revocation_and_is_flagged_after() {
    let (server, phone, _dir, insider) = big_day();
    let anna0 = server.dispatch.name_delegate("P0", "Anna").unwrap();
    let anna2 = server.dispatch.name_delegate("P2", "Anna").unwrap();
    let before = server.clock.now() + TimeDelta::minutes(5);
    server.clock.advance(TimeDelta::hours(1));
    for parcel in ["P0", "P2"] {
        let (_, token) = server.read_email(parcel);
        let revoke = doorstep_tests::http::agent()
            .delete(server.url(&format!("/v1/customer/parcels/{parcel}/delegates/Anna")))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        assert_eq!(revoke.status().as_u16(), 204);
    }
    let after = server.clock.now() + TimeDelta::minutes(1);
    let body = insider.handover("P0", HandoverMethod::DelegateCode, delegate("Anna"), Some(&anna0), before);
    accepted(insider.upload(&server, &phone, body), "used while it was valid (the phone had it)");
    let body = insider.handover("P2", HandoverMethod::DelegateCode, delegate("Anna"), Some(&anna2), after);
    flagged(insider.upload(&server, &phone, body), "was revoked or replaced");
}

#[test]
fn a_replaced_code_passes_before_the_reissue_and_is_flagged_after() {
    let (server, phone, _dir, insider) = big_day();
    let (old0, old2) = (server.code("P0"), server.code("P2"));
    let before = server.clock.now() + TimeDelta::minutes(5);
    server.clock.advance(TimeDelta::hours(1));
    for parcel in ["P0", "P2", "P4"] {
        server.dispatch.reissue_code(parcel, &server.operator).unwrap();
    }
    let after = server.clock.now() + TimeDelta::minutes(1);
    let body = insider.handover("P0", HandoverMethod::Code, Some(Holder::Customer), Some(&old0), before);
    accepted(insider.upload(&server, &phone, body), "the old code before it was replaced");
    let body = insider.handover("P2", HandoverMethod::Code, Some(Holder::Customer), Some(&old2), after);
    flagged(insider.upload(&server, &phone, body), "was revoked or replaced");
    let body = insider.handover("P4", HandoverMethod::Code, Some(Holder::Customer), Some(&server.code("P4")), after);
    accepted(insider.upload(&server, &phone, body), "the new code");
}

#[test]
fn a_qr_token_for_another_holder_outside_its_window_or_used_twice_is_flagged() {
    let (server, phone, _dir, insider) = big_day();
    let now = server.clock.now();
    let qr = |parcel: &str, holder: Holder| server.dispatch.qr_token(parcel, holder).unwrap();
    let by_qr = |parcel: &str, holder: Option<Holder>, token: String, at| {
        let mut body = insider.handover(parcel, HandoverMethod::QrToken, holder, None, at);
        body.qr_token = Some(token);
        body
    };
    let mallory = || Holder::Delegate("Mallory".into());

    // A token dispatch signed for someone the customer never named.
    let body = by_qr("P0", Some(mallory()), qr("P0", mallory()), now);
    flagged(insider.upload(&server, &phone, body), "held no valid code");
    // The receipt names the customer, the token someone else.
    let body = by_qr("P1", Some(Holder::Customer), qr("P1", mallory()), now);
    flagged(insider.upload(&server, &phone, body), "the receipt names another holder");
    // Another parcel that needs a code rides along on P2's token.
    let mut body = by_qr("P2", Some(Holder::Customer), qr("P2", Holder::Customer), now);
    let mut rider = body.parcels[0].clone();
    rider.parcel_id = "P4".into();
    rider.barcode = "BC4".into();
    body.parcels.push(rider);
    flagged(insider.upload(&server, &phone, body), "needs its own code");
    // Used, the hand-over reversed, then the same token again: the nonce is spent.
    let token = qr("P8", Holder::Customer);
    let first = by_qr("P8", Some(Holder::Customer), token.clone(), now);
    let first_id = first.receipt_id;
    accepted(insider.upload(&server, &phone, first), "the first use");
    let mut reversal = insider.handover("P8", HandoverMethod::Code, None, None, now + TimeDelta::minutes(1));
    reversal.event = doorstep_core::protocol::ReceiptEvent::Reversed;
    reversal.method = None;
    reversal.reverses = Some(first_id);
    reversal.reason = Some(doorstep_core::protocol::FailureReason::Other);
    reversal.note = Some("handed to the wrong person".into());
    accepted(insider.upload(&server, &phone, reversal), "a reversal");
    let body = by_qr("P8", Some(Holder::Customer), token, now + TimeDelta::minutes(2));
    flagged(insider.upload(&server, &phone, body), "QR token already used");
    // Outside the token's window (uploaded once dispatch's clock is past it too).
    let token = qr("P6", Holder::Customer);
    let late = QrToken::verify(&token, &server.dispatch.verifying_keys()).unwrap().not_after + TimeDelta::hours(1);
    server.clock.set(late);
    flagged(insider.upload(&server, &phone, by_qr("P6", Some(Holder::Customer), token, late)), "outside");
}

/// A reversal, by the insider, of the hand-over `body`.
fn reversal_of(insider: &Insider, body: &ReceiptBody, at: chrono::DateTime<chrono::Utc>) -> ReceiptBody {
    let mut reversal = insider.handover(&body.parcels[0].parcel_id, HandoverMethod::Code, None, None, at);
    reversal.event = ReceiptEvent::Reversed;
    reversal.method = None;
    reversal.reverses = Some(body.receipt_id);
    reversal.reason = Some(doorstep_core::protocol::FailureReason::Other);
    reversal.note = Some("handed to the wrong person".into());
    reversal
}

#[test]
fn what_a_batch_says_about_itself_counts_as_if_its_receipts_came_one_by_one() {
    let (server, phone, _dir, insider) = big_day();
    let now = server.clock.now();
    let by_code = |parcel: &str, at| {
        insider.handover(parcel, HandoverMethod::Code, Some(Holder::Customer), Some(&server.code(parcel)), at)
    };
    // One batch: a hand-over, the same parcel handed over again, and the first receipt sent twice.
    let mut receipts = insider.sign_chained(&server, vec![by_code("P0", now), by_code("P0", now)]);
    receipts.push(receipts[0].clone());
    let results = insider.upload_receipts(&server, &phone, receipts).unwrap();
    accepted(Ok(results[0].clone()), "the first hand-over");
    flagged(Ok(results[1].clone()), "parcel P0 was already handed over");
    assert_eq!(results[2].status, ReceiptStatus::Duplicate, "{:?}", results[2]);
    // Another: a hand-over, its reversal, and the parcel handed over again after it.
    let first = by_code("P4", now);
    let reversal = reversal_of(&insider, &first, now + TimeDelta::minutes(1));
    let again = by_code("P4", now + TimeDelta::minutes(2));
    let results = insider.upload_receipts(&server, &phone, insider.sign_chained(&server, vec![first, reversal, again]));
    for (result, what) in results.unwrap().into_iter().zip(["a hand-over", "its reversal", "the hand-over after it"]) {
        accepted(Ok(result), what);
    }
    // Each receipt stored once, in chain order; the duplicate not again.
    let held = server.dispatch.receipts(&insider.device_id).unwrap();
    assert_eq!(held.iter().map(|r| r.body.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(server.dispatch.parcel_history("P4").unwrap().len(), 3);
}

#[test]
fn a_handover_after_the_parcels_day_is_flagged_even_with_the_right_code() {
    let (server, phone, _dir, insider) = big_day();
    let window_end = phone.parcel("P0").unwrap().not_after;
    let at = window_end - TimeDelta::minutes(1);
    server.clock.set(at);
    let body = insider.handover("P2", HandoverMethod::Code, Some(Holder::Customer), Some(&server.code("P2")), at);
    accepted(insider.upload(&server, &phone, body), "a minute before the end");
    let at = window_end + TimeDelta::minutes(1);
    server.clock.set(at);
    let body = insider.handover("P0", HandoverMethod::Code, Some(Holder::Customer), Some(&server.code("P0")), at);
    flagged(insider.upload(&server, &phone, body), "outside its delivery window");
}

/// The verdict is no oracle: an insider left with two candidate codes who sends one, sees it
/// flagged and sends the other, gets that one flagged too. And a parcel is handed over once.
#[test]
fn a_second_try_after_a_flag_and_a_second_handover_are_both_held() {
    let (server, phone, _dir, insider) = big_day();
    let now = server.clock.now();
    // A genuine hand-over first (the insider's receipts then continue the phone's chain).
    let out = phone.verify_code(&[ScannedParcel::scanned("BC2")], &server.code("P2"), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }));
    server.upload(&phone, &insider.device_id);
    let body = insider.handover("P2", HandoverMethod::Code, Some(Holder::Customer), Some(&server.code("P2")), now);
    flagged(insider.upload(&server, &phone, body), "was already handed over");
    // Two candidates: the wrong one is flagged, and so is the right one sent after it.
    let right = server.code("P0");
    let wrong: String = right.bytes().map(|b| char::from(b'0' + (b - b'0' + 1) % 10)).collect();
    let body = insider.handover("P0", HandoverMethod::Code, Some(Holder::Customer), Some(&wrong), now);
    flagged(insider.upload(&server, &phone, body), "does not match");
    let body = insider.handover("P0", HandoverMethod::Code, Some(Holder::Customer), Some(&right), now);
    flagged(insider.upload(&server, &phone, body), "an earlier hand-over of parcel P0 was flagged");
    // A parcel that never left the warehouse (so no manifest ever carried it to the phone).
    let mut extra = server.parcels(17)[16].clone();
    extra.declared_value_cents = 100;
    server.dispatch.import_parcels(&[extra], &server.operator).unwrap();
    let body = insider.handover("P16", HandoverMethod::NoCode, None, None, now);
    flagged(insider.upload(&server, &phone, body), "was never on a manifest sent to this device");
}

#[test]
fn a_storage_error_at_dispatch_fails_the_upload_and_accepts_nothing() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let out = phone.verify_code(&[ScannedParcel::scanned("BC0")], &server.code("P0"), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }));
    // The code book becomes unreadable (as a disk or permissions fault would make it).
    server.sql("ALTER TABLE code RENAME TO code_away");
    let batch = phone.next_batch(10, 64 * 1024).unwrap().unwrap();
    let (status, body) = server.signed_post(&phone, &format!("/v1/devices/{device_id}/receipts"), &batch.bytes);
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert!(server.dispatch.receipts(&device_id).unwrap().is_empty(), "nothing stored, nothing accepted");
    phone.record_upload_failure("HTTP 500").unwrap();
    assert_eq!(phone.status().unwrap().pending_receipts, 1, "the phone keeps the receipt");
    // Once storage is back, the same receipt lands and is accepted.
    server.sql("ALTER TABLE code_away RENAME TO code");
    server.upload(&phone, &device_id);
    let held = server.dispatch.receipts(&device_id).unwrap();
    assert_eq!((held.len(), held[0].status), (1, ReceiptStatus::Accepted));
}

/// Four wrong codes on one phone, uploaded: wherever the parcel goes next, one more wrong code locks it.
fn four_wrong_codes_uploaded(server: &Server, phone: &doorstep_core::device::Device, device_id: &str) {
    for left in (1..=4).rev() {
        let out = phone.verify_code(&[ScannedParcel::scanned("BC0")], "000000", None).unwrap();
        assert_eq!(out, HandoverOutcome::WrongCode { attempts_left: left });
    }
    server.upload(phone, device_id);
}

fn one_more_wrong_code_locks(phone: &doorstep_core::device::Device) {
    let out = phone.verify_code(&[ScannedParcel::scanned("BC0")], "000000", None).unwrap();
    assert!(matches!(out, HandoverOutcome::Locked { .. }), "the fifth attempt in all locks: {out:?}");
}

#[test]
fn wrong_attempts_follow_a_parcel_reassigned_to_another_phone() {
    let server = Server::start();
    let (one, dir, one_id) = server.day();
    let (two, two_id) = server.synced_phone("R2", &dir.path().join("two.db"));
    four_wrong_codes_uploaded(&server, &one, &one_id);
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(server.sync(&two, &two_id), 1);
    one_more_wrong_code_locks(&two);
}

#[test]
fn wrong_attempts_survive_a_parcel_taken_off_a_phone_and_put_back() {
    let server = Server::start();
    let (one, _dir, one_id) = server.day();
    four_wrong_codes_uploaded(&server, &one, &one_id);
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R1"}"#).0, 200);
    assert_eq!(server.sync(&one, &one_id), 2);
    one_more_wrong_code_locks(&one);
}

#[test]
fn wrong_attempts_survive_a_parcel_taken_off_a_phone_before_they_were_uploaded() {
    let server = Server::start();
    let (one, _dir, one_id) = server.day();
    for _ in 0..4 {
        one.verify_code(&[ScannedParcel::scanned("BC0")], "000000", None).unwrap();
    }
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R1"}"#).0, 200);
    assert_eq!(server.sync(&one, &one_id), 2, "synced while the attempts were still in the outbox");
    one_more_wrong_code_locks(&one);
}

#[test]
fn wrong_attempts_survive_a_reinstalled_app() {
    let server = Server::start();
    let (one, dir, one_id) = server.day();
    four_wrong_codes_uploaded(&server, &one, &one_id);
    drop(one);
    // The app's data is wiped: a new database, a new enrolment on the same route.
    let (again, _) = server.synced_phone("R1", &dir.path().join("reinstalled.db"));
    one_more_wrong_code_locks(&again);
}

/// An insider who fetches the manifest again (or waits for a delta) must not learn a second,
/// independent tag of the same code: with a fresh salt each time, a few fetches would narrow the
/// brute-forced candidates down to the code itself and every forged proof would pass.
#[test]
fn fetching_the_manifest_again_repeats_the_same_tags() {
    use doorstep_core::protocol::{ManifestPayload, SignedEnvelope, domain};
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let tags_of = |envelope: Vec<u8>| {
        let payload = SignedEnvelope::open(&envelope, domain::MANIFEST, &server.dispatch.verifying_keys()).unwrap();
        let manifest: ManifestPayload = serde_json::from_slice(&payload).unwrap();
        let p0 = manifest.parcels.into_iter().find(|p| p.parcel_id == "P0").unwrap();
        (p0.salt, p0.tags.into_iter().find(|t| t.holder == Holder::Customer).unwrap().tag)
    };
    let first = tags_of(server.manifest(&phone, &device_id, None).unwrap());
    let again = tags_of(server.manifest(&phone, &device_id, None).unwrap());
    assert_eq!(first, again, "a second full manifest carries the same salt and tag");
    // A delta for the parcel (a delegate named) repeats the customer's tag too.
    server.dispatch.name_delegate("P0", "Anna").unwrap();
    // Dispatch has issued sequences 1 (applied), 2 and 3 (the fetches above); the delta is 4.
    let delta = server.manifest(&phone, &device_id, Some(3)).unwrap();
    assert_eq!(tags_of(delta), first);
}

/// A phone (or an insider with its keys) cannot lock parcels of other routes by claiming wrong
/// codes on them, and no claim pushes a count past the attempt limit.
#[test]
fn a_phone_cannot_lock_another_routes_parcel_with_claimed_wrong_codes() {
    let server = Server::start();
    let (one, dir, one_id) = server.day();
    let (two, _) = server.synced_phone("R2", &dir.path().join("two.db"));
    let insider = Insider::of(&dir.path().join("two.db"));
    let mut body = insider.handover("P0", HandoverMethod::Code, None, None, server.clock.now());
    body.event = doorstep_core::protocol::ReceiptEvent::WrongCode;
    body.method = None;
    body.parcels[0].attempts_used = u32::MAX;
    // Stored (it is the phone's own chain), but it counts nothing against R1's parcel.
    insider.upload(&server, &two, body).unwrap();
    assert!(server.sync(&one, &one_id) <= 1);
    let fresh = server.manifest(&one, &one_id, None).unwrap();
    one.apply_manifest(&fresh).unwrap();
    assert_eq!(one.parcel("P0").unwrap().attempts_left, 5);
}

/// A phone only makes receipts for parcels dispatch sent it. An insider with the keys of a phone
/// on another route, even holding the right code (a colluding customer), is flagged.
#[test]
fn a_handover_of_a_parcel_never_sent_to_the_phone_is_flagged() {
    let server = Server::start();
    let (_one, dir, _) = server.day();
    let (two, _) = server.synced_phone("R2", &dir.path().join("two.db"));
    let insider = Insider::of(&dir.path().join("two.db"));
    let now = server.clock.now();
    let body = insider.handover("P3", HandoverMethod::NoCode, None, None, now);
    flagged(insider.upload(&server, &two, body), "was never on a manifest sent to this device");
    let body = insider.handover("P0", HandoverMethod::Code, Some(Holder::Customer), Some(&server.code("P0")), now);
    flagged(insider.upload(&server, &two, body), "was never on a manifest sent to this device");
}

fn wrong_codes(phone: &doorstep_core::device::Device, n: usize) {
    for _ in 0..n {
        let out = phone.verify_code(&[ScannedParcel::scanned("BC0")], "000000", None).unwrap();
        assert!(matches!(out, HandoverOutcome::WrongCode { .. }), "{out:?}");
    }
}

/// Attempts left on P0 for a phone on `route` that syncs afresh.
fn attempts_left_on_a_fresh_phone(server: &Server, dir: &std::path::Path, route: &str, name: &str) -> u32 {
    let (fresh, _) = server.synced_phone(route, &dir.join(name));
    fresh.parcel("P0").unwrap().attempts_left
}

/// Two phones that held the parcel at once (the first had not synced the reassignment) each
/// spent three attempts: dispatch counts six, so the parcel is locked wherever it goes.
#[test]
fn wrong_attempts_on_two_phones_at_once_add_up() {
    let server = Server::start();
    let (one, dir, one_id) = server.day();
    let (two, two_id) = server.synced_phone("R2", &dir.path().join("two.db"));
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(server.sync(&two, &two_id), 1);
    wrong_codes(&one, 3);
    wrong_codes(&two, 3);
    server.upload(&one, &one_id);
    server.upload(&two, &two_id);
    assert_eq!(attempts_left_on_a_fresh_phone(&server, dir.path(), "R2", "three.db"), 0);
}

/// A phone offline since before a reset keeps guessing against its old count; those attempts,
/// uploaded after the reset (even with a later trusted time), do not eat the fresh attempts.
#[test]
fn wrong_attempts_from_before_a_phone_learned_of_a_reset_do_not_count_after_it() {
    let server = Server::start();
    let (one, dir, one_id) = server.day();
    wrong_codes(&one, 1);
    server.upload(&one, &one_id);
    assert_eq!(server.op_post("/v1/parcels/P0/reset", b"").0, 200);
    server.clock.advance(TimeDelta::minutes(10));
    wrong_codes(&one, 3);
    server.upload(&one, &one_id);
    assert_eq!(attempts_left_on_a_fresh_phone(&server, dir.path(), "R1", "two.db"), 5);
    // Once the phone has the reset, its attempts count again.
    server.sync(&one, &one_id);
    assert_eq!(one.parcel("P0").unwrap().attempts_left, 5);
    wrong_codes(&one, 2);
    server.upload(&one, &one_id);
    assert_eq!(attempts_left_on_a_fresh_phone(&server, dir.path(), "R1", "three.db"), 3);
}

/// A phone the reset delta never reached (the parcel was on another route then) still gets the
/// fresh attempts when the parcel comes back: the entry's attempt epoch carries the reset.
#[test]
fn a_reset_reaches_a_phone_the_reset_delta_missed() {
    let server = Server::start();
    let (one, _dir, one_id) = server.day();
    four_wrong_codes_uploaded(&server, &one, &one_id);
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(server.sync(&one, &one_id), 1, "P0 leaves the phone, its 4 attempts remembered");
    assert_eq!(server.op_post("/v1/parcels/P0/reset", b"").0, 200);
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R1"}"#).0, 200);
    assert_eq!(server.sync(&one, &one_id), 1);
    assert_eq!(one.parcel("P0").unwrap().attempts_left, 5);
}

/// A wrong-code receipt an insider signs with a phone's keys (the parcel, its count, its epoch).
fn wrong_code_receipt(
    insider: &Insider,
    server: &Server,
    parcel: &str,
    attempts_used: u32,
    attempt_epoch: u32,
) -> doorstep_core::protocol::ReceiptBody {
    let mut body = insider.handover(parcel, HandoverMethod::Code, None, None, server.clock.now());
    body.event = doorstep_core::protocol::ReceiptEvent::WrongCode;
    body.method = None;
    body.parcels[0].attempts_used = attempts_used;
    body.parcels[0].attempt_epoch = attempt_epoch;
    body
}

/// A receipt flagged because its parcel was never on the phone is evidence only: it does not hold
/// the genuine hand-over of that parcel on its own route.
#[test]
fn a_flagged_receipt_about_another_routes_parcel_does_not_hold_its_genuine_handover() {
    let server = Server::start();
    let (one, dir, one_id) = server.day();
    let (two, _) = server.synced_phone("R2", &dir.path().join("two.db"));
    let insider = Insider::of(&dir.path().join("two.db"));
    let body = insider.handover("P0", HandoverMethod::NoCode, None, None, server.clock.now());
    flagged(insider.upload(&server, &two, body), "was never on a manifest sent to this device");
    let out = one.verify_code(&[ScannedParcel::scanned("BC0")], &server.code("P0"), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Accepted { .. }));
    server.upload(&one, &one_id);
    let held = server.dispatch.receipts(&one_id).unwrap();
    assert_eq!(held[0].status, ReceiptStatus::Accepted, "{:?}", held[0].reason);
}

/// Receipts naming an attempt epoch dispatch has not reached count for nothing, so an insider
/// cannot fill the epochs a reset would open.
#[test]
fn wrong_codes_claimed_for_future_attempt_epochs_do_not_survive_a_reset() {
    let server = Server::start();
    let (one, dir, _) = server.day();
    let insider = Insider::of(&dir.path().join("d.db"));
    for epoch in 1..=3 {
        accepted(insider.upload(&server, &one, wrong_code_receipt(&insider, &server, "P0", u32::MAX, epoch)), "stored");
    }
    assert_eq!(server.op_post("/v1/parcels/P0/reset", b"").0, 200);
    assert_eq!(attempts_left_on_a_fresh_phone(&server, dir.path(), "R1", "fresh.db"), 5);
}

/// After a reassignment and a reset, the old route's phone (or an insider with its keys) can no
/// longer lock the parcel: its claims count only in epochs that began before the withdrawal.
#[test]
fn after_a_reassignment_and_a_reset_the_old_routes_phone_cannot_lock_the_parcel() {
    let server = Server::start();
    let (one, dir, _) = server.day();
    let insider = Insider::of(&dir.path().join("d.db"));
    assert_eq!(server.op_post("/v1/parcels/P0/reassign", br#"{"route_id":"R2"}"#).0, 200);
    assert_eq!(server.op_post("/v1/parcels/P0/reset", b"").0, 200);
    accepted(insider.upload(&server, &one, wrong_code_receipt(&insider, &server, "P0", u32::MAX, 1)), "stored");
    assert_eq!(attempts_left_on_a_fresh_phone(&server, dir.path(), "R2", "two.db"), 5);
}

/// A phone of protocol 1.0 names no attempt epoch; its wrong codes made after a reset still count.
#[test]
fn wrong_codes_from_a_1_0_phone_after_a_reset_count() {
    let server = Server::start();
    let (one, dir, _) = server.day();
    let insider = Insider::of(&dir.path().join("d.db"));
    assert_eq!(server.op_post("/v1/parcels/P0/reset", b"").0, 200);
    server.clock.advance(TimeDelta::minutes(1));
    let mut body = wrong_code_receipt(&insider, &server, "P0", 4, 0);
    body.version = "1.0".into();
    accepted(insider.upload(&server, &one, body), "a 1.0 receipt");
    assert_eq!(attempts_left_on_a_fresh_phone(&server, dir.path(), "R1", "fresh.db"), 1);
}

/// A genuine QR token in any stored receipt is spent, flagged receipts included: a token an
/// insider on another route showed in a forgery (flagged, evidence only) opens nothing afterwards.
#[test]
fn a_qr_token_seen_in_a_flagged_receipt_is_spent() {
    let (server, phone, dir, insider) = big_day();
    let (two, _) = server.synced_phone("R2", &dir.path().join("two.db"));
    let elsewhere = Insider::of(&dir.path().join("two.db"));
    let token = server.dispatch.qr_token("P6", Holder::Customer).unwrap();
    let by_qr = |who: &Insider| {
        let mut body = who.handover("P6", HandoverMethod::QrToken, Some(Holder::Customer), None, server.clock.now());
        body.qr_token = Some(token.clone());
        body
    };
    flagged(elsewhere.upload(&server, &two, by_qr(&elsewhere)), "was never on a manifest sent to this device");
    flagged(insider.upload(&server, &phone, by_qr(&insider)), "QR token already used");
}

/// A reissue answers a leaked code or e-mail: a QR token minted before it is flagged, a token
/// minted after it passes.
#[test]
fn a_qr_token_minted_before_a_reissue_is_flagged() {
    let (server, phone, _dir, insider) = big_day();
    let before = server.dispatch.qr_token("P0", Holder::Customer).unwrap();
    server.clock.advance(TimeDelta::minutes(1));
    assert_eq!(server.op_post("/v1/parcels/P0/reissue", b"").0, 200);
    server.clock.advance(TimeDelta::minutes(1));
    let by_qr = |parcel: &str, token: String| {
        let mut body =
            insider.handover(parcel, HandoverMethod::QrToken, Some(Holder::Customer), None, server.clock.now());
        body.qr_token = Some(token);
        body
    };
    flagged(insider.upload(&server, &phone, by_qr("P0", before)), "before the code of customer was reissued");
    let after = server.dispatch.qr_token("P2", Holder::Customer).unwrap();
    accepted(insider.upload(&server, &phone, by_qr("P2", after)), "a token minted after any reissue");
}

/// Once the phone has synced a reissue, it refuses at the door a QR token minted before it: the
/// customer's current token (or the new code) hands over, and nothing waits for dispatch to flag.
#[test]
fn a_phone_that_synced_a_reissue_refuses_a_qr_token_minted_before_it() {
    let (server, phone, _dir, _insider) = big_day();
    let before = server.dispatch.qr_token("P0", Holder::Customer).unwrap();
    server.clock.advance(TimeDelta::minutes(1));
    assert_eq!(server.op_post("/v1/parcels/P0/reissue", b"").0, 200);
    let device_id = phone.status().unwrap().device_id.unwrap();
    assert_eq!(server.sync(&phone, &device_id), 1, "the reissue reaches the phone as a delta");
    server.clock.advance(TimeDelta::minutes(1));
    let scan = || vec![ScannedParcel::scanned("BC0")];
    let refused = phone.verify_qr_token(&scan(), &before, None).unwrap_err();
    assert!(matches!(refused, CoreError::QrRejected(QrRejection::Superseded)), "{refused:?}");
    assert_eq!(phone.parcel("P0").unwrap().state, ParcelState::Pending);
    let after = server.dispatch.qr_token("P0", Holder::Customer).unwrap();
    assert!(matches!(phone.verify_qr_token(&scan(), &after, None).unwrap(), HandoverOutcome::Accepted { .. }));
    server.upload(&phone, &device_id);
    let held = server.dispatch.receipts(&device_id).unwrap();
    assert!(
        held.iter().all(|r| r.status == ReceiptStatus::Accepted),
        "{:?}",
        held.last().and_then(|r| r.reason.clone())
    );
}

#[test]
fn a_reversal_undoes_only_the_parcels_it_names_of_the_hand_over_it_names() {
    let (server, phone, _dir, insider) = big_day();
    let now = server.clock.now();
    let code = |parcel: &str| server.code(parcel);
    // One hand-over of P0 and P4 (a code each).
    let mut both = insider.handover("P0", HandoverMethod::Code, Some(Holder::Customer), Some(&code("P0")), now);
    let mut p4 = insider.handover("P4", HandoverMethod::Code, Some(Holder::Customer), Some(&code("P4")), now);
    p4.parcels[0].code_proof = Some(doorstep_core::protocol::Base64Bytes(
        doorstep_core::crypto::code_proof(
            &insider.secret.proof_key(),
            both.receipt_id.as_bytes(),
            "P4",
            &doorstep_core::crypto::Code::parse(&code("P4")).unwrap(),
        )
        .to_vec(),
    ));
    both.parcels.push(p4.parcels.remove(0));
    accepted(insider.upload(&server, &phone, both.clone()), "the hand-over of two parcels");
    // A reversal naming no parcel, or one the hand-over did not deliver: flagged, undoes nothing.
    let mut none = reversal_of(&insider, &both, now + TimeDelta::minutes(1));
    none.parcels.clear();
    flagged(insider.upload(&server, &phone, none), "a reversal names no parcel");
    let mut other = reversal_of(&insider, &both, now + TimeDelta::minutes(1));
    other.parcels[0].parcel_id = "P2".into();
    other.parcels[0].barcode = "BC2".into();
    flagged(insider.upload(&server, &phone, other), "names parcel P2, which it did not hand over");
    // Reversing P0 undoes P0's hand-over only: P0 may be handed over again, P4 may not.
    accepted(insider.upload(&server, &phone, reversal_of(&insider, &both, now + TimeDelta::minutes(2))), "P0 reversed");
    let again = |parcel: &str| {
        insider.handover(
            parcel,
            HandoverMethod::Code,
            Some(Holder::Customer),
            Some(&code(parcel)),
            now + TimeDelta::minutes(3),
        )
    };
    accepted(insider.upload(&server, &phone, again("P0")), "P0 handed over again");
    flagged(insider.upload(&server, &phone, again("P4")), "parcel P4 was already handed over");
}

#[test]
fn a_reversal_from_another_phone_than_the_hand_overs_is_flagged_and_undoes_nothing() {
    let server = Server::start();
    let (phone, _dir, device_id) = server.day();
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = server.synced_phone("R1", &other_dir.path().join("b.db"));
    phone.verify_code(&[ScannedParcel::scanned("BC0")], &server.code("P0"), None).unwrap();
    server.upload(&phone, &device_id);
    let handed = server.dispatch.parcel_history("P0").unwrap()[0].body.clone();
    // The second phone on the route holds P0 too; its insider reverses the first phone's hand-over.
    let insider = Insider::of(&other_dir.path().join("b.db"));
    let reversal = reversal_of(&insider, &handed, server.clock.now() + TimeDelta::minutes(1));
    flagged(insider.upload(&server, &other, reversal), "another phone");
    let (_, token) = server.read_email("P0");
    let page = server.dispatch.customer_page(&token, "P0").unwrap();
    assert!(matches!(page.status, doorstep_dispatch::store::ParcelStatus::HandedOver { .. }), "{:?}", page.status);
}
