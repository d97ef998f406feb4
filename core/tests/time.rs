//! Trusted time: setting the phone's clock back cannot revive an expired code, and trusted time
//! never goes backwards, across restarts too.

mod common;

use chrono::TimeDelta;
use common::*;
use doorstep_core::device::{HandoverOutcome, Validity};

#[test]
fn rolling_the_clock_back_cannot_revive_an_expired_code() {
    let mut w = World::with_parcels(2);
    w.clock.advance(TimeDelta::hours(16)); // 00:00 next day: the code expired at 23:00
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(), HandoverOutcome::Expired { .. }));
    // The user sets the phone's clock back to the morning (monotonic time keeps running).
    w.clock.set_wall(morning());
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(), HandoverOutcome::Expired { .. }));
    let status = w.device.status().unwrap();
    assert!(status.clock.wall_clock_set_back);
    assert!(status.clock.skew_ms < -15 * 3600 * 1000);
    // Restarted app, clock still wrong: the persisted high-water mark holds.
    w.reopen();
    assert!(matches!(w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap(), HandoverOutcome::Expired { .. }));
    assert_eq!(w.device.parcel("P00000").unwrap().attempts_used, 0);
}

#[test]
fn trusted_time_never_goes_backwards() {
    let mut w = World::with_parcels(1);
    let mut last = w.device.time().unwrap().trusted_ms;
    let jumps = [3_600_000i64, -7_200_000, 60_000, -86_400_000, 1, 0, -1, 10_000_000];
    for (i, jump) in jumps.into_iter().enumerate() {
        w.clock.wall.fetch_add(jump, std::sync::atomic::Ordering::SeqCst);
        if i % 3 == 2 {
            w.reopen();
        }
        // A write persists the reading.
        let _ = w.device.record_failure(&w.scan(0), doorstep_core::protocol::FailureReason::NoAccess, None, None);
        let now = w.device.time().unwrap().trusted_ms;
        assert!(now >= last, "trusted time went back from {last} to {now} after a jump of {jump}");
        last = now;
    }
}

#[test]
fn the_monotonic_clock_keeps_trusted_time_moving_while_the_wall_clock_is_set_back() {
    let w = World::with_parcels(1);
    let start = w.device.time().unwrap().trusted_ms;
    w.clock.set_wall(morning() - TimeDelta::days(30));
    w.clock.mono.fetch_add(60_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(w.device.time().unwrap().trusted_ms, start + 60_000);
}

#[test]
fn signed_server_time_raises_trusted_time() {
    let mut w = World::with_parcels(1);
    // Dispatch issues a manifest two hours "ahead" of the phone's slow clock.
    let mut spec = w.spec(doorstep_core::protocol::ManifestKind::Delta);
    spec.issued_at = w.clock.now() + TimeDelta::hours(2);
    let signed = w.sign(&spec);
    w.device.apply_manifest(&signed).unwrap();
    let t = w.device.time().unwrap();
    assert_eq!(t.trusted_ms, spec.issued_at.timestamp_millis());
    assert_eq!(t.skew_ms(), -2 * 3600 * 1000);
}

#[test]
fn a_code_seen_expired_by_reads_alone_stays_expired_after_a_restart_with_the_clock_set_back() {
    let mut w = World::with_parcels(1);
    w.clock.advance(TimeDelta::hours(16)); // 00:00 next day: the code expired at 23:00
    // Only reads happen: the driver looks at the parcel list, nothing is written.
    assert_eq!(w.device.parcel("P00000").unwrap().validity, Validity::Expired);
    // The app is killed, the phone's clock set back to the morning, the app started again.
    w.clock.set_wall(morning());
    w.reopen();
    let out = w.device.verify_code(&w.scan(0), &w.code(0), None).unwrap();
    assert!(matches!(out, HandoverOutcome::Expired { .. }), "{out:?}");
}
