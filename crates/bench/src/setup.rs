//! Provisioning over gRPC, the way an operator and users would: a support
//! user (made beforehand with `padlock-auth users add --role support --role
//! operator`) steps up with TOTP, as support must (enrolling on its first
//! run, the secret kept in `--support-totp-file`), and creates the bench
//! users with `SupportService.CreateUser` under a ticket; each signs in
//! and, where a scenario needs it, enrolls TOTP with a code this tool
//! computes, which steps the session up. Every user of a run is named
//! `bench-<run id>-<n>`, so runs against the same data never collide.
//!
//! Argon2id dominates (one hash per CreateUser, one per SignIn), so users
//! are provisioned in parallel and the setup's time is reported apart from
//! the measurements.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use padlock_proto::auth::v1::session_service_client::SessionServiceClient;
use padlock_proto::auth::v1::support_service_client::SupportServiceClient;
use padlock_proto::auth::v1::two_factor_service_client::TwoFactorServiceClient;
use padlock_proto::auth::v1::{
    ConfirmEnrollmentRequest, CreateUserRequest, RefreshRequest, SignInRequest,
    StartTotpEnrollmentRequest, StartTotpEnrollmentResponse, VerifyRequest,
};
use rand::distributions::{Alphanumeric, DistString as _};
use tokio::sync::Mutex;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::cli::SupportArgs;
use crate::grpc::{authed, bearer, endpoint, rpc_error};
use crate::{clock, steps, totp};

/// Letters and digits; 24 of 62 symbols is about 143 bits.
const PASSWORD_LEN: usize = 24;
/// Characters of the run id in every username.
const RUN_ID_LEN: usize = 8;
/// Setups of at least this many users report their progress.
const PROGRESS_FROM: usize = 100;
/// A token this close to its expiry is refreshed before it is used.
const REFRESH_MARGIN_SECS: i64 = 120;
/// What `CreateUser` records as the change the bench users were made
/// under, followed by the run id.
const TICKET_PREFIX: &str = "BENCH-";
/// The support user's step-up presents at most this many codes: one per
/// step, later steps after `CODE_REUSED` (an earlier run used the code).
const STEP_UP_TRIES: usize = 5;

