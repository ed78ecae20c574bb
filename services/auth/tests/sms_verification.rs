//! SMS enrollment and step-up against a Twilio-compatible fake that checks
//! Twilio's wire format, on SQLite and PostgreSQL. Codes are read from the
//! messages the fake received, as a phone would show them; time moves by
//! the manual clock.

mod common;

use padlock_proto::Reason;
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, assert_refused, bad_fields, bearer};
use padlock_auth::sms::twilio::{Sender, TwilioConfig, TwilioSender};
use padlock_proto::auth::v1::{
    FactorMethod, RefreshRequest, ResetFactorRequest, SendSmsCodeRequest,
    StartSmsEnrollmentRequest, StartSmsEnrollmentResponse,
};
use padlock_runtime::Secret;
use padlock_test_support::fake_twilio::{Behavior, FakeTwilio};
use tonic::{Code, Status};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "test-auth-token";
const FROM: &str = "+15005550006";
const PHONE: &str = "+31612345678";

async fn with_twilio(db: &padlock_test_support::TestDatabase) -> (Harness, FakeTwilio) {
    let fake = FakeTwilio::start(SID, TOKEN).await;
    let mut config = TwilioConfig::new(
        SID,
        Secret::new(TOKEN.to_owned()),
        Sender::From(FROM.into()),
    );
    config.base_url = fake.base_url();
    config.request_timeout = Duration::from_millis(500);
    let sender = TwilioSender::new(config).expect("a valid Twilio configuration");
    let h = Harness::start_with(db, move |mut o| {
        o.sms = Some(Arc::new(sender));
        o
    })
    .await;
    (h, fake)
}

