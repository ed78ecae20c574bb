//! The SMS half of `TwoFactorService`: enrolling a number and sending
//! codes within the limits. Codes are six digits from the OS CSPRNG,
//! stored only as a keyed MAC bound to the user, valid five minutes,
//! single use, five tries each (DESIGN.md "SMS"); they are checked with
//! TOTP codes (`store::code_checks`).

use std::time::{Duration, Instant};

use padlock_proto::auth::v1::{SendSmsCodeResponse, StartSmsEnrollmentResponse};
use rand::Rng;
use tonic::metadata::MetadataMap;

use super::timestamp;
use super::two_factor::TwoFactor;
use crate::app::Caller;
use crate::codes::{open_factor_secret, sms_code_material};
use crate::config::{ENROLLMENT_TTL_SECS, SMS_CODE_TTL_SECS};
use crate::error::{AuthError, Result};
use crate::metrics::SmsRefusal;
use crate::phone::PhoneNumber;
use crate::sms::{SendError, code_message};
use crate::store::{
    Factor, FactorState, Method, NewFactor, Outcome, PendingCode, SendGate, SendLimit,
};

/// When a code went out: what the client shows and when it may ask again.
#[derive(Debug, Clone, Copy)]
pub struct CodeSent {
    pub expires_at: i64,
    pub resend_at: i64,
}

/// The caller's gRPC deadline (`grpc-timeout`), for the SMS provider's retries.
pub fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

impl TwoFactor {
    pub(super) async fn start_sms(
        &self,
        metadata: &MetadataMap,
        phone_number: &str,
    ) -> Result<StartSmsEnrollmentResponse> {
        let caller = self.app().caller(metadata).await?;
        let phone = PhoneNumber::parse(phone_number)
            .map_err(|e| AuthError::invalid("phone_number", e.to_string()))?;
        let user_id = caller.claims.sub.clone();
        if self
            .app()
            .store()
            .factor(&user_id)
            .await?
            .is_some_and(|f| f.state == FactorState::Active)
        {
            self.audit(
                &caller,
                "enrollment_started",
                Outcome::Refused,
                "factor already active".into(),
            )
            .await?;
            return Err(AuthError::FactorLocked);
        }
        let keys = self.app().data_keys();
        let sealed = keys.seal(phone.e164().as_bytes(), user_id.as_bytes());
        let phone_mac = hex::encode(keys.mac(phone.e164().as_bytes()).1);
        let now = self.app().now();
        let enrollment_id = uuid::Uuid::new_v4().to_string();
        let started = self
            .app()
            .store()
            .begin_enrollment(&NewFactor {
                masked_phone: Some(phone.masked()),
                phone_mac: Some(phone_mac.clone()),
                user_id,
                method: Method::Sms,
                enrollment_id: enrollment_id.clone(),
                secret_key_id: sealed.key_id,
                secret_ciphertext: sealed.blob,
                created_at: now,
                enrollment_expires_at: now + ENROLLMENT_TTL_SECS,
            })
            .await?;
        if !started {
            return Err(AuthError::FactorLocked);
        }
        self.audit(
            &caller,
            "enrollment_started",
            Outcome::Ok,
            format!("method=sms number={}", phone.masked()),
        )
        .await?;
        let sent = self
            .send_code(&caller, &phone, &phone_mac, deadline(metadata))
            .await?;
        Ok(StartSmsEnrollmentResponse {
            enrollment_id,
            masked_phone_number: phone.masked(),
            code_expires_at: timestamp(sent.expires_at),
            resend_allowed_at: timestamp(sent.resend_at),
        })
    }

    pub(super) async fn resend(&self, metadata: &MetadataMap) -> Result<SendSmsCodeResponse> {
        let caller = self.app().caller(metadata).await?;
        let factor = self
            .app()
            .store()
            .factor(&caller.claims.sub)
            .await?
            .filter(|f| f.method == Method::Sms)
            .ok_or(AuthError::NotEnrolled)?;
        let now = self.app().now();
        if let Some(until) = factor.locked_until(now) {
            return Err(super::two_factor::locked_out(until, now));
        }
        let phone = self.phone_of(&factor)?;
        let phone_mac = factor.phone_mac.clone().unwrap_or_default();
        let sent = self
            .send_code(&caller, &phone, &phone_mac, deadline(metadata))
            .await?;
        Ok(SendSmsCodeResponse {
            masked_phone_number: phone.masked(),
            code_expires_at: timestamp(sent.expires_at),
            resend_allowed_at: timestamp(sent.resend_at),
        })
    }

