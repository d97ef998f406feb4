//! Phones holding more than one delivery day, at dispatch: every manifest a phone is issued (full
//! manifests too) is in its journal, served in order before anything new, so loading tomorrow
//! never skips a change to today; changes of a day reach the phones that say they hold it
//! (`held=`), and a phone that says nothing (an earlier build, one day at a time) only its last.

use chrono::NaiveDate;
use doorstep_core::device::Device;
use doorstep_tests::http::Server;

/// The manifest path for `date`, from the phone's sequence, naming the days it holds when `say_held`.
fn path(phone: &Device, id: &str, date: NaiveDate, say_held: bool) -> String {
    let status = phone.status().unwrap();
    let mut path = format!("/v1/devices/{id}/manifest?date={date}");
    if let Some(seq) = status.manifest_sequence {
        path.push_str(&format!("&since={seq}"));
    }
    if say_held && !status.days.is_empty() {
        let days: Vec<String> = status.days.iter().map(|d| d.delivery_date.to_string()).collect();
        path.push_str(&format!("&held={}", days.join(",")));
    }
    path
}

/// Applies every manifest dispatch has for the phone when it asks for `date`; returns them.
fn sync(server: &Server, phone: &Device, id: &str, date: NaiveDate) -> Vec<Vec<u8>> {
    let mut applied = Vec::new();
    loop {
        let (status, body) = server.signed_get(phone, &path(phone, id, date, true));
        match status {
            204 => return applied,
            200 => {
                phone.apply_manifest(&body).unwrap();
                applied.push(body);
            }
            other => panic!("HTTP {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
}

/// Imports parcel `id` (barcode `barcode`) for route R1 on `date` and lets it leave the warehouse.
fn depart(server: &Server, id: &str, barcode: &str, date: NaiveDate) {
    let mut parcel = server.parcels(1).pop().unwrap();
    (parcel.parcel_id, parcel.barcode, parcel.delivery_date) = (id.into(), barcode.into(), date);
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&[parcel]).unwrap());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.op_post(&format!("/v1/parcels/{id}/departed"), b"").0, 200);
}

#[test]
fn a_change_to_today_pending_when_tomorrow_loads_reaches_the_phone_first() {
    let server = Server::start();
    let (phone, _dir, id) = server.day();
    let (today, tomorrow) = (server.scene.date, server.scene.date.succ_opt().unwrap());
    depart(&server, "P8", "BC8", today);
    depart(&server, "T0", "TBC0", tomorrow);
    // The phone asks for tomorrow with today's change still pending: it gets the change first.
    let applied = sync(&server, &phone, &id, tomorrow);
    assert_eq!(applied.len(), 2);
    assert_eq!(phone.parcel("P8").unwrap().delivery_date, today);
    assert_eq!(phone.parcel("T0").unwrap().delivery_date, tomorrow);
}

#[test]
fn a_full_manifest_lost_on_the_way_is_served_again_from_the_journal() {
    let server = Server::start();
    let (phone, _dir, id) = server.day();
    let (today, tomorrow) = (server.scene.date, server.scene.date.succ_opt().unwrap());
    depart(&server, "T0", "TBC0", tomorrow);
    let asked = path(&phone, &id, tomorrow, true);
    let (status, lost) = server.signed_get(&phone, &asked);
    assert_eq!(status, 200);
    // Meanwhile a change to today; the phone asks again from where it is.
    depart(&server, "P8", "BC8", today);
    let applied = sync(&server, &phone, &id, tomorrow);
    assert_eq!(applied.first(), Some(&lost), "the same full manifest, from the journal");
    assert_eq!(applied.len(), 2);
    assert!(phone.parcel("P8").is_ok() && phone.parcel("T0").is_ok());
}

#[test]
fn changes_reach_a_phone_for_the_days_it_says_it_holds_and_an_earlier_build_only_for_its_last() {
    let server = Server::start();
    let (today, tomorrow) = (server.scene.date, server.scene.date.succ_opt().unwrap());
    let (new_phone, _dir, new_id) = server.day();
    let dir = tempfile::tempdir().unwrap();
    let (old_phone, old_id) = server.synced_phone("R1", &dir.path().join("old.db"));
    depart(&server, "T0", "TBC0", tomorrow);
    sync(&server, &new_phone, &new_id, tomorrow);
    // An earlier build asks for tomorrow without naming what it holds (it replaces its day).
    let (status, _) = server.signed_get(&old_phone, &path(&old_phone, &old_id, tomorrow, false));
    assert_eq!(status, 200);
    let old_seq = old_phone.status().unwrap().manifest_sequence.unwrap() + 1;

    depart(&server, "P8", "BC8", today);
    assert_eq!(sync(&server, &new_phone, &new_id, today).len(), 1, "the phone holding today gets its change");
    // The earlier build would refuse a delta for a day before its own: it is not journalled one.
    let (status, body) =
        server.signed_get(&old_phone, &format!("/v1/devices/{old_id}/manifest?date={tomorrow}&since={old_seq}"));
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
}