async fn start_sms(
    h: &Harness,
    token: &str,
    phone: &str,
) -> Result<StartSmsEnrollmentResponse, Status> {
    h.two_factor()
        .start_sms_enrollment(bearer(
            token,
            StartSmsEnrollmentRequest {
                phone_number: phone.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn resend(h: &Harness, token: &str) -> Result<(), Status> {
    h.two_factor()
        .send_sms_code(bearer(token, SendSmsCodeRequest {}))
        .await
        .map(|_| ())
}

/// The code in the newest message the phone got.
fn last_code(fake: &FakeTwilio) -> String {
    let body = fake.messages().last().expect("a message").body.clone();
    body.split_whitespace()
        .next()
        .expect("the code first")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_code_enrolls_and_steps_up_once() {
    for db in padlock_test_support::databases().await {
        let (h, fake) = with_twilio(&db).await;
        h.add_user("alice", &[]).await;
        let session = h.sign_in("alice").await;
        let started = start_sms(&h, &session.access_token, PHONE).await.unwrap();
        assert_eq!(started.masked_phone_number, "+31 6** *** *78");
        assert_eq!(
            started.code_expires_at.unwrap().seconds,
            common::START + 300
        );
        assert_eq!(
            started.resend_allowed_at.unwrap().seconds,
            common::START + 30
        );

        let message = fake.messages().last().unwrap().clone();
        assert_eq!(
            (message.to.as_str(), message.from.as_deref()),
            (PHONE, Some(FROM)),
            "{}",
            h.backend
        );
        assert!(
            message.body.contains("padlock") && message.body.contains("Never share"),
            "{}",
            message.body
        );
        let code = last_code(&fake);
        let step_up = h
            .confirm(&session.access_token, &started.enrollment_id, &code)
            .await
            .unwrap();
        assert_eq!(step_up.method(), FactorMethod::Sms);
        let claims = h.claims(&step_up.access_token).await;
        assert_eq!(
            (claims.mfa_method.as_deref(), claims.amr.clone()),
            (Some("sms"), vec!["pwd".into(), "sms".into(), "mfa".into()])
        );
        // Single use.
        assert_refused(
            h.verify(&session.access_token, &code).await,
            Code::FailedPrecondition,
            Reason::CodeExpired.as_str_name(),
        );

        // A later step-up: ask for a code after the cooldown, then verify.
        assert_refused(
            resend(&h, &session.access_token).await,
            Code::ResourceExhausted,
            Reason::SmsResendTooSoon.as_str_name(),
        );
        h.clock.advance(Duration::from_secs(30));
        resend(&h, &session.access_token).await.unwrap();
        assert_eq!(fake.messages().len(), 2);
        h.verify(&session.access_token, &last_code(&fake))
            .await
            .unwrap();

        // The method is locked: no TOTP for an SMS user.
        assert_refused(
            h.start_totp(&session.access_token).await,
            Code::FailedPrecondition,
            Reason::FactorLocked.as_str_name(),
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_expired_codes_are_refused() {
    for db in padlock_test_support::databases().await {
        let (h, fake) = with_twilio(&db).await;
        h.add_user("alice", &[]).await;
        let session = h.sign_in("alice").await;
        let started = start_sms(&h, &session.access_token, PHONE).await.unwrap();
        let right = last_code(&fake);
        let wrong: Vec<String> = (0..)
            .map(|n| format!("{n:06}"))
            .filter(|c| *c != right)
            .take(6)
            .collect();
        for (i, code) in wrong.iter().take(4).enumerate() {
            let status = assert_refused(
                h.confirm(&session.access_token, &started.enrollment_id, code)
                    .await,
                Code::Unauthenticated,
                Reason::CodeInvalid.as_str_name(),
            );
            let left = tonic_types::StatusExt::get_error_details(&status)
                .error_info()
                .unwrap()
                .metadata["attempts_left"]
                .clone();
            assert_eq!(left, (4 - i).to_string(), "{}", h.backend);
        }
        assert_refused(
            h.confirm(&session.access_token, &started.enrollment_id, &wrong[4])
                .await,
            Code::ResourceExhausted,
            Reason::TooManyAttempts.as_str_name(),
        );
        // The 6th try is refused, even with the right code.
        assert_refused(
            h.confirm(&session.access_token, &started.enrollment_id, &right)
                .await,
            Code::ResourceExhausted,
            Reason::TooManyAttempts.as_str_name(),
        );

        // After the lockout (and the ten-minute enrollment) a new enrollment
        // sends a new code; a code past its five minutes is refused.
        h.clock.advance(Duration::from_secs(15 * 60));
        let session = h.sign_in("alice").await;
        assert_refused(
            h.confirm(&session.access_token, &started.enrollment_id, &right)
                .await,
            Code::FailedPrecondition,
            Reason::EnrollmentExpired.as_str_name(),
        );
        let again = start_sms(&h, &session.access_token, PHONE).await.unwrap();
        let code = last_code(&fake);
        h.clock.advance(Duration::from_secs(301));
        assert_refused(
            h.confirm(&session.access_token, &again.enrollment_id, &code)
                .await,
            Code::FailedPrecondition,
            Reason::CodeExpired.as_str_name(),
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_refusals_and_outages_map_to_clear_statuses() {
    for db in padlock_test_support::databases().await {
        let (h, fake) = with_twilio(&db).await;
        h.add_user("alice", &[]).await;
        let session = h.sign_in("alice").await;

        fake.push(Behavior::Error {
            status: 400,
            code: 21211,
        });
        assert_refused(
            start_sms(&h, &session.access_token, PHONE).await,
            Code::FailedPrecondition,
            Reason::PhoneNumberInvalid.as_str_name(),
        );
        // Undelivered: no cooldown, no tries used; the user may try again at once.
        for _ in 0..3 {
            fake.push(Behavior::Status(500));
        }
        assert_refused(
            start_sms(&h, &session.access_token, PHONE).await,
            Code::Unavailable,
            Reason::SmsUnavailable.as_str_name(),
        );
        fake.push(Behavior::Status(500));
        let started = start_sms(&h, &session.access_token, PHONE).await.unwrap();
        assert_eq!(
            fake.messages().len(),
            1,
            "{}: one delivered after a retry",
            h.backend
        );
        h.confirm(
            &session.access_token,
            &started.enrollment_id,
            &last_code(&fake),
        )
        .await
        .unwrap();
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_numbers_are_refused_and_nothing_is_sent() {
    let db = padlock_test_support::sqlite();
    let (h, fake) = with_twilio(&db).await;
    h.add_user("alice", &[]).await;
    let session = h.sign_in("alice").await;
    for bad in [
        "",
        "0612345678",
        "+31 6 1234 5678",
        "+19005551234",
        "+0000",
        "+31612345678999999",
    ] {
        let status = assert_refused(
            start_sms(&h, &session.access_token, bad).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(bad_fields(&status), ["phone_number"], "{bad:?}");
        assert!(
            !status.message().contains(bad) || bad.is_empty(),
            "the number is not echoed"
        );
    }
    assert_eq!(fake.requests(), 0);
    assert!(
        h.app
            .store()
            .factor(&h.claims(&session.access_token).await.sub)
            .await
            .unwrap()
            .is_none()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_under_50_concurrent_sends() {
    for db in padlock_test_support::databases().await {
        let (h, fake) = with_twilio(&db).await;
        // 50 users, one number between them: the per-number cap (5 an hour) decides.
        let mut tokens = Vec::new();
        for i in 0..50 {
            let name = format!("user{i}");
            h.add_user(&name, &[]).await;
            tokens.push(h.sign_in(&name).await.access_token);
        }
        let results =
            futures::future::join_all(tokens.iter().map(|t| start_sms(&h, t, PHONE))).await;
        let sent = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(sent, 5, "{}", h.backend);
        assert_eq!(fake.messages().len(), 5, "a refused send sends nothing");
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(refused.code(), Code::ResourceExhausted);
            assert_eq!(
                common::reason(refused),
                Reason::SmsLimitReached.as_str_name()
            );
            let retry = tonic_types::StatusExt::get_error_details(refused)
                .retry_info()
                .unwrap()
                .retry_delay
                .unwrap();
            assert!(retry <= Duration::from_secs(3600) && retry > Duration::ZERO);
        }

        // One user asking 50 times at once gets one code: the cooldown.
        let one = &tokens[0];
        h.clock.advance(Duration::from_secs(3600));
        let _ = start_sms(&h, one, "+31687654321").await;
        let before = fake.messages().len();
        let results = futures::future::join_all((0..50).map(|_| resend(&h, one))).await;
        assert!(
            results.iter().all(|r| r.is_err()),
            "within the cooldown of the enrollment's code"
        );
        assert_eq!(fake.messages().len(), before);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reset_an_sms_user_may_enroll_totp() {
    let db = padlock_test_support::sqlite();
    let (h, fake) = with_twilio(&db).await;
    h.add_user("alice", &[]).await;
    let session = h.sign_in("alice").await;
    let started = start_sms(&h, &session.access_token, PHONE).await.unwrap();
    h.confirm(
        &session.access_token,
        &started.enrollment_id,
        &last_code(&fake),
    )
    .await
    .unwrap();
    assert_refused(
        h.start_totp(&session.access_token).await,
        Code::FailedPrecondition,
        Reason::FactorLocked.as_str_name(),
    );
    let sam = h.support_user("sam").await;
    h.support()
        .reset_factor(bearer(
            &sam,
            ResetFactorRequest {
                username: "alice".into(),
                ticket: "CHG77".into(),
                reason: "Lost phone".into(),
            },
        ))
        .await
        .unwrap();
    let refreshed = h
        .sessions()
        .refresh(RefreshRequest {
            session_token: session.session_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refreshed.mfa_at, None);
    h.start_totp(&refreshed.access_token).await.unwrap();
    h.stop().await;
}
