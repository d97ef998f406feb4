//! Trusted time: never below the highest time ever seen (the wall clock, server times from signed
//! manifests and acks, and the wall clock advanced by the monotonic clock within this process).
//! Setting the phone's clock back therefore cannot revive an expired code.

use super::Clock;
use crate::{CoreError, Result};

/// A wall clock behind trusted time by more than this is reported as set back.
pub const SKEW_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// One reading of the clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeReading {
    pub wall_ms: i64,
    pub trusted_ms: i64,
}

impl TimeReading {
    /// Wall minus trusted time (negative when the wall clock is behind).
    pub fn skew_ms(&self) -> i64 {
        self.wall_ms - self.trusted_ms
    }

    pub fn wall_clock_set_back(&self) -> bool {
        self.skew_ms() < -SKEW_TOLERANCE_MS
    }
}

/// In-memory anchor of the monotonic clock: (monotonic reading, trusted time then).
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct MonotonicAnchor(Option<(i64, i64)>);

impl MonotonicAnchor {
    /// Reads the clocks and combines them with the high-water mark (the device keeps it in memory
    /// and persists it in every write transaction).
    pub(crate) fn read(&mut self, clock: &dyn Clock, high_water: i64) -> Result<TimeReading> {
        let wall_ms = clock.wall_time_ms().map_err(|e| CoreError::Clock(e.0))?;
        let mono = clock.monotonic_ms().map_err(|e| CoreError::Clock(e.0))?;
        let mut trusted_ms = wall_ms.max(high_water);
        if let Some((anchor_mono, anchor_trusted)) = self.0
            && mono >= anchor_mono
        {
            trusted_ms = trusted_ms.max(anchor_trusted.saturating_add(mono - anchor_mono));
        }
        self.0 = Some((mono, trusted_ms));
        Ok(TimeReading { wall_ms, trusted_ms })
    }
}
