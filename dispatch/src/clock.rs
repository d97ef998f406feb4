//! A clock that is set, not read from the system: the demo's simulated day, and every test and
//! benchmark that runs dispatch and phones on a chosen instant. Dispatch takes it through
//! [`Dispatch::with_clock`](crate::Dispatch::with_clock) and phones through `Device::open`, so both
//! sides of a simulated day agree on the time whatever the date the program runs on.
//!
//! Wall and monotonic readings move together (no one sets this clock back behind the phones').

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use doorstep_core::device::{Clock, HostError};

/// A settable clock shared by dispatch and simulated phones.
#[derive(Debug)]
pub struct SetClock(AtomicI64);

impl SetClock {
    pub fn at(t: DateTime<Utc>) -> SetClock {
        SetClock(AtomicI64::new(t.timestamp_millis()))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        self.0.store(t.timestamp_millis(), Ordering::SeqCst);
    }

    pub fn advance(&self, by: TimeDelta) {
        self.0.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }

    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap_or_default()
    }
}

impl Clock for SetClock {
    fn wall_time_ms(&self) -> Result<i64, HostError> {
        Ok(self.0.load(Ordering::SeqCst))
    }

    fn monotonic_ms(&self) -> Result<i64, HostError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_reads_what_it_was_set_to_and_advances() {
        let t = DateTime::parse_from_rfc3339("2030-03-31T00:59:59Z").unwrap().to_utc();
        let clock = SetClock::at(t);
        assert_eq!(clock.now(), t);
        clock.advance(TimeDelta::seconds(2));
        assert_eq!(clock.wall_time_ms().unwrap(), t.timestamp_millis() + 2_000);
        assert_eq!(clock.monotonic_ms().unwrap(), clock.wall_time_ms().unwrap());
        clock.set(t);
        assert_eq!(clock.now(), t);
    }
}
