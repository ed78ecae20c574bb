//! auth's OpenTelemetry instruments (docs/design.md "Observability"): second
//! factor verifications by method and outcome, SMS sent and refused, and
//! lockouts. Every attribute comes from a closed vocabulary: never a user,
//! a number or a code.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

use crate::error::AuthError;
use crate::store::Method;

/// Built once with the application state; cheap to clone.
#[derive(Clone)]
pub(crate) struct Metrics {
    verifications: Counter<u64>,
    sms_sent: Counter<u64>,
    sms_refused: Counter<u64>,
    lockouts: Counter<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why an SMS code was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SmsRefusal {
    /// Asked again within the resend cooldown.
    Cooldown,
    /// A per-account, per-number or service-wide cap was reached.
    UserLimit,
    NumberLimit,
    GlobalLimit,
    /// The provider will never deliver it (bad number, opted out, ...).
    Undeliverable,
    /// The provider is down or slow; retries were spent.
    ProviderUnavailable,
}

impl SmsRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            SmsRefusal::Cooldown => "cooldown",
            SmsRefusal::UserLimit => "user_limit",
            SmsRefusal::NumberLimit => "number_limit",
            SmsRefusal::GlobalLimit => "global_limit",
            SmsRefusal::Undeliverable => "undeliverable",
            SmsRefusal::ProviderUnavailable => "provider_unavailable",
        }
    }
}

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            verifications: meter
                .u64_counter("padlock.auth.verifications")
                .with_description("Second-factor codes checked, by method and outcome")
                .build(),
            sms_sent: meter
                .u64_counter("padlock.auth.sms.sent")
                .with_description("SMS codes the provider accepted")
                .build(),
            sms_refused: meter
                .u64_counter("padlock.auth.sms.refused")
                .with_description("SMS codes not sent, by reason")
                .build(),
            lockouts: meter
                .u64_counter("padlock.auth.lockouts")
                .with_description("Second factors locked after too many wrong codes")
                .build(),
        }
    }

    /// A code checked against a factor: `outcome` is one of
    /// [`VERIFICATION_OUTCOMES`].
    pub fn verification(&self, method: Method, outcome: &'static str) {
        self.verifications.add(
            1,
            &[
                KeyValue::new("method", method.as_str()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub(crate) fn sms_sent(&self) {
        self.sms_sent.add(1, &[]);
    }

    pub(crate) fn sms_refused(&self, reason: SmsRefusal) {
        self.sms_refused
            .add(1, &[KeyValue::new("reason", reason.as_str())]);
    }

    pub fn lockout(&self, method: Method) {
        self.lockouts
            .add(1, &[KeyValue::new("method", method.as_str())]);
    }
}

/// Every value of a verification's `outcome` attribute (what dashboards
/// may match; the tests hold the code to it).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const VERIFICATION_OUTCOMES: [&str; 7] = [
    "accepted",
    "wrong",
    "reused",
    "expired",
    "exhausted",
    "locked",
    "error",
];

/// The `outcome` of a check that ended in `error` before the code was
/// compared (or while it was).
pub(crate) fn refusal_outcome(error: &AuthError) -> &'static str {
    match error {
        AuthError::CodeInvalid { .. } => "wrong",
        AuthError::CodeReused => "reused",
        AuthError::CodeExpired | AuthError::EnrollmentExpired => "expired",
        AuthError::CodeExhausted => "exhausted",
        AuthError::LockedOut { .. } => "locked",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_into_the_closed_vocabulary() {
        let errors = [
            AuthError::CodeInvalid { attempts_left: 3 },
            AuthError::CodeReused,
            AuthError::CodeExpired,
            AuthError::CodeExhausted,
            AuthError::LockedOut {
                retry_after: std::time::Duration::from_secs(1),
            },
            AuthError::Internal,
        ];
        let outcomes: Vec<_> = errors.iter().map(refusal_outcome).collect();
        assert_eq!(
            outcomes,
            ["wrong", "reused", "expired", "exhausted", "locked", "error"]
        );
        assert!(outcomes.iter().all(|o| VERIFICATION_OUTCOMES.contains(o)));
    }
}
