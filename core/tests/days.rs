//! A phone holding more than one delivery day: tomorrow's route loads beside today's, each day
//! keeps its own window, attempts and purge, a full manifest replaces only its own day, and a day
//! is let go only once it is over.

mod common;

use chrono::TimeDelta;
use common::*;
use doorstep_core::CoreError;
use doorstep_core::device::{HandoverOutcome, MAX_HELD_DAYS, PURGE_GRACE_MS, ParcelState};
use doorstep_core::error::ManifestRejection;
use doorstep_core::issuer::IssuedParcel;
use doorstep_core::protocol::{Holder, ManifestKind};

/// Parcels `ids` (each with a customer code) for the day `offset` days after the test's date.
fn parcels_for(w: &mut World, ids: std::ops::Range<usize>, offset: i64) -> Vec<IssuedParcel> {
    ids.map(|i| {
        w.add_parcel(i, &[Holder::Customer]);
        let mut p = w.parcels.pop().unwrap();
        p.not_before += TimeDelta::days(offset);
        p.not_after += TimeDelta::days(offset);
        p
    })
    .collect()
}

/// The next manifest of `kind` for the day `offset` days after the test's date, carrying `parcels`.
fn manifest(w: &mut World, kind: ManifestKind, parcels: &[IssuedParcel], offset: i64) -> Vec<u8> {
    let mut spec = w.spec(kind);
    spec.delivery_date = date() + TimeDelta::days(offset);
    spec.parcels = parcels.to_vec();
    w.sign(&spec)
}

fn full(w: &mut World, parcels: &[IssuedParcel], offset: i64) -> Vec<u8> {
    manifest(w, ManifestKind::Full, parcels, offset)
}

/// A world holding today's parcels 0..3 and tomorrow's parcels 3..6.
fn two_days() -> (World, Vec<IssuedParcel>, Vec<IssuedParcel>) {
    let mut w = World::new();
    let today = parcels_for(&mut w, 0..3, 0);
    let tomorrow = parcels_for(&mut w, 3..6, 1);
    let m = full(&mut w, &today, 0);
    w.device.apply_manifest(&m).unwrap();
    let m = full(&mut w, &tomorrow, 1);
    let report = w.device.apply_manifest(&m).unwrap();
    assert_eq!((report.added, report.removed), (3, 0), "{report:?}");
    (w, today, tomorrow)
}

/// Just after the test's date has ended in every zone (at UTC-12: noon UTC the next day) and the
/// purge grace has passed.
fn after_today_everywhere() -> chrono::DateTime<chrono::Utc> {
    (date() + TimeDelta::days(1)).and_hms_opt(12, 0, 0).unwrap().and_utc()
        + TimeDelta::milliseconds(PURGE_GRACE_MS)
        + TimeDelta::minutes(1)
}

fn held_dates(w: &World) -> Vec<String> {
    w.device.status().unwrap().days.iter().map(|d| d.delivery_date.to_string()).collect()
}

fn rejection(result: Result<doorstep_core::device::ApplyReport, CoreError>) -> ManifestRejection {
    match result {
        Err(CoreError::ManifestRejected(r)) => r,
        other => panic!("expected a manifest rejection, got {other:?}"),
    }
}

#[test]
fn tomorrows_route_loads_beside_todays_and_todays_parcels_stay_deliverable() {
    let (mut w, _, _) = two_days();
    w.reopen();
    let outcome = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "{outcome:?}");
    // Tomorrow's parcel is on the phone, but its window has not begun.
    let outcome = w.device.verify_code(&w.scan(3), &w.code(3), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::NotYetValid { .. }), "{outcome:?}");
    assert_eq!(w.device.parcel("P00003").unwrap().delivery_date, date() + TimeDelta::days(1));

    let status = w.device.status().unwrap();
    assert_eq!(held_dates(&w), ["2026-11-26", "2026-11-27"]);
    assert_eq!(status.delivery_date, Some(date()));
    assert_eq!((status.days[0].parcels.delivered, status.days[0].parcels.pending), (1, 2));
    assert_eq!((status.days[1].parcels.delivered, status.days[1].parcels.pending), (0, 3));
    assert_eq!(status.days[1].time_zone, "Europe/Berlin");
}

#[test]
fn a_full_manifest_replaces_only_its_own_day() {
    let (mut w, today, _) = two_days();
    let m = full(&mut w, &today[..1], 0);
    let report = w.device.apply_manifest(&m).unwrap();
    assert_eq!((report.removed, report.updated), (2, 1));
    let ids: Vec<String> = w.device.parcels().unwrap().into_iter().map(|p| p.parcel_id).collect();
    assert_eq!(ids, ["P00000", "P00003", "P00004", "P00005"]);
    // And tomorrow's again leaves today's alone.
    let tomorrow_again = parcels_for(&mut w, 6..7, 1);
    let m = full(&mut w, &tomorrow_again, 1);
    let report = w.device.apply_manifest(&m).unwrap();
    assert_eq!((report.removed, report.added), (3, 1));
    let ids: Vec<String> = w.device.parcels().unwrap().into_iter().map(|p| p.parcel_id).collect();
    assert_eq!(ids, ["P00000", "P00006"]);
}

