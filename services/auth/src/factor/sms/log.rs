//! The development sender: writes the code to the service log instead of
//! sending it. It exists so the whole flow can be tried without a Twilio
//! account, and the service refuses to use it unless explicitly allowed
//! (`--sms-dev-log`), because it puts codes into logs. Only into logs:
//! its line goes to [`padlock_runtime::telemetry::LOG_ONLY_TARGET`], which
//! is never exported in a span.

use std::time::Instant;

use super::{SendError, Sent, SmsSender};

#[derive(Debug, Default)]
pub struct LogSender;

#[async_trait::async_trait]
impl SmsSender for LogSender {
    async fn send(
        &self,
        to: &str,
        body: &str,
        _deadline: Option<Instant>,
    ) -> Result<Sent, SendError> {
        let last_two = &to[to.len().saturating_sub(2)..];
        tracing::warn!(
            target: padlock_runtime::telemetry::LOG_ONLY_TARGET,
            to_ends_with = last_two,
            body,
            "DEVELOPMENT SMS SENDER: not sent, logged instead"
        );
        Ok(Sent {
            provider_id: format!("dev-{}", uuid::Uuid::new_v4().simple()),
        })
    }
}
