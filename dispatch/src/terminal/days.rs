//! Which delivery day `doorstep device sync` loads, and what it tells the user first. A phone
//! holds up to [`MAX_HELD_DAYS`] days; loading another day never touches the days it holds, so
//! the only mistakes left to catch are a date the phone would refuse (before every held day, or
//! one day too many) and a date far from today (a typo): those are refused before dispatch is
//! asked, and nothing changes.

use chrono::NaiveDate;
use doorstep_core::device::{MAX_HELD_DAYS, Status};

use super::{CliResult, bad_input};

/// How far from today (in the held days' zone) a sync may reach.
pub const MAX_DAYS_AWAY: i64 = 7;

/// The day to sync (`date`, or today in the zone of the held days, UTC when none is held) and a
/// sentence saying what syncing it does when it is not today.
pub fn plan(status: &Status, date: Option<NaiveDate>) -> CliResult<(NaiveDate, Option<String>)> {
    let zone_name = status.days.last().map_or("UTC", |d| d.time_zone.as_str());
    let zone: chrono_tz::Tz = zone_name.parse().unwrap_or(chrono_tz::UTC);
    let today = status.clock.trusted_time.with_timezone(&zone).date_naive();
    let date = date.unwrap_or(today);
    let held: Vec<String> = status
        .days
        .iter()
        .map(|d| {
            format!("{} ({} to hand over)", d.delivery_date, d.parcels.pending + d.parcels.failed + d.parcels.locked)
        })
        .collect();
    let holds = status.days.iter().any(|d| d.delivery_date == date);
    let away = (date - today).num_days();
    if !holds {
        if away.abs() > MAX_DAYS_AWAY {
            return Err(bad_input(format!(
                "{date} is {} in {zone_name}, more than {MAX_DAYS_AWAY} days from today ({today}): check --date. \
                 Nothing was changed",
                relation(away)
            )));
        }
        if let Some(oldest) = status.days.first()
            && date < oldest.delivery_date
        {
            return Err(bad_input(format!(
                "this device holds {}; {date} is before them and would be refused. Check --date. Nothing was changed",
                held.join(", ")
            )));
        }
        if status.days.len() >= MAX_HELD_DAYS {
            return Err(bad_input(format!(
                "this device already holds {}, the most it holds at once; a day is let go once its parcels are \
                 handed over or expired. Nothing was changed",
                held.join(", ")
            )));
        }
    }
    if date == today {
        return Ok((date, None));
    }
    let what = if holds {
        "this device holds it already: its changes are fetched".to_owned()
    } else if held.is_empty() {
        "its parcels can be handed over only within that day".to_owned()
    } else {
        format!(
            "its route loads beside {}, which stay deliverable; each day's parcels can be handed over only within \
             that day",
            held.join(", ")
        )
    };
    Ok((date, Some(format!("{date} is {} in {zone_name}: {what}", relation(away)))))
}

fn relation(days: i64) -> String {
    match days {
        0 => "today".into(),
        1 => "tomorrow".into(),
        -1 => "yesterday".into(),
        n if n > 0 => format!("in {n} days"),
        n => format!("{} days ago", -n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use doorstep_core::device::{ClockStatus, HeldDay, ParcelCounts};

    fn status(now: chrono::DateTime<Utc>, days: &[(&str, u32)]) -> Status {
        Status {
            enrolled: true,
            device_id: Some("d".into()),
            route_id: None,
            delivery_date: None,
            days: days
                .iter()
                .map(|(d, pending)| HeldDay {
                    delivery_date: d.parse().unwrap(),
                    route_id: "R1".into(),
                    time_zone: "Europe/Berlin".into(),
                    parcels: ParcelCounts { pending: *pending, ..Default::default() },
                })
                .collect(),
            manifest_sequence: None,
            last_sync: None,
            parcels: ParcelCounts::default(),
            parcels_needing_code: 0,
            pending_receipts: 0,
            oldest_pending_receipt_age: None,
            rejected_receipts: 0,
            upload_failures: 0,
            next_upload_after: None,
            clock: ClockStatus {
                wall_time: now,
                trusted_time: now,
                skew_ms: 0,
                wall_clock_set_back: false,
                last_server_time: None,
            },
        }
    }

    fn day(s: &str) -> Option<NaiveDate> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn today_is_the_held_zones_date_and_needs_no_word() {
        // 23:30 UTC on the 26th is already the 27th in Berlin.
        let s = status(Utc.with_ymd_and_hms(2026, 11, 26, 23, 30, 0).unwrap(), &[("2026-11-27", 3)]);
        assert_eq!(plan(&s, None).unwrap(), (day("2026-11-27").unwrap(), None));
    }

    #[test]
    fn tomorrow_says_it_loads_beside_the_held_days() {
        let s = status(Utc.with_ymd_and_hms(2026, 11, 27, 17, 0, 0).unwrap(), &[("2026-11-27", 8)]);
        let (date, note) = plan(&s, day("2026-11-28")).unwrap();
        assert_eq!(date, day("2026-11-28").unwrap());
        let note = note.unwrap();
        assert!(
            note.starts_with(
                "2026-11-28 is tomorrow in Europe/Berlin: its route loads beside 2026-11-27 (8 to hand over)"
            ),
            "{note}"
        );
    }

    #[test]
    fn a_typo_far_away_a_day_before_the_held_ones_and_a_day_too_many_are_refused() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 17, 0, 0).unwrap();
        let s = status(now, &[("2026-11-27", 8)]);
        let far = plan(&s, day("2027-11-28")).unwrap_err().to_string();
        assert!(far.contains("more than 7 days") && far.contains("Nothing was changed"), "{far}");
        let before = plan(&s, day("2026-11-26")).unwrap_err().to_string();
        assert!(before.contains("before them"), "{before}");
        let full = status(now, &[("2026-11-27", 8), ("2026-11-28", 3), ("2026-11-29", 1)]);
        let too_many = plan(&full, day("2026-11-30")).unwrap_err().to_string();
        assert!(too_many.contains("the most it holds"), "{too_many}");
        // A day it holds is always fine.
        assert!(plan(&full, day("2026-11-29")).unwrap().1.unwrap().contains("holds it already"));
    }
}