    fn phone_of(&self, factor: &Factor) -> Result<PhoneNumber> {
        let bytes = open_factor_secret(&self.app().data_keys(), factor, "phone number")
            .map_err(|_| AuthError::Internal)?;
        let text = String::from_utf8(bytes).map_err(|_| AuthError::Internal)?;
        PhoneNumber::parse(&text).map_err(|_| AuthError::Internal)
    }

    /// Stores a fresh code within the cooldown and limits, then sends it.
    /// A refused send sends nothing; an undelivered code is forgotten.
    async fn send_code(
        &self,
        caller: &Caller,
        phone: &PhoneNumber,
        phone_mac: &str,
        deadline: Option<Instant>,
    ) -> Result<CodeSent> {
        let app = self.app();
        let limits = app.settings().sms_limits;
        let user_id = caller.claims.sub.as_str();
        let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
        let (key_id, tag) = app.data_keys().mac(&sms_code_material(user_id, &code));
        let now = app.now();
        let pending = PendingCode {
            hash: hex::encode(tag),
            key_id,
            expires_at: now + SMS_CODE_TTL_SECS,
            tries: 0,
        };
        const HOUR: i64 = 3600;
        const DAY: i64 = 24 * HOUR;
        let caps = [
            SendLimit {
                bucket: format!("user:{user_id}:hour"),
                window: HOUR,
                cap: limits.per_user_hour,
            },
            SendLimit {
                bucket: format!("user:{user_id}:day"),
                window: DAY,
                cap: limits.per_user_day,
            },
            SendLimit {
                bucket: format!("phone:{}:hour", &phone_mac[..phone_mac.len().min(32)]),
                window: HOUR,
                cap: limits.per_number_hour,
            },
            SendLimit {
                bucket: format!("phone:{}:day", &phone_mac[..phone_mac.len().min(32)]),
                window: DAY,
                cap: limits.per_number_day,
            },
            SendLimit {
                bucket: "global:minute".into(),
                window: 60,
                cap: limits.global_per_minute,
            },
        ];
        let gate = app
            .store()
            .store_code(user_id, &pending, now, limits.resend_cooldown_secs, &caps)
            .await?;
        let wait = |until: i64| Duration::from_secs(u64::try_from(until - now).unwrap_or(0).max(1));
        match gate {
            SendGate::Open => {}
            SendGate::Cooldown { until } => {
                app.metrics().sms_refused(SmsRefusal::Cooldown);
                return Err(AuthError::SmsTooSoon {
                    retry_after: wait(until),
                });
            }
            SendGate::Capped { bucket, until } => {
                let (scope, refusal) = if bucket.starts_with("user:") {
                    ("for this account", SmsRefusal::UserLimit)
                } else if bucket.starts_with("phone:") {
                    ("to this number", SmsRefusal::NumberLimit)
                } else {
                    ("by the service", SmsRefusal::GlobalLimit)
                };
                app.metrics().sms_refused(refusal);
                self.audit(
                    caller,
                    "sms_sent",
                    Outcome::Refused,
                    format!("limit reached {scope}"),
                )
                .await?;
                return Err(AuthError::SmsLimit(scope, wait(until)));
            }
        }
        match app
            .sms()
            .send(phone.e164(), &code_message(&code), deadline)
            .await
        {
            Ok(sent) => {
                app.metrics().sms_sent();
                self.audit(
                    caller,
                    "sms_sent",
                    Outcome::Ok,
                    format!("number={} provider_id={}", phone.masked(), sent.provider_id),
                )
                .await?;
                Ok(CodeSent {
                    expires_at: pending.expires_at,
                    resend_at: now + limits.resend_cooldown_secs,
                })
            }
            Err(e) => {
                app.metrics().sms_refused(match e {
                    SendError::Permanent { .. } => SmsRefusal::Undeliverable,
                    SendError::Transient => SmsRefusal::ProviderUnavailable,
                });
                app.store()
                    .clear_undelivered_code(user_id, &pending.hash)
                    .await?;
                self.audit(
                    caller,
                    "sms_sent",
                    Outcome::Refused,
                    format!("number={} {e}", phone.masked()),
                )
                .await?;
                Err(match e {
                    SendError::Permanent { reason, .. } => AuthError::SmsUndeliverable(reason),
                    SendError::Transient => AuthError::SmsUnavailable,
                })
            }
        }
    }
}