/// An open session: its opaque token and the current access token.
#[derive(Clone)]
pub struct Session {
    pub username: String,
    pub session_token: String,
    pub bearer: AsciiMetadataValue,
    /// When the access token expires, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A user with an active TOTP factor.
#[derive(Clone)]
pub struct TotpUser {
    /// The session, stepped up: its access token carries `mfa_at`.
    pub session: Session,
    /// The access token from sign-in, before the step-up: no `mfa_at`.
    pub before_step_up: AsciiMetadataValue,
    pub secret: Vec<u8>,
    /// The last step the service accepted a code for.
    pub last_step: u64,
}

impl std::fmt::Debug for TotpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpUser")
            .field("session", &self.session)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// Makes users on one auth service for one run.
pub struct Provisioner {
    channel: Channel,
    support: Mutex<Session>,
    run_id: String,
    password: String,
    concurrency: usize,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("run_id", &self.run_id)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

fn seconds(timestamp: Option<prost_types::Timestamp>) -> i64 {
    timestamp.map_or(0, |t| t.seconds)
}

fn now_secs() -> i64 {
    i64::try_from(clock::unix_now().as_secs()).unwrap_or(i64::MAX)
}

/// Signs `username` in on `channel`.
pub async fn sign_in_on(
    channel: &Channel,
    username: &str,
    password: &str,
) -> anyhow::Result<Session> {
    let reply = SessionServiceClient::new(channel.clone())
        .sign_in(SignInRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map_err(|s| rpc_error(&format!("SignIn {username}"), &s))?
        .into_inner();
    Ok(Session {
        username: username.to_owned(),
        bearer: bearer(&reply.access_token)?,
        session_token: reply.session_token,
        expires_at: seconds(reply.expires_at),
    })
}

/// The lowest TOTP step after `last` that the service surely accepts now,
/// waiting for the clock if none is presentable yet (see [`steps`]).
async fn presentable_step(last: Option<u64>) -> u64 {
    loop {
        match steps::next_step(last, clock::unix_now()) {
            Ok(step) => return step,
            Err(wait) => tokio::time::sleep(wait).await,
        }
    }
}

/// Starts a TOTP enrollment for the session's user.
async fn start_totp(
    channel: &Channel,
    session: &Session,
) -> Result<StartTotpEnrollmentResponse, tonic::Status> {
    TwoFactorServiceClient::new(channel.clone())
        .start_totp_enrollment(authed(StartTotpEnrollmentRequest {}, &session.bearer))
        .await
        .map(tonic::Response::into_inner)
}

/// Confirms `started` with a code this tool computes, which steps the
/// session up.
async fn confirm_totp(
    channel: &Channel,
    session: Session,
    started: StartTotpEnrollmentResponse,
) -> anyhow::Result<TotpUser> {
    let username = session.username.clone();
    let secret = totp::decode_base32(&started.secret)
        .with_context(|| format!("StartTotpEnrollment {username}: the secret is not base32"))?;
    let step = presentable_step(None).await;
    let confirmed = TwoFactorServiceClient::new(channel.clone())
        .confirm_enrollment(authed(
            ConfirmEnrollmentRequest {
                enrollment_id: started.enrollment_id,
                code: totp::code(&secret, step),
            },
            &session.bearer,
        ))
        .await
        .map_err(|s| rpc_error(&format!("ConfirmEnrollment {username}"), &s))?
        .into_inner();
    Ok(TotpUser {
        before_step_up: session.bearer.clone(),
        session: Session {
            bearer: bearer(&confirmed.access_token)?,
            expires_at: seconds(confirmed.expires_at),
            ..session
        },
        secret,
        last_step: step,
    })
}

/// The padlock `ErrorInfo` reason of a refusal, if it has one.
fn reason(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// Steps the support user's session up with TOTP: support calls need a
/// second factor verified in the session within the hour, CreateApp one
/// within eight. With the secret kept in `file`, a code from it; without
/// one (no file, or a file whose factor is gone), by enrolling, keeping
/// the new secret in `file` before confirming it, so it is never lost.
async fn step_up_support(
    channel: &Channel,
    session: Session,
    file: Option<&Path>,
) -> anyhow::Result<Session> {
    let username = session.username.clone();
    if let Some(path) = file.filter(|p| p.exists()) {
        let secret = read_secret(path)?;
        if let Some(stepped_up) = verify_support(channel, &session, &secret, path).await? {
            return Ok(stepped_up);
        }
        eprintln!(
            "  {username} has no second factor: enrolling TOTP again, its secret in {}",
            path.display()
        );
    }
    let started = match start_totp(channel, &session).await {
        Ok(started) => started,
        Err(status) if reason(&status).as_deref() == Some("FACTOR_LOCKED") => {
            anyhow::bail!(
                "{username} has a second factor already, and this run does not know its \
                 secret: give --support-totp-file (or PADLOCK_BENCH_SUPPORT_TOTP_FILE) the \
                 file an earlier run wrote, or have support reset the factor"
            )
        }
        Err(status) => {
            return Err(rpc_error(
                &format!("StartTotpEnrollment {username}"),
                &status,
            ));
        }
    };
    if let Some(path) = file {
        write_secret(path, &started.secret)?;
    }
    Ok(confirm_totp(channel, session, started).await?.session)
}

/// `Verify` with codes from `secret` until one is accepted: a code an
/// earlier run presented in the same step is `CODE_REUSED`, so the next
/// step's follows. `None` when the user has no factor to verify.
async fn verify_support(
    channel: &Channel,
    session: &Session,
    secret: &[u8],
    path: &Path,
) -> anyhow::Result<Option<Session>> {
    let mut client = TwoFactorServiceClient::new(channel.clone());
    let mut last = None;
    for _ in 0..STEP_UP_TRIES {
        let step = presentable_step(last).await;
        let request = authed(
            VerifyRequest {
                code: totp::code(secret, step),
            },
            &session.bearer,
        );
        match client.verify(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                return Ok(Some(Session {
                    bearer: bearer(&reply.access_token)?,
                    expires_at: seconds(reply.expires_at),
                    ..session.clone()
                }));
            }
            Err(status) => match reason(&status).as_deref() {
                Some("CODE_REUSED") => last = Some(step),
                Some("FACTOR_NOT_ENROLLED") => return Ok(None),
                Some("CODE_INVALID") => anyhow::bail!(
                    "{} does not hold {}'s TOTP secret (the code was wrong)",
                    path.display(),
                    session.username
                ),
                _ => {
                    return Err(rpc_error(&format!("Verify {}", session.username), &status));
                }
            },
        }
    }
    anyhow::bail!(
        "Verify {}: {STEP_UP_TRIES} codes in a row were used already; is another run \
         stepping up the same support user?",
        session.username
    )
}

/// The base32 TOTP secret in `path`, decoded; the error never shows it.
fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the support user's TOTP secret from {}",
            path.display()
        )
    })?;
    totp::decode_base32(text.trim())
        .with_context(|| format!("{} holds no base32 TOTP secret", path.display()))
}

