//! The Twilio sender's pure parts: classification, backoff, form and URL handling.

use super::*;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";

fn config() -> TwilioConfig {
    TwilioConfig::new(
        SID,
        Secret::new("token".to_owned()),
        Sender::From("+15005550006".to_owned()),
    )
}

fn error(status: u16, body: &str) -> Outcome {
    classify(
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        body.as_bytes(),
    )
}

fn twilio_error(status: u16, code: u32) -> Outcome {
    error(
        status,
        &format!(
            r#"{{"code":{code},"message":"The 'To' number +15005550001 is not valid","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
        ),
    )
}

fn permanent(reason: PermanentReason, code: Option<u32>) -> Outcome {
    Outcome::Done(Err(SendError::Permanent {
        reason,
        provider_code: code,
    }))
}

#[test]
fn twilio_error_codes_map_to_reasons() {
    use PermanentReason::*;
    let table = [
        (400, 21211, InvalidNumber),
        (400, 21614, InvalidNumber),
        (400, 21610, Unsubscribed),
        (400, 21408, Unreachable),
        (400, 21612, Unreachable),
        (401, 20003, Misconfigured),
        (404, 20404, Misconfigured),
        (400, 21606, Misconfigured),
        (400, 21659, Misconfigured),
        (400, 21617, Rejected),
        (403, 30007, Rejected),
    ];
    for (status, code, reason) in table {
        assert_eq!(
            twilio_error(status, code),
            permanent(reason, Some(code)),
            "{status} {code}"
        );
    }
}

#[test]
fn client_errors_without_a_twilio_body_still_map() {
    use PermanentReason::*;
    assert_eq!(error(401, "Unauthorized"), permanent(Misconfigured, None));
    assert_eq!(error(400, "<html>"), permanent(Rejected, None));
    assert_eq!(error(301, ""), permanent(Misconfigured, None));
}

#[test]
fn created_message_gives_its_sid() {
    let body = r#"{"account_sid":"AC0123456789abcdef0123456789abcdef","api_version":"2010-04-01","body":"x","date_created":"Thu, 24 Aug 2023 05:01:45 +0000","direction":"outbound-api","error_code":null,"from":"+15005550006","num_segments":"1","price":null,"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","to":"+15005550001","uri":"/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/SM0123456789abcdef0123456789abcdef.json"}"#;
    assert_eq!(
        error(201, body),
        Outcome::Done(Ok(Sent {
            provider_id: "SM0123456789abcdef0123456789abcdef".to_owned()
        }))
    );
    // Accepted but unreadable: fail, but never retry into a second SMS.
    assert_eq!(error(201, "{}"), Outcome::Done(Err(SendError::Transient)));
}

