//! The auth service under fuzzing: the real `App` on SQLite in memory
//! (a file on tmpfs, so WAL mode works as in production), a manual clock,
//! an SMS sender that only remembers the last code, and every auth RPC
//! served in-process. Built once per process; each input's calls run on
//! it in turn (see [`crate::input`] for the layout).
//!
//! Callers are a fixed cast: nobody, a garbage token, a user without a
//! factor, a user with an active TOTP factor, and a support person whose
//! session verified a second factor (as every support call needs) or did
//! not. Each input gets fresh sessions for them, and the clock moves a TOTP step on
//! per input, so a sign-out or an accepted code in one input does not
//! change what the next one can reach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use padlock_auth::sms::{SendError, Sent, SmsSender};
use padlock_auth::{App, Options};
use padlock_proto::auth::v1::{
    ConfirmEnrollmentRequest, StartSmsEnrollmentResponse, StartTotpEnrollmentRequest,
    StartTotpEnrollmentResponse,
};
use padlock_runtime::{Clock as _, ManualClock};
use tonic::service::Routes;

use crate::grpc;
use crate::input::{self, Substitutions};

/// Every auth RPC, indexed by an input's method byte.
pub const METHODS: &[&str] = &[
    "/padlock.auth.v1.SessionService/SignIn",
    "/padlock.auth.v1.SessionService/Refresh",
    "/padlock.auth.v1.SessionService/SignOut",
    "/padlock.auth.v1.TwoFactorService/GetFactor",
    "/padlock.auth.v1.TwoFactorService/StartTotpEnrollment",
    "/padlock.auth.v1.TwoFactorService/StartSmsEnrollment",
    "/padlock.auth.v1.TwoFactorService/ConfirmEnrollment",
    "/padlock.auth.v1.TwoFactorService/SendSmsCode",
    "/padlock.auth.v1.TwoFactorService/Verify",
    "/padlock.auth.v1.KeyService/GetJwks",
    "/padlock.auth.v1.SupportService/CreateUser",
    "/padlock.auth.v1.SupportService/ResetFactor",
    "/padlock.auth.v1.SupportService/Unlock",
    "/padlock.auth.v1.SupportService/GetUserFactor",
    "/padlock.auth.v1.SupportService/ListAuditEvents",
];

/// Who makes a call, indexed by an input's caller byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Nobody,
    GarbageToken,
    Plain,
    Totp,
    /// Support, stepped up in this session.
    Support,
    /// Support, signed in only: refused with `MFA_REQUIRED`.
    SupportWithoutMfa,
}

pub const CALLERS: &[Caller] = &[
    Caller::Nobody,
    Caller::GarbageToken,
    Caller::Plain,
    Caller::Totp,
    Caller::Support,
    Caller::SupportWithoutMfa,
];

/// Usernames of the cast; all share [`PASSWORD`].
pub const PLAIN_USER: &str = "fuzz-plain";
pub const TOTP_USER: &str = "fuzz-totp";
pub const SUPPORT_USER: &str = "fuzz-support";
pub const PASSWORD: &str = "correct horse battery staple";

/// Replaced by the caller's session token (43 characters, like a real one).
pub const SESSION_PLACEHOLDER: &str = "SESSION-TOKEN-PLACEHOLDER-0123456789abcdefg";
/// Replaced by the TOTP user's current code, or for anyone else the last
/// SMS code sent.
pub const CODE_PLACEHOLDER: &str = "@CODE@";
/// Replaced by the enrollment id the last started enrollment returned.
pub const ENROLLMENT_PLACEHOLDER: &str = "00000000-0000-4000-8000-00000000e001";

/// One RPC per TOTP step: the clock moves this far before each input.
const STEP: Duration = Duration::from_secs(30);

/// The harness; see the module docs.
#[derive(Debug)]
pub struct AuthTarget {
    runtime: tokio::runtime::Runtime,
    clock: ManualClock,
    app: App,
    routes: Routes,
    /// The cast's user ids, by username.
    users: HashMap<&'static str, String>,
    totp_secret: Vec<u8>,
    sms: Arc<LastCode>,
    last_enrollment: Mutex<String>,
    _dir: tempfile::TempDir,
}

