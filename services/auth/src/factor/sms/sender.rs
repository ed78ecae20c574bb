//! Sending SMS codes, behind one trait ([`SmsSender`]). The production
//! sender speaks Twilio Programmable Messaging (`twilio`); the development
//! sender only logs (`log`); tests plug in their own. Nothing else in the
//! service knows Twilio exists.

use std::fmt;
use std::time::Instant;

use padlock_proto::Reason;

/// Why a provider would never deliver to this number. Shown to the user as
/// a reason they can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermanentReason {
    /// The provider says the number is not a valid mobile number
    /// (Twilio 21211, 21614).
    InvalidNumber,
    /// The recipient opted out of messages (Twilio 21610).
    Unsubscribed,
    /// The number cannot receive SMS, e.g. a landline or an unsupported
    /// region (Twilio 21408, 21612).
    Unreachable,
    /// Our account or sender is misconfigured (Twilio 20003, 21606): not the
    /// user's fault; operators must look.
    Misconfigured,
    /// Any other refusal of this message.
    Rejected,
}

impl PermanentReason {
    /// The `ErrorInfo.reason` a client sees.
    pub(crate) fn as_reason(self) -> Reason {
        match self {
            PermanentReason::InvalidNumber => Reason::PhoneNumberInvalid,
            PermanentReason::Unsubscribed => Reason::PhoneNumberUnsubscribed,
            PermanentReason::Unreachable => Reason::PhoneNumberUnreachable,
            PermanentReason::Misconfigured => Reason::SmsProviderMisconfigured,
            PermanentReason::Rejected => Reason::SmsRejected,
        }
    }
}

/// A failed send. Messages never hold the number or the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Retrying will not help.
    #[error("the SMS provider refused the message ({reason:?}, code {provider_code:?})")]
    Permanent {
        reason: PermanentReason,
        provider_code: Option<u32>,
    },
    /// The provider is down, slow or rate-limiting us; retries were spent.
    #[error("the SMS provider is unavailable")]
    Transient,
}

/// A message the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The provider's id for it (Twilio's `SM...` sid).
    pub provider_id: String,
}

/// Sends one text message.
#[async_trait::async_trait]
pub trait SmsSender: Send + Sync + fmt::Debug {
    /// Sends `body` to `to` (E.164). Gives up by `deadline` (the caller's
    /// gRPC deadline) if one is set, retrying transient failures before it.
    async fn send(
        &self,
        to: &str,
        body: &str,
        deadline: Option<Instant>,
    ) -> Result<Sent, SendError>;
}

/// The text of a code message: short, names the product and the code, and
/// says not to share it.
pub(crate) fn code_message(code: &str) -> String {
    format!(
        "{code} is your padlock verification code. Never share it: padlock staff will never ask for it."
    )
}

/// No sender configured: every send fails as misconfigured, so SMS
/// enrollment is refused with a reason operators recognise.
#[derive(Debug, Default)]
pub(crate) struct Unconfigured;

#[async_trait::async_trait]
impl SmsSender for Unconfigured {
    async fn send(
        &self,
        _to: &str,
        _body: &str,
        _deadline: Option<Instant>,
    ) -> Result<Sent, SendError> {
        Err(SendError::Permanent {
            reason: PermanentReason::Misconfigured,
            provider_code: None,
        })
    }
}
