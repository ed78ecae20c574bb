//! deploy's OpenTelemetry instruments (docs/design.md "Observability"): padlocked
//! actions refused by the step-up rule, by reason. Every attribute comes
//! from a closed vocabulary: never a user, an app or a token.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

use padlock_proto::Reason;

use crate::policy::{Action, Env};

/// Built once with the application state; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    step_up_refusals: Counter<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            step_up_refusals: meter
                .u64_counter("padlock.deploy.step_up.refusals")
                .with_description(
                    "Padlocked actions refused by the step-up rule, by reason, action and environment",
                )
                .build(),
        }
    }

    /// `reason` is the refusal's `ErrorInfo.reason` (`MFA_REQUIRED`, ...).
    pub fn step_up_refused(&self, reason: Reason, action: Action, env: Env) {
        self.step_up_refusals.add(
            1,
            &[
                KeyValue::new("reason", reason.as_str_name()),
                KeyValue::new("action", action.as_str()),
                KeyValue::new("environment", env.as_str()),
            ],
        );
    }
}
