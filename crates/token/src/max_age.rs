//! How long a second factor counts: the one type for the step-up window
//! (docs/design.md "The step-up rule"), used by auth (support's window,
//! what it tells clients) and deploy (the padlock).

use std::fmt;

/// A maximum age of a session's second factor, in whole seconds. A
/// factor verified at `mfa_at` is fresh at `now` while `now - mfa_at` is
/// at most the age; at exactly the age it still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxAge(i64);

impl MaxAge {
    /// Padlocked actions: eight hours.
    pub const STEP_UP: MaxAge = MaxAge(8 * 60 * 60);
    /// Support's own actions: one hour.
    pub const SUPPORT: MaxAge = MaxAge(60 * 60);

    /// `secs` as a maximum age; `None` if negative.
    pub const fn from_secs(secs: i64) -> Option<MaxAge> {
        if secs < 0 { None } else { Some(MaxAge(secs)) }
    }

    pub const fn secs(self) -> i64 {
        self.0
    }

    /// Until when a factor verified at `mfa_at` counts.
    pub const fn expires_at(self, mfa_at: i64) -> i64 {
        mfa_at.saturating_add(self.0)
    }

    /// Whether a factor verified at `mfa_at` still counts at `now`.
    pub const fn is_fresh(self, mfa_at: i64, now: i64) -> bool {
        now.saturating_sub(mfa_at) <= self.0
    }
}

impl fmt::Display for MaxAge {
    /// Seconds, as the `max_age` of an ErrorInfo or an RFC 9470 challenge.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_up_to_and_including_the_age() {
        let age = MaxAge::STEP_UP;
        assert_eq!(age.secs(), 28_800);
        assert!(age.is_fresh(1_000, 1_000 + 28_800));
        assert!(!age.is_fresh(1_000, 1_000 + 28_801));
        assert_eq!(age.expires_at(1_000), 29_800);
        assert_eq!(age.to_string(), "28800");
        assert_eq!(MaxAge::from_secs(-1), None);
        assert_eq!(MaxAge::from_secs(0).map(|a| a.is_fresh(5, 5)), Some(true));
        assert!(MaxAge::SUPPORT < MaxAge::STEP_UP);
    }
}