/// Writes `secret_b32` to `path` (0600, only the owner reads it) through a
/// temporary file, so a reader never sees half a secret.
fn write_secret(path: &Path, secret_b32: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{secret_b32}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| {
        format!(
            "writing the support user's TOTP secret to {}",
            path.display()
        )
    })
}

/// Runs `task(i)` for `i` in `0..n`, `concurrency` at a time, printing
/// progress on standard error; stops at the first error.
pub async fn parallel<T, F, Fut>(
    what: &str,
    n: usize,
    concurrency: usize,
    task: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let done = AtomicUsize::new(0);
    // Progress every tenth for large setups; small ones just finish.
    let every = if n >= PROGRESS_FROM { n / 10 } else { n.max(1) };
    futures::stream::iter(0..n)
        .map(&task)
        .buffer_unordered(concurrency.max(1))
        .inspect_ok(|_| {
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if d.is_multiple_of(every) || d == n {
                eprintln!("  {what}: {d}/{n}");
            }
        })
        .try_collect()
        .await
}

impl Provisioner {
    /// Connects to auth at `addr`, signs in as the support user, which
    /// needs the `support` role (CreateUser) and, for `check-access` and
    /// `transport`, the `operator` role (CreateApp), and steps its session
    /// up with TOTP (both need a second factor).
    pub async fn connect(
        addr: &str,
        support: &SupportArgs,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let channel = endpoint(addr, timeout)?
            .connect()
            .await
            .with_context(|| format!("connecting to auth at {addr}"))?;
        let session = sign_in_on(&channel, &support.support_username, support.password()?)
            .await
            .context(
                "signing in as the support user (create it first: padlock-auth users add \
                 --username <name> --role support --role operator)",
            )?;
        let session =
            step_up_support(&channel, session, support.support_totp_file.as_deref()).await?;
        let mut rng = rand::rngs::OsRng;
        Ok(Self {
            channel,
            support: Mutex::new(session),
            run_id: Alphanumeric
                .sample_string(&mut rng, RUN_ID_LEN)
                .to_ascii_lowercase(),
            password: Alphanumeric.sample_string(&mut rng, PASSWORD_LEN),
            concurrency: support.setup_concurrency.max(1),
        })
    }

    /// The random id in every username of this run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The `n`th bench user of this run.
    pub fn username(&self, n: usize) -> String {
        format!("bench-{}-{n:06}", self.run_id)
    }

    /// The support user's current access token (the operator, for deploy).
    pub async fn support_bearer(&self) -> anyhow::Result<AsciiMetadataValue> {
        let mut support = self.support.lock().await;
        self.ensure_fresh(&mut support, now_secs()).await?;
        Ok(support.bearer.clone())
    }

    /// Creates `username` (password: this run's) with `roles`.
    pub async fn create_user(&self, username: &str, roles: &[&str]) -> anyhow::Result<()> {
        let support = self.support_bearer().await?;
        SupportServiceClient::new(self.channel.clone())
            .create_user(authed(
                CreateUserRequest {
                    username: username.to_owned(),
                    password: self.password.clone(),
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                    ticket: format!("{TICKET_PREFIX}{}", self.run_id),
                },
                &support,
            ))
            .await
            .map_err(|s| rpc_error(&format!("CreateUser {username}"), &s))?;
        Ok(())
    }

