//! How long a second factor counts: the one type for the step-up window
//! (docs/design.md "The step-up rule"), used by deploy (the padlock, and
//! per-action overrides) and auth (support's window, what it tells
//! clients).

use std::fmt;

/// How old a verified second factor may be: whole seconds, always
/// positive. A factor verified at `mfa_at` is fresh at `now` while
/// `now - mfa_at` is at most the age; at exactly the age it still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxAge(i64);

impl MaxAge {
    /// Padlocked actions: eight hours unless the policy says otherwise.
    pub const DEFAULT: MaxAge = MaxAge(8 * 60 * 60);
    /// Support's own actions: one hour.
    pub const SUPPORT: MaxAge = MaxAge(60 * 60);

    /// `None` unless `secs` is positive.
    pub const fn from_secs(secs: i64) -> Option<MaxAge> {
        if secs > 0 { Some(MaxAge(secs)) } else { None }
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
    /// "8 hours", "1 hour", "30 minutes", "90 seconds": the largest whole
    /// unit, as a person would say it in a message. (An ErrorInfo's or a
    /// challenge's `max_age` is [`MaxAge::secs`].)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0;
        let (n, unit) = if seconds % 3600 == 0 {
            (seconds / 3600, "hour")
        } else if seconds % 60 == 0 {
            (seconds / 60, "minute")
        } else {
            (seconds, "second")
        };
        if n == 1 {
            write!(f, "1 {unit}")
        } else {
            write!(f, "{n} {unit}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_up_to_and_including_the_age() {
        let age = MaxAge::DEFAULT;
        assert_eq!(age.secs(), 28_800);
        assert!(age.is_fresh(1_000, 1_000 + 28_800));
        assert!(!age.is_fresh(1_000, 1_000 + 28_801));
        assert_eq!(age.expires_at(1_000), 29_800);
        assert!(MaxAge::SUPPORT < MaxAge::DEFAULT);
    }

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        let said = |secs| MaxAge::from_secs(secs).unwrap().to_string();
        assert_eq!(said(28_800), "8 hours");
        assert_eq!(said(3_600), "1 hour");
        assert_eq!(said(1_800), "30 minutes");
        assert_eq!(said(90), "90 seconds");
        assert_eq!(said(1), "1 second");
        assert_eq!(MaxAge::from_secs(0), None);
        assert_eq!(MaxAge::from_secs(-1), None);
    }
}
