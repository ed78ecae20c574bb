//! The Twilio SMS sender against a Twilio-compatible fake: the exact request
//! Twilio would receive, its error codes, retries, timeouts and deadlines.
//! Time limits are configuration (short timeouts and deadlines), never
//! sleeps in the test.

use std::time::{Duration, Instant};

use padlock_auth::sms::twilio::{Sender, TwilioConfig, TwilioSender};
use padlock_auth::sms::{PermanentReason, SendError, SmsSender};
use padlock_runtime::Secret;
use padlock_test_support::fake_twilio::{Behavior, FakeTwilio};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const SERVICE: &str = "MGfedcba9876543210fedcba9876543210";
const FROM: &str = "+15005550006";
const TO: &str = "+15005550001";
const BODY: &str = "123456 is your padlock verification code. Never share it & keep it safe.";

async fn fake() -> FakeTwilio {
    FakeTwilio::start(SID, TOKEN).await
}

fn config(fake: &FakeTwilio) -> TwilioConfig {
    let mut config = TwilioConfig::new(
        SID,
        Secret::new(TOKEN.to_owned()),
        Sender::From(FROM.to_owned()),
    );
    config.base_url = fake.base_url();
    config
}

fn sender(fake: &FakeTwilio) -> TwilioSender {
    TwilioSender::new(config(fake)).expect("a valid config")
}

fn permanent(reason: PermanentReason, code: u32) -> SendError {
    SendError::Permanent {
        reason,
        provider_code: Some(code),
    }
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn from_number_request_reaches_twilio_exactly() {
    let fake = fake().await;
    let sent = sender(&fake).send(TO, BODY, None).await.unwrap();

    assert!(sent.provider_id.starts_with("SM"), "{sent:?}");
    assert_eq!(sent.provider_id.len(), 34);
    assert_eq!(fake.requests(), 1);
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.to, TO);
    assert_eq!(message.from.as_deref(), Some(FROM));
    assert_eq!(message.messaging_service_sid, None);
    assert_eq!(message.body, BODY);
    assert_eq!(
        message.form,
        fields(&[("To", TO), ("From", FROM), ("Body", BODY)])
    );
}

#[tokio::test]
async fn messaging_service_is_sent_instead_of_from() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.from = Sender::MessagingService(SERVICE.to_owned());
    let sender = TwilioSender::new(config).unwrap();

    let sent = sender.send(TO, BODY, None).await.unwrap();

    assert!(sent.provider_id.starts_with("SM"));
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].from, None);
    assert_eq!(messages[0].messaging_service_sid.as_deref(), Some(SERVICE));
    assert_eq!(
        messages[0].form,
        fields(&[("To", TO), ("MessagingServiceSid", SERVICE), ("Body", BODY)])
    );
}