#[test]
fn server_errors_and_rate_limits_are_retried() {
    assert_eq!(
        twilio_error(500, 20500),
        Outcome::Retry { retry_after: None }
    );
    assert_eq!(error(503, ""), Outcome::Retry { retry_after: None });
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, "2".parse().unwrap());
    assert_eq!(
        classify(StatusCode::TOO_MANY_REQUESTS, &headers, b"{\"code\":20429}"),
        Outcome::Retry {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    headers.insert(
        RETRY_AFTER,
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
    );
    assert_eq!(
        classify(StatusCode::TOO_MANY_REQUESTS, &headers, b""),
        Outcome::Retry { retry_after: None }
    );
}

#[test]
fn backoff_doubles_with_jitter_in_the_upper_half() {
    assert_eq!(
        backoff(DEFAULT_RETRY_BACKOFF, 1, 0.0),
        Duration::from_millis(100)
    );
    assert_eq!(
        backoff(DEFAULT_RETRY_BACKOFF, 1, 1.0),
        Duration::from_millis(200)
    );
    assert_eq!(
        backoff(DEFAULT_RETRY_BACKOFF, 2, 1.0),
        Duration::from_millis(400)
    );
    assert_eq!(
        backoff(DEFAULT_RETRY_BACKOFF, 3, 0.5),
        Duration::from_millis(600)
    );
    assert_eq!(
        backoff(DEFAULT_RETRY_BACKOFF, u32::MAX, 1.0),
        DEFAULT_RETRY_BACKOFF * 64
    );
}

#[test]
fn valid_configs_are_accepted() {
    assert!(TwilioSender::new(config()).is_ok());
    let mut service = config();
    service.from = Sender::MessagingService(SERVICE.to_owned());
    service.base_url = "http://127.0.0.1:4010/".to_owned();
    assert!(TwilioSender::new(service).is_ok());
    let mut port = config();
    port.base_url = "https://twilio.example:8443".to_owned();
    assert!(TwilioSender::new(port).is_ok());
}

#[test]
fn invalid_configs_are_refused() {
    type Change = fn(&mut TwilioConfig);
    let cases: [(Change, ConfigError); 11] = [
        (|c| c.account_sid = "AC123".into(), ConfigError::AccountSid),
        (|c| c.account_sid = SERVICE.into(), ConfigError::AccountSid),
        (
            |c| c.account_sid = "AC0123456789abcdef0123456789abcdeg".into(),
            ConfigError::AccountSid,
        ),
        (
            |c| c.auth_token = Secret::new(String::new()),
            ConfigError::AuthToken,
        ),
        (
            |c| c.from = Sender::From("15005550006".into()),
            ConfigError::FromNumber,
        ),
        (
            |c| c.from = Sender::MessagingService(SID.into()),
            ConfigError::MessagingServiceSid,
        ),
        (|c| c.max_attempts = 0, ConfigError::MaxAttempts),
        (
            |c| c.request_timeout = Duration::ZERO,
            ConfigError::RequestTimeout,
        ),
        (
            |c| c.base_url = "https://api.twilio.com/2010-04-01".into(),
            ConfigError::BaseUrl("https://api.twilio.com/2010-04-01".into()),
        ),
        (
            |c| c.base_url = "http://api.twilio.com".into(),
            ConfigError::BaseUrl("http://api.twilio.com".into()),
        ),
        (
            |c| c.base_url = "https://user:pw@api.twilio.com".into(),
            ConfigError::BaseUrl("https://user:pw@api.twilio.com".into()),
        ),
    ];
    for (change, expected) in cases {
        let mut config = config();
        change(&mut config);
        assert_eq!(TwilioSender::new(config).unwrap_err(), expected);
    }
    for url in [
        "api.twilio.com",
        "ftp://api.twilio.com",
        "https://api.twilio.com?x=1",
    ] {
        let mut config = config();
        config.base_url = url.to_owned();
        assert!(TwilioSender::new(config).is_err(), "{url}");
    }
}

#[test]
fn debug_never_shows_the_token() {
    let mut config = config();
    config.auth_token = Secret::new("s3cr3t-token".to_owned());
    let shown = format!(
        "{config:?} {:?}",
        TwilioSender::new(config.clone()).unwrap()
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
    // Nor its Basic encoding.
    assert!(!shown.contains("Basic"), "{shown}");
}

#[test]
fn messaging_service_replaces_the_from_field() {
    assert_eq!(
        rename_field(
            "To=%2B1500&From=MG1&Body=a+b%26c",
            "From",
            "MessagingServiceSid"
        ),
        "To=%2B1500&MessagingServiceSid=MG1&Body=a+b%26c"
    );
}

#[test]
fn the_built_request_goes_to_the_base_url() {
    let mut config = config();
    config.base_url = "http://127.0.0.1:4010".to_owned();
    let sender = TwilioSender::new(config).unwrap();
    let request = sender
        .request("+15005550001", "123456 is your code")
        .unwrap();
    assert_eq!(request.method(), Method::POST);
    assert_eq!(
        request.uri().to_string(),
        format!("http://127.0.0.1:4010/2010-04-01/Accounts/{SID}/Messages.json")
    );
    assert!(request.headers().contains_key(hyper::header::AUTHORIZATION));
}

#[test]
fn only_the_last_two_digits_are_logged() {
    assert_eq!(last_two("+15005550001"), "01");
    assert_eq!(last_two("7"), "7");
    assert_eq!(last_two(""), "");
}
