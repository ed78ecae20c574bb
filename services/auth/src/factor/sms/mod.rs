//! The SMS factor: a phone number, and six-digit codes texted to it.
//! Codes come from the OS CSPRNG, are stored only as a keyed MAC bound to
//! the user, valid five minutes, single use, five tries each, and sent
//! within a cooldown and send limits (docs/design.md "SMS"). A check
//! compares the code with the MAC waiting ([`Sms`]). Sending is behind
//! [`SmsSender`] (`sender`): Twilio (`twilio`) or the development log
//! (`log`).

pub mod log;
pub mod phone;
mod sender;
pub mod twilio;

use padlock_runtime::status::Violations;
use std::time::{Duration, Instant};

use padlock_proto::auth::v1::{SendSmsCodeResponse, StartSmsEnrollmentResponse};
use rand::Rng;
use tonic::metadata::MetadataMap;

use super::{
    Compared, Enrollment, Factor, Method, Pending, SingleUse, Unreadable, audit, open_secret,
};
use crate::app::{App, Caller};
use crate::config::{SMS_CODE_MAX_TRIES, SMS_CODE_TTL_SECS};
use crate::error::{AuthError, Result};
use crate::grpc::{finish, timestamp};
use crate::metrics::SmsRefusal;
use crate::sealing::DataKeys;
use crate::store::{Factor as StoredFactor, Outcome, PendingCode, Refusal, SendGate, SendLimit};
use phone::PhoneNumber;

pub use sender::{PermanentReason, SendError, Sent, SmsSender};
pub(crate) use sender::{Unconfigured, code_message};

/// The SMS factor: a check compares the code with the MAC of the code
/// waiting.
#[derive(Debug)]
pub(crate) struct Sms;

impl Factor for Sms {
    const METHOD: Method = Method::Sms;
    /// The phone number as typed.
    type Start = String;
    /// The number and its MAC.
    type Prepared = (PhoneNumber, String);
    type Started = StartSmsEnrollmentResponse;

    fn prepare(
        app: &App,
        _caller: &Caller,
        number: String,
    ) -> Result<(Enrollment, Self::Prepared)> {
        let mut errors = Violations::new();
        let parsed = PhoneNumber::parse(&number);
        if let Err(e) = &parsed {
            errors.add("phone_number", e.to_string());
        }
        finish(errors)?;
        let phone = parsed.map_err(|_| AuthError::Internal)?;
        let mac = phone_mac(app, &phone);
        let enrollment = Enrollment {
            secret: phone.e164().as_bytes().to_vec(),
            masked_phone: Some(phone.masked()),
            phone_mac: Some(mac.clone()),
            detail: format!("method=sms number={}", phone.masked()),
        };
        Ok((enrollment, (phone, mac)))
    }

    async fn started(
        app: &App,
        caller: &Caller,
        pending: Pending,
        (phone, mac): (PhoneNumber, String),
        metadata: &MetadataMap,
    ) -> Result<StartSmsEnrollmentResponse> {
        let sent = send_code(app, caller, &phone, &mac, deadline(metadata)).await?;
        Ok(StartSmsEnrollmentResponse {
            enrollment_id: pending.enrollment_id,
            masked_phone_number: phone.masked(),
            code_expires_at: timestamp(sent.expires_at),
            resend_allowed_at: timestamp(sent.resend_at),
        })
    }

    /// A code waiting, within its five minutes, with tries left.
    fn comparable(factor: &StoredFactor, now: i64) -> std::result::Result<(), Refusal> {
        match &factor.code {
            Some(code) if code.expires_at <= now => Err(Refusal::CodeExpired),
            Some(code) if code.tries >= SMS_CODE_MAX_TRIES => Err(Refusal::CodeExhausted),
            Some(_) => Ok(()),
            None => Err(Refusal::CodeExpired),
        }
    }

    /// Whether `code` is the code waiting, by its MAC.
    fn compare(
        keys: &DataKeys,
        factor: &StoredFactor,
        code: &str,
        _now: i64,
    ) -> std::result::Result<Compared, Unreadable> {
        // No code waiting: nothing to match (the store refuses such a
        // check before it takes a try).
        let Some(pending) = &factor.code else {
            return Ok(Compared::Wrong);
        };
        let tag = hex::decode(&pending.hash).map_err(|_| {
            tracing::error!("a stored SMS code MAC is not hex");
            Unreadable
        })?;
        let material = code_material(&factor.user_id, code);
        Ok(if keys.verify_mac(&pending.key_id, &material, &tag) {
            Compared::Right(SingleUse::Code(pending.hash.clone()))
        } else {
            Compared::Wrong
        })
    }
}

/// What an SMS code's MAC covers: the user and the code, so a code row
/// moved to another user never matches.
pub fn code_material(user_id: &str, code: &str) -> Vec<u8> {
    format!("sms-code:{user_id}:{code}").into_bytes()
}

/// The MAC of a phone number, which its send limits count under.
fn phone_mac(app: &App, phone: &PhoneNumber) -> String {
    hex::encode(app.data_keys().mac(phone.e164().as_bytes()).1)
}

/// When a code went out: what the client shows and when it may ask again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeSent {
    expires_at: i64,
    resend_at: i64,
}

/// The caller's gRPC deadline (`grpc-timeout`), for the SMS provider's retries.
pub(crate) fn deadline(metadata: &MetadataMap) -> Option<Instant> {
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

/// `SendSmsCode`: a fresh code to the caller's SMS factor, pending or
/// active, unless it is locked.
pub(crate) async fn resend(app: &App, metadata: &MetadataMap) -> Result<SendSmsCodeResponse> {
    let caller = app.caller(metadata).await?;
    let factor = app
        .store()
        .factor(&caller.claims.sub)
        .await?
        .filter(|f| f.method == Method::Sms)
        .ok_or(AuthError::NotEnrolled)?;
    let now = app.now();
    if let Some(until) = factor.locked_until(now) {
        return Err(AuthError::locked_out(until, now));
    }
    let phone = phone_of(app, &factor)?;
    let phone_mac = factor.phone_mac.clone().unwrap_or_default();
    let sent = send_code(app, &caller, &phone, &phone_mac, deadline(metadata)).await?;
    Ok(SendSmsCodeResponse {
        masked_phone_number: phone.masked(),
        code_expires_at: timestamp(sent.expires_at),
        resend_allowed_at: timestamp(sent.resend_at),
    })
}

fn phone_of(app: &App, factor: &StoredFactor) -> Result<PhoneNumber> {
    let bytes =
        open_secret(&app.data_keys(), factor, "phone number").map_err(|_| AuthError::Internal)?;
    let text = String::from_utf8(bytes).map_err(|_| AuthError::Internal)?;
    PhoneNumber::parse(&text).map_err(|_| AuthError::Internal)
}

/// Stores a fresh code within the cooldown and limits, then sends it.
/// A refused send sends nothing; an undelivered code is forgotten.
async fn send_code(
    app: &App,
    caller: &Caller,
    phone: &PhoneNumber,
    phone_mac: &str,
    deadline: Option<Instant>,
) -> Result<CodeSent> {
    let limits = app.settings().sms_limits;
    let user_id = caller.claims.sub.as_str();
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    let (key_id, tag) = app.data_keys().mac(&code_material(user_id, &code));
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
            audit(
                app,
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
            audit(
                app,
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
            audit(
                app,
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
