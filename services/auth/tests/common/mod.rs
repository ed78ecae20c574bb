//! Starts the auth service in-process on 127.0.0.1:0 with a manual clock,
//! on a fresh database of each backend, and speaks to it with the generated
//! gRPC clients, exactly as other services do.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use padlock_auth::{App, Options};
use padlock_proto::auth::v1::{
    SignInResponse, StartTotpEnrollmentResponse, StepUpResponse,
    key_service_client::KeyServiceClient, session_service_client::SessionServiceClient,
    support_service_client::SupportServiceClient,
    two_factor_service_client::TwoFactorServiceClient,
};
use padlock_runtime::{Clock, ManualClock};
use padlock_test_support::TestDatabase;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub mod store;

/// 2027-01-15T08:00:00Z: a fixed start, so every run sees the same steps.
pub const START: i64 = 1_800_000_000;
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Harness {
    pub backend: &'static str,
    pub clock: ManualClock,
    pub app: App,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(db: &TestDatabase) -> Harness {
        Self::start_with(db, |o| o).await
    }

    /// Starts with options adjusted by `configure` (e.g. an SMS sender).
    pub async fn start_with(
        db: &TestDatabase,
        configure: impl FnOnce(Options) -> Options,
    ) -> Harness {
        padlock_runtime::telemetry::init(padlock_runtime::telemetry::LogFormat::Text);
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at_unix(START);
        let mut options = Options::in_dir(dir.path().join("data"));
        options.database_url = Some(padlock_runtime::Secret::new(db.url.clone()));
        let options = configure(options);
        let app = padlock_auth::open(options, Arc::new(clock.clone()))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = app.clone();
        let task = tokio::spawn(async move {
            padlock_auth::serve(served, listener, &Default::default(), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Harness {
            backend: db.backend,
            clock,
            app,
            channel,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }

    pub fn two_factor(&self) -> TwoFactorServiceClient<Channel> {
        TwoFactorServiceClient::new(self.channel.clone())
    }

    pub fn keys(&self) -> KeyServiceClient<Channel> {
        KeyServiceClient::new(self.channel.clone())
    }

    pub fn support(&self) -> SupportServiceClient<Channel> {
        SupportServiceClient::new(self.channel.clone())
    }

    /// Provisions a user as `padlock-auth users add` does.
    pub async fn add_user(&self, username: &str, roles: &[&str]) {
        padlock_auth::grpc::support::create_user(
            self.app.store(),
            self.app.hasher(),
            self.clock.unix(),
            None,
            None,
            username,
            PASSWORD.to_owned(),
            roles.iter().map(|r| r.to_string()).collect(),
        )
        .await
        .unwrap();
    }

    pub async fn sign_in(&self, username: &str) -> SignInResponse {
        self.sessions()
            .sign_in(padlock_proto::auth::v1::SignInRequest {
                username: username.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// A support person who verified their second factor just now: their
    /// access token, which support's calls accept for an hour.
    pub async fn support_user(&self, username: &str) -> String {
        self.add_user(username, &["support"]).await;
        let session = self.sign_in(username).await;
        self.enroll_totp(&session).await.1.access_token
    }

    /// Enrolls TOTP in `session` and confirms it with the current code:
    /// the secret and the step-up result.
    pub async fn enroll_totp(&self, session: &SignInResponse) -> (Vec<u8>, StepUpResponse) {
        let enrollment = self.start_totp(&session.access_token).await.unwrap();
        let secret = base32_decode(&enrollment.secret);
        let step_up = self
            .confirm(
                &session.access_token,
                &enrollment.enrollment_id,
                &self.code(&secret, 0),
            )
            .await
            .unwrap();
        (secret, step_up)
    }

    /// A user with a confirmed TOTP factor: their session, secret and the
    /// step-up result of the confirmation.
    pub async fn enrolled_user(&self, username: &str) -> (SignInResponse, Vec<u8>, StepUpResponse) {
        self.add_user(username, &[]).await;
        let session = self.sign_in(username).await;
        let (secret, step_up) = self.enroll_totp(&session).await;
        (session, secret, step_up)
    }

    pub async fn start_totp(&self, token: &str) -> Result<StartTotpEnrollmentResponse, Status> {
        self.two_factor()
            .start_totp_enrollment(bearer(
                token,
                padlock_proto::auth::v1::StartTotpEnrollmentRequest {},
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn confirm(
        &self,
        token: &str,
        enrollment_id: &str,
        code: &str,
    ) -> Result<StepUpResponse, Status> {
        self.two_factor()
            .confirm_enrollment(bearer(
                token,
                padlock_proto::auth::v1::ConfirmEnrollmentRequest {
                    enrollment_id: enrollment_id.into(),
                    code: code.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn verify(&self, token: &str, code: &str) -> Result<StepUpResponse, Status> {
        self.two_factor()
            .verify(bearer(
                token,
                padlock_proto::auth::v1::VerifyRequest { code: code.into() },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// The code for `secret` at the clock's time plus `steps` TOTP steps.
    pub fn code(&self, secret: &[u8], steps: i64) -> String {
        let at = u64::try_from(self.clock.unix() + steps * 30).unwrap();
        padlock_auth::totp::code_at(secret, padlock_auth::totp::Algorithm::Sha1, 6, at)
    }

    /// Verifies an access token the way the deploy service will: against
    /// the published JWKS, at the harness's time.
    pub async fn claims(&self, token: &str) -> padlock_token::Claims {
        let jwks = self
            .keys()
            .get_jwks(padlock_proto::auth::v1::GetJwksRequest {})
            .await
            .unwrap()
            .into_inner();
        let set = padlock_token::JwkSet {
            keys: jwks
                .keys
                .into_iter()
                .map(|k| padlock_token::Jwk {
                    kty: k.kty,
                    crv: k.crv,
                    x: k.x,
                    kid: k.kid,
                    use_: k.r#use,
                    alg: k.alg,
                })
                .collect(),
        };
        padlock_token::Verifier::new(&set, "padlock-auth", "padlock-deploy")
            .verify(token, self.clock.unix())
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A request with `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The `ErrorInfo.reason` of a status, checking the domain.
pub fn reason(status: &Status) -> String {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "padlock");
    info.reason.clone()
}

/// Asserts code and reason together.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    expected_reason: &str,
) -> Status {
    let status = result.expect_err("expected a refusal");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status), expected_reason, "{status:?}");
    status
}

/// The fields named in a BadRequest.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// RFC 4648 base32 without padding, as an authenticator app reads the key.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base32") as u64;
        bits = (bits << 5) | v;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}
