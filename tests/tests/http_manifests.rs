//! A full manifest is built and signed with no transaction open (the costly part runs on any
//! core, beside other phones' requests), then kept only if nothing it was built from changed.
//! Here a code changes in exactly that gap, on a phone's first manifest of the day (when no delta
//! reaches it yet) and on a later one: the phone ends up with the change, never with a revoked or
//! replaced code. On PostgreSQL too when `DOORSTEP_TEST_POSTGRES` names a database.

use std::cell::RefCell;

use doorstep_core::device::{Device, HandoverOutcome, ScannedParcel};
use doorstep_core::protocol::REQUEST_HEADER;
use doorstep_dispatch::Operator;
use doorstep_tests::http::{Server, get_with};

/// Eight parcels departed on R1 (P0 needs a code) and a phone enrolled on R1 that has no manifest.
fn enrolled_phone(server: &Server) -> (Device, tempfile::TempDir, String) {
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&server.parcels(8)).unwrap());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    for i in 0..8 {
        let (status, _) = server.op_post(&format!("/v1/parcels/P{i}/departed"), b"");
        assert_eq!(status, 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let (phone, id) = server.enrol_device("R1", &dir.path().join("d.db"));
    (phone, dir, id)
}

/// The phone's full manifest, with `change` made after dispatch read the route-day and before it
/// kept the manifest (where the API draws the phone's full-manifest budget).
fn full_manifest_with_change_between(server: &Server, phone: &Device, id: &str, change: &dyn Fn()) -> Vec<u8> {
    let path = format!("/v1/devices/{id}/manifest?date={}", server.scene.date);
    let signature = phone.sign_request("GET", &path, b"").unwrap();
    let request = server.dispatch.verify_device_request(id, Some(&signature), "GET", &path, b"").unwrap();
    let changed = std::cell::Cell::new(false);
    let envelope = server
        .dispatch
        .manifest_or_refuse_full(&request, server.scene.date, None, None, &|| {
            assert!(!changed.replace(true), "the budget is drawn once");
            change();
            Ok(())
        })
        .unwrap()
        .expect("a full manifest");
    assert!(changed.get());
    envelope
}

/// Reissues P0's code while the phone's full manifest is built; checks that the phone, once
/// synced, opens the parcel with the new code only.
fn reissue_while_a_full_manifest_is_built(server: &Server, phone: &Device, id: &str) {
    let old = server.code("P0");
    let fresh = RefCell::new(None);
    let envelope = full_manifest_with_change_between(server, phone, id, &|| {
        *fresh.borrow_mut() = Some(server.dispatch.reissue_code("P0", &Operator::loopback()).unwrap());
    });
    phone.apply_manifest(&envelope).unwrap();
    server.sync(phone, id);
    let fresh = fresh.into_inner().unwrap();
    assert_ne!(old, fresh);
    assert!(!opens(phone, &old), "the replaced code still opens the parcel");
    assert!(opens(phone, &fresh), "the reissued code does not open the parcel");
}

fn opens(phone: &Device, code: &str) -> bool {
    let scan = [ScannedParcel::scanned("BC0")];
    match phone.verify_code(&scan, code, None).unwrap() {
        HandoverOutcome::Accepted { .. } => true,
        HandoverOutcome::WrongCode { .. } => false,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_code_reissued_while_a_phones_first_full_manifest_is_built_reaches_the_phone() {
    let server = Server::start();
    let (phone, _dir, id) = enrolled_phone(&server);
    reissue_while_a_full_manifest_is_built(&server, &phone, &id);
}

#[test]
fn a_delegate_revoked_while_a_phones_first_full_manifest_is_built_no_longer_opens_the_parcel() {
    let server = Server::start();
    let (phone, _dir, id) = enrolled_phone(&server);
    let (_, token) = server.read_email("P0");
    let delegate = server.dispatch.customer_name_delegate(&token, "P0", "Neighbour").unwrap();
    let envelope = full_manifest_with_change_between(&server, &phone, &id, &|| {
        server.dispatch.customer_revoke_delegate(&token, "P0", "Neighbour").unwrap();
    });
    phone.apply_manifest(&envelope).unwrap();
    server.sync(&phone, &id);
    assert!(!opens(&phone, &delegate), "the revoked delegate's code still opens the parcel");
    assert!(opens(&phone, &server.code("P0")));
}

#[test]
fn a_code_reissued_while_a_later_full_manifest_is_built_reaches_the_phone() {
    let server = Server::start();
    let (phone, _dir, id) = enrolled_phone(&server);
    phone.apply_manifest(&server.manifest(&phone, &id, None).unwrap()).unwrap();
    reissue_while_a_full_manifest_is_built(&server, &phone, &id);
}

#[test]
fn two_full_manifests_of_one_phone_built_at_once_are_numbered_one_after_the_other() {
    let server = Server::start();
    let (phone, _dir, id) = enrolled_phone(&server);
    let other = RefCell::new(None);
    let later = full_manifest_with_change_between(&server, &phone, &id, &|| {
        *other.borrow_mut() = server.manifest(&phone, &id, None);
    });
    let earlier = other.into_inner().expect("the other request's full manifest");
    phone.apply_manifest(&earlier).unwrap();
    // Kept after the other one, so numbered after it: the phone takes it.
    phone.apply_manifest(&later).unwrap();
    assert_eq!(server.manifest(&phone, &id, phone.status().unwrap().manifest_sequence), None);
}

#[test]
fn a_copy_of_a_manifest_request_arriving_while_it_is_answered_is_refused_before_any_work() {
    let server = Server::start();
    let (phone, _dir, id) = enrolled_phone(&server);
    let path = format!("/v1/devices/{id}/manifest?date={}", server.scene.date);
    let signature = phone.sign_request("GET", &path, b"").unwrap();
    let request = server.dispatch.verify_device_request(&id, Some(&signature), "GET", &path, b"").unwrap();
    let copy = std::cell::Cell::new(0);
    let envelope = server
        .dispatch
        .manifest_or_refuse_full(&request, server.scene.date, None, None, &|| {
            // The copy reaches the service before the first is recorded as answered.
            let (status, _) = get_with(&server.url(&path), &[(REQUEST_HEADER, &signature)]);
            copy.set(status);
            Ok(())
        })
        .unwrap();
    assert_eq!(copy.get(), 401, "the copy was answered");
    phone.apply_manifest(&envelope.unwrap()).unwrap();
}