#[tokio::test]
async fn invalid_number_is_permanent_and_not_retried() {
    let fake = fake().await;
    fake.push(Behavior::Error {
        status: 400,
        code: 21211,
    });

    let error = sender(&fake).send(TO, BODY, None).await.unwrap_err();

    assert_eq!(error, permanent(PermanentReason::InvalidNumber, 21211));
    assert_eq!(fake.requests(), 1);
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn number_twilio_itself_finds_invalid_is_refused() {
    // No script: the fake checks E.164 like Twilio and answers 21211.
    let fake = fake().await;

    let error = sender(&fake).send("5550001", BODY, None).await.unwrap_err();

    assert_eq!(error, permanent(PermanentReason::InvalidNumber, 21211));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn unsubscribed_recipient_is_permanent() {
    let fake = fake().await;
    fake.push(Behavior::Error {
        status: 400,
        code: 21610,
    });

    let error = sender(&fake).send(TO, BODY, None).await.unwrap_err();

    assert_eq!(error, permanent(PermanentReason::Unsubscribed, 21610));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn server_error_is_retried_then_sent() {
    let fake = fake().await;
    fake.push(Behavior::Status(500));

    let sent = sender(&fake).send(TO, BODY, None).await.unwrap();

    assert!(sent.provider_id.starts_with("SM"));
    assert_eq!(fake.requests(), 2);
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn server_errors_give_transient_after_max_attempts() {
    let fake = fake().await;
    for _ in 0..3 {
        fake.push(Behavior::Status(500));
    }
    // A fourth request would be accepted: stopping at three is the sender's.
    let error = sender(&fake).send(TO, BODY, None).await.unwrap_err();

    assert_eq!(error, SendError::Transient);
    assert_eq!(fake.requests(), 3);
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_sends() {
    let fake = fake().await;
    fake.push(Behavior::TooManyRequests {
        retry_after_secs: Some(1),
    });
    let started = Instant::now();

    let sent = sender(&fake).send(TO, BODY, None).await;

    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(fake.requests(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried before Retry-After"
    );
}

#[tokio::test]
async fn rate_limit_longer_than_the_deadline_is_not_waited_for() {
    let fake = fake().await;
    fake.push(Behavior::TooManyRequests {
        retry_after_secs: Some(9),
    });
    // Ample for the first request on a loaded machine, too short for the
    // 9 s Twilio asks for (which is under MAX_RETRY_AFTER, so only the
    // deadline stops the wait).
    let deadline = Instant::now() + Duration::from_secs(6);

    let error = sender(&fake)
        .send(TO, BODY, Some(deadline))
        .await
        .unwrap_err();

    assert_eq!(error, SendError::Transient);
    assert_eq!(fake.requests(), 1);
    assert!(
        Instant::now() < deadline,
        "waited although it could not fit"
    );
}

#[tokio::test]
async fn hanging_twilio_times_out_as_transient() {
    let fake = fake().await;
    for _ in 0..3 {
        fake.push(Behavior::Hang);
    }
    // Long enough for a loaded machine to deliver each request to the fake.
    let mut config = config(&fake);
    config.request_timeout = Duration::from_secs(1);
    config.retry_backoff = Duration::from_millis(10);
    let sender = TwilioSender::new(config).unwrap();

    let error = sender.send(TO, BODY, None).await.unwrap_err();

    assert_eq!(error, SendError::Transient);
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn hanging_twilio_is_cut_off_at_the_deadline() {
    let fake = fake().await;
    fake.push(Behavior::Hang);
    // The 5 s request timeout is longer than the caller can wait; the
    // deadline still leaves a loaded machine ample time to reach the fake.
    let deadline = Instant::now() + Duration::from_secs(2);

    let error = sender(&fake)
        .send(TO, BODY, Some(deadline))
        .await
        .unwrap_err();

    assert_eq!(error, SendError::Transient);
    assert_eq!(fake.requests(), 1, "no retry after the deadline");
    assert!(Instant::now() < deadline + Duration::from_secs(1));
}

#[tokio::test]
async fn near_deadline_leaves_no_room_for_a_retry() {
    let fake = fake().await;
    fake.push(Behavior::Status(503));
    // The first retry would wait at least 5 s, past the deadline: a retry
    // would succeed, but it would end too late, so none is started.
    let mut config = config(&fake);
    config.retry_backoff = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(3);

    let error = TwilioSender::new(config)
        .unwrap()
        .send(TO, BODY, Some(deadline))
        .await
        .unwrap_err();

    assert_eq!(error, SendError::Transient);
    assert_eq!(fake.requests(), 1);
    assert!(
        Instant::now() < deadline,
        "waited for a retry that could not fit"
    );
}

#[tokio::test]
async fn passed_deadline_sends_nothing() {
    let fake = fake().await;

    let error = sender(&fake)
        .send(TO, BODY, Some(Instant::now()))
        .await
        .unwrap_err();

    assert_eq!(error, SendError::Transient);
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn wrong_auth_token_is_misconfigured() {
    let fake = fake().await;
    let mut config = config(&fake);
    config.auth_token = Secret::new("not-the-token".to_owned());
    let sender = TwilioSender::new(config).unwrap();

    let error = sender.send(TO, BODY, None).await.unwrap_err();

    assert_eq!(error, permanent(PermanentReason::Misconfigured, 20003));
    assert_eq!(fake.requests(), 1);
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn another_accounts_sid_is_misconfigured() {
    // Twilio's answer when the path names an account the credentials are not for.
    let fake = fake().await;
    let mut config = config(&fake);
    config.account_sid = "ACffffffffffffffffffffffffffffffff".to_owned();
    let sender = TwilioSender::new(config).unwrap();

    let error = sender.send(TO, BODY, None).await.unwrap_err();

    assert_eq!(error, permanent(PermanentReason::Misconfigured, 20003));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn unknown_client_error_is_rejected() {
    let fake = fake().await;
    let long = "x".repeat(1601);

    let error = sender(&fake).send(TO, &long, None).await.unwrap_err();

    assert_eq!(error, permanent(PermanentReason::Rejected, 21617));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn unreachable_port_is_transient() {
    // Bind, note the port, close it: connections there are refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = TwilioConfig::new(
        SID,
        Secret::new(TOKEN.to_owned()),
        Sender::From(FROM.to_owned()),
    );
    config.base_url = format!("http://127.0.0.1:{port}");
    config.max_attempts = 2;
    let sender = TwilioSender::new(config).unwrap();

    let error = sender.send(TO, BODY, None).await.unwrap_err();

    assert_eq!(error, SendError::Transient);
}