#[test]
fn loading_tomorrow_gives_back_no_attempt_spent_today() {
    let mut w = World::new();
    let today = parcels_for(&mut w, 0..2, 0);
    let m = full(&mut w, &today, 0);
    w.device.apply_manifest(&m).unwrap();
    for _ in 0..2 {
        let outcome = w.device.verify_code(&w.scan(0), &w.wrong_code(0), None).unwrap();
        assert!(matches!(outcome, HandoverOutcome::WrongCode { .. }), "{outcome:?}");
    }
    // Dispatch takes parcel 0 off today's route, tomorrow's route is loaded, then parcel 0 comes
    // back today: the two attempts stay spent.
    let m = full(&mut w, &today[1..], 0);
    w.device.apply_manifest(&m).unwrap();
    let tomorrow = parcels_for(&mut w, 2..4, 1);
    let m = full(&mut w, &tomorrow, 1);
    w.device.apply_manifest(&m).unwrap();
    let m = full(&mut w, &today, 0);
    w.device.apply_manifest(&m).unwrap();
    let p = w.device.parcel("P00000").unwrap();
    assert_eq!((p.attempts_used, p.state), (2, ParcelState::Pending));
    // Tomorrow's parcels have their own attempts.
    assert_eq!(w.device.parcel("P00002").unwrap().attempts_used, 0);
}

#[test]
fn a_day_is_let_go_once_over_and_its_parcels_not_handed_over_expire_into_receipts() {
    let (w, _, _) = two_days();
    let outcome = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "{outcome:?}");
    // Before today's window ends nothing is let go.
    w.clock.set_wall(end_of_day() - TimeDelta::minutes(1));
    assert_eq!(w.device.purge_expired().unwrap().expired, 0);
    assert_eq!(held_dates(&w), ["2026-11-26", "2026-11-27"]);
    let receipts_before = w.device.status().unwrap().pending_receipts;

    w.clock.set_wall(after_today_everywhere());
    let report = w.device.purge_expired().unwrap();
    assert_eq!(report.expired, 2);
    assert_eq!(held_dates(&w), ["2026-11-27"]);
    let ids: Vec<String> = w.device.parcels().unwrap().into_iter().map(|p| p.parcel_id).collect();
    assert_eq!(ids, ["P00003", "P00004", "P00005"]);
    // Two expiry receipts were made before the day was let go.
    assert_eq!(w.device.status().unwrap().pending_receipts, receipts_before + 2);
}

#[test]
fn the_newest_day_is_never_let_go_even_when_over() {
    let (w, _, _) = two_days();
    w.clock.set_wall(end_of_day() + TimeDelta::days(2));
    w.device.purge_expired().unwrap();
    assert_eq!(held_dates(&w), ["2026-11-27"]);
    assert_eq!(w.device.parcels().unwrap().iter().filter(|p| p.state == ParcelState::Expired).count(), 3);
}

#[test]
fn a_day_beyond_the_most_held_is_taken_without_applying_and_later_changes_still_arrive() {
    let (mut w, today, _) = two_days();
    assert_eq!(MAX_HELD_DAYS, 3);
    let third = parcels_for(&mut w, 6..7, 2);
    let m = full(&mut w, &third, 2);
    w.device.apply_manifest(&m).unwrap();
    let before = w.device.parcels().unwrap();
    let fourth = parcels_for(&mut w, 7..8, 3);
    let m = full(&mut w, &fourth, 3);
    let report = w.device.apply_manifest(&m).unwrap();
    let why = report.not_applied.unwrap();
    assert!(why.contains("2026-11-26, 2026-11-27, 2026-11-28") && why.contains("the most it holds"), "{why}");
    assert_eq!(w.device.parcels().unwrap(), before, "nothing of the fourth day applied");
    assert_eq!(held_dates(&w).len(), 3);
    // Taken: the next change, to a day it holds, applies (refusing it would have jammed the journal).
    let m = manifest(&mut w, ManifestKind::Delta, &today[..1], 0);
    assert_eq!(w.device.apply_manifest(&m).unwrap().updated, 1);
}

