//! Time as a parameter. Everything that reads the time gets a [`Clock`], so
//! tests of expiry, the step-up window, TOTP steps and lockouts move a
//! [`ManualClock`] instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;

    /// Whole seconds since the Unix epoch, as JWT claims count them.
    fn unix(&self) -> i64 {
        self.now().timestamp()
    }
}

/// The clock every service shares.
pub type SharedClock = Arc<dyn Clock>;

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The real time shifted by a fixed number of seconds: for drills and
/// end-to-end tests of time windows against real binaries.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    offset_secs: i64,
}

impl OffsetClock {
    pub fn new(offset_secs: i64) -> Self {
        Self { offset_secs }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + chrono::Duration::seconds(self.offset_secs)
    }
}

/// A clock that only moves when told to; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn at_unix(seconds: i64) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(seconds.saturating_mul(1000))),
        }
    }

    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    pub fn set_unix(&self, seconds: i64) {
        self.millis
            .store(seconds.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let millis = self.millis.load(Ordering::SeqCst);
        Utc.timestamp_millis_opt(millis)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_unix(1_000);
        assert_eq!(clock.unix(), 1_000);
        clock.advance(std::time::Duration::from_secs(28_801));
        assert_eq!(clock.unix(), 29_801);
        clock.set_unix(5);
        assert_eq!(clock.unix(), 5);
    }
}