impl AuthTarget {
    /// Opens the service and provisions the cast, with the TOTP user's
    /// factor enrolled and confirmed through the real handlers.
    ///
    /// # Panics
    ///
    /// If the service cannot start: the harness is broken, not the input.
    pub fn new() -> Self {
        let runtime = crate::runtime();
        let dir = memory_dir();
        let clock = ManualClock::at_unix(crate::START);
        let sms = Arc::new(LastCode::default());
        let mut options = Options::in_dir(dir.path().join("auth"));
        options.database_url = Some(padlock_runtime::Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("auth.db").display()
        )));
        options.sms = Some(sms.clone());
        let app = runtime
            .block_on(padlock_auth::open(options, Arc::new(clock.clone())))
            .expect("auth opens");
        let routes = padlock_auth::routes(&app);

        let mut users = HashMap::new();
        for (name, roles) in [
            (PLAIN_USER, vec![]),
            (TOTP_USER, vec![]),
            (SUPPORT_USER, vec!["support".to_owned()]),
        ] {
            let id = runtime
                .block_on(app.add_user(name, PASSWORD.to_owned(), roles))
                .expect("a fuzz user");
            users.insert(name, id);
        }
        let mut target = AuthTarget {
            runtime,
            clock,
            app,
            routes,
            users,
            totp_secret: Vec::new(),
            sms,
            last_enrollment: Mutex::new(String::new()),
            _dir: dir,
        };
        target.totp_secret = target.enroll_totp_user();
        target
    }

    /// Starts and confirms the TOTP user's factor; returns its secret.
    fn enroll_totp_user(&self) -> Vec<u8> {
        use prost::Message as _;
        let (token, _) = self.session_for(TOTP_USER, false);
        let bearer = format!("Bearer {token}");
        let started = self.runtime.block_on(grpc::call(
            &self.routes,
            "/padlock.auth.v1.TwoFactorService/StartTotpEnrollment",
            Some(&bearer),
            &[&StartTotpEnrollmentRequest {}.encode_to_vec()],
        ));
        let started: StartTotpEnrollmentResponse =
            started.decode().expect("the TOTP user's enrollment starts");
        let secret = totp_rs::Secret::try_from_base32(&started.secret)
            .expect("a base32 secret")
            .as_bytes()
            .to_vec();
        let confirm = ConfirmEnrollmentRequest {
            enrollment_id: started.enrollment_id,
            code: self.totp_code(&secret),
        };
        let confirmed = self.runtime.block_on(grpc::call(
            &self.routes,
            "/padlock.auth.v1.TwoFactorService/ConfirmEnrollment",
            Some(&bearer),
            &[&confirm.encode_to_vec()],
        ));
        assert_eq!(
            confirmed.status.code(),
            tonic::Code::Ok,
            "{:?}",
            confirmed.status
        );
        secret
    }

    /// The TOTP code for `secret` now.
    fn totp_code(&self, secret: &[u8]) -> String {
        let now = u64::try_from(self.clock.unix()).unwrap_or_default();
        padlock_auth::totp::code_at(
            secret,
            padlock_auth::totp::Algorithm::Sha1,
            padlock_auth::totp::DIGITS,
            now,
        )
    }

    /// A fresh live session for `username`: its access token and session
    /// token. `stepped_up`: a second factor was verified in it just now
    /// (what a `Verify` leaves behind).
    fn session_for(&self, username: &str, stepped_up: bool) -> (String, String) {
        let tokens = self
            .runtime
            .block_on(self.app.open_session(&self.users[username], stepped_up))
            .expect("a fuzz session");
        (tokens.access_token, tokens.session_token)
    }

    /// Runs every call in `data` and returns their status codes. Panics
    /// when a status breaks the oracle ([`grpc::check`]).
    pub fn run(&self, data: &[u8]) -> Vec<tonic::Code> {
        self.clock.advance(STEP);
        let mut codes = Vec::new();
        let mut sessions: HashMap<usize, (String, String)> = HashMap::new();
        for call in input::calls(data) {
            let path = METHODS[usize::from(call.method) % METHODS.len()];
            let caller_index = usize::from(call.caller) % CALLERS.len();
            let caller = CALLERS[caller_index];
            let (authorization, session_token) = match caller {
                Caller::Nobody => (None, String::new()),
                Caller::GarbageToken => (Some("Bearer e30.e30.AAAA".to_owned()), String::new()),
                Caller::Plain | Caller::Totp | Caller::Support | Caller::SupportWithoutMfa => {
                    let username = match caller {
                        Caller::Plain => PLAIN_USER,
                        Caller::Totp => TOTP_USER,
                        _ => SUPPORT_USER,
                    };
                    let stepped_up = caller == Caller::Support;
                    let (token, session) = sessions
                        .entry(caller_index)
                        .or_insert_with(|| self.session_for(username, stepped_up))
                        .clone();
                    (Some(format!("Bearer {token}")), session)
                }
            };
            let code = match caller {
                Caller::Totp => self.totp_code(&self.totp_secret),
                _ => self.sms.last(),
            };
            let enrollment = lock(&self.last_enrollment).clone();
            let mut substitutions = Substitutions::default();
            substitutions.add(SESSION_PLACEHOLDER, &session_token);
            substitutions.add(CODE_PLACEHOLDER, &code);
            substitutions.add(ENROLLMENT_PLACEHOLDER, &enrollment);
            let body = substitutions.apply(call.body);

            let reply = self.runtime.block_on(grpc::call(
                &self.routes,
                path,
                authorization.as_deref(),
                &[&body],
            ));
            grpc::check(path, &reply.status, &[&session_token, &code]);
            self.remember_enrollment(path, &reply);
            codes.push(reply.status.code());
        }
        codes
    }

    /// Keeps the enrollment id a started enrollment returned, for
    /// [`ENROLLMENT_PLACEHOLDER`].
    fn remember_enrollment(&self, path: &str, reply: &grpc::Reply) {
        let id = if path.ends_with("/StartTotpEnrollment") {
            reply
                .decode::<StartTotpEnrollmentResponse>()
                .map(|r| r.enrollment_id)
        } else if path.ends_with("/StartSmsEnrollment") {
            reply
                .decode::<StartSmsEnrollmentResponse>()
                .map(|r| r.enrollment_id)
        } else {
            None
        };
        if let Some(id) = id {
            *lock(&self.last_enrollment) = id;
        }
    }
}

impl Default for AuthTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// An SMS sender that sends nothing and keeps the last code it was given.
#[derive(Debug, Default)]
struct LastCode(Mutex<String>);

impl LastCode {
    fn last(&self) -> String {
        lock(&self.0).clone()
    }
}

#[async_trait::async_trait]
impl SmsSender for LastCode {
    async fn send(
        &self,
        _to: &str,
        body: &str,
        _deadline: Option<Instant>,
    ) -> Result<Sent, SendError> {
        let code: String = body.chars().take_while(char::is_ascii_digit).collect();
        *lock(&self.0) = code;
        Ok(Sent {
            provider_id: "SMfuzz".into(),
        })
    }
}

/// A poisoned lock only means an earlier input panicked, which already
/// ended the run; the value is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A directory in memory (tmpfs) when the machine has one.
pub(crate) fn memory_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("padlock-fuzz-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory")
}
