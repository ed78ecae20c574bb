//! Which TOTP step a simulated user presents next, so that a run never
//! reuses a code.
//!
//! The auth service accepts the code of the current step and one step
//! either side (RFC 6238 §5.2), and only for a step later than the last one
//! it accepted for that user (docs/design.md "Second factors"). So at step `T` a
//! user whose last accepted step is `L` can present the steps in
//! `max(L + 1, T - 1) ..= T + 1`: at most three codes, and after those one
//! new code per 30 s step. [`next_step`] picks the lowest of them, so a
//! user's window is used up in order, and [`budget`] counts what a run can
//! use at most.
//!
//! The step `T - 1` is only presented while more than [`BOUNDARY_MARGIN`] is
//! left of step `T`: the service reads its clock after the request arrives,
//! and if it is in `T + 1` by then, `T - 1` is out of its window. `T` and
//! `T + 1` stay valid across that boundary. The service runs on the same
//! machine and clock; a service started with `--clock-offset-secs` breaks
//! this.

use std::time::Duration;

use crate::totp::{SKEW_STEPS, STEP_SECS};

/// How much of the current step must be left to still present the previous
/// step's code: far more than any request's latency.
pub const BOUNDARY_MARGIN: Duration = Duration::from_secs(5);

const STEP: Duration = Duration::from_secs(STEP_SECS);

fn split(now: Duration) -> (u64, Duration) {
    let step = now.as_secs() / STEP_SECS;
    let into = now.saturating_sub(Duration::from_secs(step * STEP_SECS));
    (step, STEP.saturating_sub(into))
}

/// The lowest step the service surely accepts at `now` (ignoring reuse).
fn lowest_safe(now: Duration) -> u64 {
    let (step, remaining) = split(now);
    if remaining > BOUNDARY_MARGIN {
        step.saturating_sub(SKEW_STEPS)
    } else {
        step
    }
}

/// The step to present at `now` for a user whose last accepted step is
/// `last` (`None`: nothing accepted yet), or how long to wait until one is
/// presentable.
pub fn next_step(last: Option<u64>, now: Duration) -> Result<u64, Duration> {
    let (step, _) = split(now);
    let highest = step + SKEW_STEPS;
    let lowest = lowest_safe(now);
    let candidate = last.map_or(lowest, |l| (l + 1).max(lowest));
    if candidate <= highest {
        Ok(candidate)
    } else {
        // `candidate` enters the window when the clock reaches its step
        // minus the skew.
        let ready = Duration::from_secs((candidate - SKEW_STEPS) * STEP_SECS);
        Err(ready.saturating_sub(now))
    }
}

/// An upper bound on the codes that users with these last accepted steps can
/// present between `start` and `start + span` without reusing one: each user
/// from `max(last + 1, lowest safe step at start)` to one step past the
/// step at the end.
pub fn budget(
    lasts: impl IntoIterator<Item = Option<u64>>,
    start: Duration,
    span: Duration,
) -> u64 {
    let lowest = lowest_safe(start);
    let (end_step, _) = split(start + span);
    let highest = end_step + SKEW_STEPS;
    lasts
        .into_iter()
        .map(|last| {
            let first = last.map_or(lowest, |l| (l + 1).max(lowest));
            (highest + 1).saturating_sub(first)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix time `secs` into step 1000.
    fn at(secs: f64) -> Duration {
        Duration::from_secs(1000 * STEP_SECS) + Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_fresh_user_starts_one_step_back_while_the_step_has_time_left() {
        assert_eq!(next_step(None, at(0.0)), Ok(999));
        assert_eq!(next_step(None, at(24.0)), Ok(999));
        // Within the margin of the next boundary the previous step could
        // already be out of the service's window.
        assert_eq!(next_step(None, at(25.5)), Ok(1000));
        assert_eq!(next_step(None, at(29.9)), Ok(1000));
    }

    #[test]
    fn each_code_is_used_once_and_at_most_one_step_ahead() {
        let now = at(10.0);
        let mut last = None;
        let mut used = Vec::new();
        while let Ok(step) = next_step(last, now) {
            used.push(step);
            last = Some(step);
        }
        assert_eq!(used, vec![999, 1000, 1001]);
        // The next one (1002) becomes valid when step 1001 begins.
        assert_eq!(next_step(last, now), Err(Duration::from_secs(20)));
        assert_eq!(next_step(last, at(30.0)), Ok(1002));
    }

    #[test]
    fn after_the_window_is_used_up_one_code_per_step_follows() {
        let mut last = Some(1001);
        for k in 1..=3u64 {
            let now = at(30.0 * k as f64 + 1.0);
            assert_eq!(next_step(last, now), Ok(1001 + k));
            last = Some(1001 + k);
            assert!(next_step(last, now).is_err());
        }
    }

    #[test]
    fn a_stale_last_step_never_yields_an_expired_code() {
        assert_eq!(next_step(Some(10), at(3.0)), Ok(999));
        assert_eq!(next_step(Some(10), at(27.0)), Ok(1000));
    }

    #[test]
    fn budget_counts_the_window_and_one_code_per_boundary() {
        // Confirmed one step back at step 1000, as the setup does: two codes
        // left (1000, 1001) within the step...
        assert_eq!(budget([Some(999)], at(1.0), Duration::from_secs(10)), 2);
        // ... and one more for each boundary the run crosses.
        assert_eq!(budget([Some(999)], at(25.0), Duration::from_secs(10)), 3);
        assert_eq!(budget([Some(999)], at(1.0), Duration::from_secs(65)), 4);
        // A user confirmed two steps ago has the whole window of three.
        assert_eq!(budget([Some(998)], at(1.0), Duration::from_secs(10)), 3);
        assert_eq!(
            budget(vec![Some(999); 1000], at(1.0), Duration::from_secs(10)),
            2000
        );
        // Nothing left until the step after next.
        assert_eq!(budget([Some(1001)], at(1.0), Duration::from_secs(10)), 0);
    }
}