    /// Signs a user of this run in.
    pub async fn sign_in(&self, username: &str) -> anyhow::Result<Session> {
        sign_in_on(&self.channel, username, &self.password).await
    }

    /// The password every user of this run has (for the sign-in scenario).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Enrolls TOTP for the session's user and confirms it with a code for
    /// the lowest step the service surely accepts (see [`steps`]), which
    /// steps the session up.
    pub async fn enroll_totp(&self, session: Session) -> anyhow::Result<TotpUser> {
        let started = start_totp(&self.channel, &session).await?;
        confirm_totp(&self.channel, session, started).await
    }

    /// A new access token for the session (`mfa_at` carried over).
    pub async fn refresh(&self, session: &mut Session) -> anyhow::Result<()> {
        let reply = SessionServiceClient::new(self.channel.clone())
            .refresh(RefreshRequest {
                session_token: session.session_token.clone(),
            })
            .await
            .map_err(|s| rpc_error(&format!("Refresh {}", session.username), &s))?
            .into_inner();
        session.bearer = bearer(&reply.access_token)?;
        session.expires_at = seconds(reply.expires_at);
        Ok(())
    }

    /// Refreshes the session unless its access token outlives `until`
    /// (Unix seconds) by the margin.
    pub async fn ensure_fresh(&self, session: &mut Session, until: i64) -> anyhow::Result<()> {
        if session.expires_at < until.saturating_add(REFRESH_MARGIN_SECS) {
            self.refresh(session).await?;
        }
        Ok(())
    }

    /// Refreshes, in parallel, every session whose access token would expire
    /// within `secs` from now (plus the margin).
    pub async fn keep_fresh_for<'a>(
        &self,
        sessions: impl IntoIterator<Item = &'a mut Session>,
        secs: u64,
    ) -> anyhow::Result<usize> {
        let until = now_secs().saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
        let stale: Vec<&mut Session> = sessions
            .into_iter()
            .filter(|s| s.expires_at < until.saturating_add(REFRESH_MARGIN_SECS))
            .collect();
        let n = stale.len();
        futures::stream::iter(stale)
            .map(|s| self.refresh(s))
            .buffer_unordered(self.concurrency)
            .try_collect::<()>()
            .await?;
        Ok(n)
    }

    /// [`parallel`] at this provisioner's concurrency.
    pub async fn parallel<T, F, Fut>(&self, what: &str, n: usize, task: F) -> anyhow::Result<Vec<T>>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        parallel(what, n, self.concurrency, task).await
    }

    /// Creates users `0..n` (no roles) and signs each in.
    pub async fn signed_in_users(&self, n: usize) -> anyhow::Result<Vec<Session>> {
        self.parallel("users created and signed in", n, |i| async move {
            let username = self.username(i);
            self.create_user(&username, &[]).await?;
            self.sign_in(&username).await
        })
        .await
    }

    /// Creates users `0..n`, signs each in and enrolls TOTP.
    pub async fn totp_users(&self, n: usize) -> anyhow::Result<Vec<TotpUser>> {
        self.parallel("users created, signed in and enrolled", n, |i| async move {
            let username = self.username(i);
            self.create_user(&username, &[]).await?;
            let session = self.sign_in(&username).await?;
            self.enroll_totp(session).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_support_secret_file_round_trips_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("support-totp");
        // RFC 4648 §10: "foobar" in base32.
        write_secret(&path, "MZXW6YTBOI======").unwrap();
        assert_eq!(read_secret(&path).unwrap(), b"foobar");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A new enrollment replaces it.
        write_secret(&path, "MZXW6===").unwrap();
        assert_eq!(read_secret(&path).unwrap(), b"foo");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_file_without_a_secret_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("support-totp");
        std::fs::write(&path, "not-a-secret!\n").unwrap();
        let error = format!("{:#}", read_secret(&path).unwrap_err());
        assert!(error.contains("holds no base32 TOTP secret"), "{error}");
        assert!(!error.contains("not-a-secret"), "{error}");
    }
}