#[test]
fn a_delta_for_a_day_let_go_only_moves_the_sequence_on() {
    let (mut w, today, tomorrow) = two_days();
    w.clock.set_wall(after_today_everywhere());
    w.device.purge_expired().unwrap();
    assert_eq!(held_dates(&w), ["2026-11-27"]);
    // Dispatch still journals a change of today's route to this phone.
    let m = manifest(&mut w, ManifestKind::Delta, &today[..1], 0);
    let report = w.device.apply_manifest(&m).unwrap();
    assert_eq!((report.added, report.updated, report.sequence), (0, 0, w.sequence));
    assert!(w.device.parcel("P00000").is_err());
    assert_eq!(w.device.status().unwrap().manifest_sequence, Some(w.sequence));
    // The next delta, for the held day, follows it.
    let m = manifest(&mut w, ManifestKind::Delta, &tomorrow[..1], 1);
    assert_eq!(w.device.apply_manifest(&m).unwrap().updated, 1);
}

#[test]
fn a_delta_moves_a_parcel_between_held_days_with_its_attempts() {
    let (mut w, today, _) = two_days();
    let outcome = w.device.verify_code(&w.scan(1), &w.wrong_code(1), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::WrongCode { .. }), "{outcome:?}");
    // Dispatch moves parcel 1 to tomorrow.
    let mut moved = today[1].clone();
    moved.not_before += TimeDelta::days(1);
    moved.not_after += TimeDelta::days(1);
    let m = manifest(&mut w, ManifestKind::Delta, &[moved], 1);
    w.device.apply_manifest(&m).unwrap();
    let p = w.device.parcel("P00001").unwrap();
    assert_eq!((p.delivery_date, p.attempts_used), (date() + TimeDelta::days(1), 1));
    let outcome = w.device.verify_code(&w.scan(1), &w.code(1), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::NotYetValid { .. }), "{outcome:?}");
    let status = w.device.status().unwrap();
    assert_eq!((status.days[0].parcels.pending, status.days[1].parcels.pending), (2, 4));
}

#[test]
fn a_delta_for_a_day_not_held_only_moves_the_sequence_on() {
    // Dispatch journals the changes of a day it believes the phone holds (the phone refused that
    // day's full manifest, or let it go): the phone skips them instead of refusing every delta
    // after them.
    let (mut w, _, _) = two_days();
    let later = parcels_for(&mut w, 6..7, 2);
    let m = manifest(&mut w, ManifestKind::Delta, &later, 2);
    let report = w.device.apply_manifest(&m).unwrap();
    assert_eq!((report.added, report.sequence), (0, w.sequence));
    assert!(w.device.parcel("P00006").is_err());
    assert_eq!(held_dates(&w), ["2026-11-26", "2026-11-27"]);
}

#[test]
fn a_full_manifest_that_skips_changes_to_another_held_day_is_refused() {
    let (mut w, _, tomorrow) = two_days();
    let before = (w.device.parcels().unwrap(), w.device.status().unwrap().manifest_sequence);
    // A delta for tomorrow the phone never got (sequence 3), then a full manifest of today (4).
    w.sequence += 1;
    let m = full(&mut w, &tomorrow[..0], 0);
    let r = rejection(w.device.apply_manifest(&m));
    assert_eq!(r, ManifestRejection::MissedChanges { current: 2, got: 4 });
    assert_eq!((w.device.parcels().unwrap(), w.device.status().unwrap().manifest_sequence), before);
}

#[test]
fn a_day_without_parcels_is_not_let_go_before_it_has_ended() {
    // Nothing has left the warehouse for today yet when tomorrow's route is loaded.
    let mut w = World::new();
    let m = full(&mut w, &[], 0);
    w.device.apply_manifest(&m).unwrap();
    let tomorrow = parcels_for(&mut w, 0..2, 1);
    let m = full(&mut w, &tomorrow, 1);
    w.device.apply_manifest(&m).unwrap();
    w.device.purge_expired().unwrap();
    assert_eq!(held_dates(&w), ["2026-11-26", "2026-11-27"]);
    // Today's parcels then arrive in a delta, and are deliverable.
    let today = parcels_for(&mut w, 2..3, 0);
    let m = manifest(&mut w, ManifestKind::Delta, &today, 0);
    assert_eq!(w.device.apply_manifest(&m).unwrap().added, 1);
    let outcome = w.device.verify_code(&w.scan(2), &w.code(2), None).unwrap();
    assert!(matches!(outcome, HandoverOutcome::Accepted { .. }), "{outcome:?}");
    // Once today has ended everywhere (and the purge grace passed), it is let go.
    w.clock.set_wall(after_today_everywhere() - TimeDelta::minutes(2));
    w.device.purge_expired().unwrap();
    assert_eq!(held_dates(&w), ["2026-11-26", "2026-11-27"], "today has not ended at UTC-12 yet");
    w.clock.set_wall(after_today_everywhere());
    w.device.purge_expired().unwrap();
    assert_eq!(held_dates(&w), ["2026-11-27"]);
}
