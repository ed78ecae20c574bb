//! Many users at once, for the scale figure (Verify with 1,000,000 users in
//! the database). Creating them over gRPC would cost two argon2id hashes
//! each (days for a million), so `bulk-users` hands them to the auth
//! service's own operator command, `padlock-auth users import` (run as a
//! process, `--auth-bin`), as JSON lines on its standard input:
//!
//! - one password hash for all of them, a real argon2id PHC string
//!   computed once here at argon2's defaults (auth's own parameters), so
//!   `SignIn` works for any of them and costs what it costs for anyone;
//! - a TOTP seed each, which the import seals and stores as an active
//!   factor exactly as enrollment does;
//! - the import's own checks, transactions and `user_created` records.
//!
//! Passwords and TOTP secrets are derived from a seed (`--bulk-seed`), so
//! the verify scenario can sign in any sample of these users and compute
//! their codes without anything stored in between. Like every other part
//! of the load tool, this uses only auth's public interfaces: its command
//! line here, gRPC for every measured request.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use padlock_runtime::Secret;
use serde::Serialize;
use sha1::Sha1;
use tokio::io::AsyncWriteExt as _;

use crate::cli::{BulkArgs, BulkUsersArgs};
use crate::grpc::endpoint;
use crate::setup::{Session, TotpUser, parallel, sign_in_on};
use crate::{clock, totp};

/// Users per `users import` run: a million users take 20 runs, each all or
/// nothing, and an interrupted load keeps the runs that finished.
const USERS_PER_IMPORT: usize = 50_000;
/// Users per transaction within a run.
const USERS_PER_TRANSACTION: &str = "10000";
/// Digits of the user number in a bulk username.
const NUMBER_DIGITS: usize = 7;
/// A signed-in sample must keep its access tokens this long past the run.
const TOKEN_MARGIN_SECS: i64 = 60;

/// The secret every bulk user's password and TOTP secret derive from.
#[derive(Debug, Clone)]
pub struct BulkSeed(Secret<String>);

impl BulkSeed {
    /// The seed from `--bulk-seed` / `PADLOCK_BENCH_BULK_SEED`.
    pub fn from_args(args: &BulkArgs) -> anyhow::Result<Self> {
        match &args.bulk_seed {
            Some(seed) if !seed.expose().is_empty() => Ok(Self(seed.clone())),
            _ => anyhow::bail!(
                "bulk users need --bulk-seed (or PADLOCK_BENCH_BULK_SEED), the same for \
                 bulk-users and verify --existing"
            ),
        }
    }

    /// HMAC-SHA-1 of `label` under the seed: 20 bytes, the TOTP secret
    /// length RFC 4226 §4 recommends.
    fn derive(&self, label: &str) -> Vec<u8> {
        // HMAC takes keys of any length (RFC 2104 §2), so this cannot fail.
        let mut mac = <Hmac<Sha1>>::new_from_slice(self.0.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!());
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The password all bulk users share: 40 hex digits.
    pub fn password(&self) -> String {
        self.derive("padlock-bench password")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `username`'s raw TOTP secret.
    pub fn totp_secret(&self, username: &str) -> Vec<u8> {
        self.derive(&format!("padlock-bench totp {username}"))
    }
}

/// The `n`th bulk user with `prefix`: `bulk-0000042`.
pub fn username(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n:0NUMBER_DIGITS$}")
}

/// What a load wrote and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub prefix: String,
    pub first: usize,
    pub users: usize,
    /// Rows inserted: a user, a factor and a `user_created` record per user.
    pub rows: usize,
    /// The one argon2id hash, before the load.
    pub hash_s: f64,
    /// The imports, from the first line written to the last run's exit.
    pub load_s: f64,
    pub rows_per_s: f64,
    pub users_per_s: f64,
}

impl LoadReport {
    fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "bulk-users: {} users {}..{} through padlock-auth users import: {} rows in \
             {:.1} s, {:.0} rows/s ({:.0} users/s); the password hash took {:.2} s",
            self.users,
            username(&self.prefix, self.first),
            username(&self.prefix, self.first + self.users.saturating_sub(1)),
            self.rows,
            self.load_s,
            self.rows_per_s,
            self.users_per_s,
            self.hash_s,
        )
    }
}

/// An argon2id PHC string of `password` at argon2's default parameters
/// (m = 19 MiB, t = 2, p = 1: those auth's hasher uses).
fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|phc| phc.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the bulk password: {e}"))
}

/// The `padlock-auth` to run: `--auth-bin`, else the one beside this
/// program (both are built into the same target directory), else `PATH`'s.
fn auth_bin(args: &BulkUsersArgs) -> PathBuf {
    if let Some(bin) = &args.auth_bin {
        return bin.clone();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("padlock-auth")))
        .filter(|path| path.is_file());
    beside.unwrap_or_else(|| PathBuf::from("padlock-auth"))
}

/// `bulk-users`: runs `padlock-auth users import` on the users' JSON lines,
/// [`USERS_PER_IMPORT`] at a time.
pub async fn run(args: &BulkUsersArgs, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    let seed = BulkSeed::from_args(&args.bulk)?;
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    args.first
        .checked_add(args.users - 1)
        .context("--first + --users is too large")?;

    let started = Instant::now();
    let hash = hash_password(&seed.password())?;
    let hash_s = started.elapsed().as_secs_f64();

    let bin = auth_bin(args);
    // The import needs no state of its own there: the database and the
    // data keys are given.
    let data_dir = tempfile::tempdir().context("a data directory for padlock-auth")?;
    let started = Instant::now();
    let end = args.first + args.users;
    let mut done = 0;
    for from in (args.first..end).step_by(USERS_PER_IMPORT) {
        let to = (from + USERS_PER_IMPORT).min(end);
        let lines = lines(&args.bulk.prefix, &seed, &hash, from..to)?;
        import(&bin, args, data_dir.path(), lines).await?;
        done += to - from;
        eprintln!(
            "  imported {done}/{} users ({:.0} users/s)",
            args.users,
            done as f64 / started.elapsed().as_secs_f64().max(0.001)
        );
    }
    let load_s = started.elapsed().as_secs_f64().max(0.001);
    let rows = 3 * args.users;
    let report = LoadReport {
        prefix: args.bulk.prefix.clone(),
        first: args.first,
        users: args.users,
        rows,
        hash_s,
        load_s,
        rows_per_s: rows as f64 / load_s,
        users_per_s: args.users as f64 / load_s,
    };
    let mut out = std::io::stdout().lock();
    report.write(&mut out)?;
    out.flush()?;
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The `users import` lines of users `numbers`.
fn lines(
    prefix: &str,
    seed: &BulkSeed,
    password_hash: &str,
    numbers: std::ops::Range<usize>,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(numbers.len() * 200);
    for n in numbers {
        let username = username(prefix, n);
        let secret = totp::encode_base32(&seed.totp_secret(&username));
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "username": username,
                "password_hash": password_hash,
                "totp": {"secret": secret},
            }),
        )?;
        out.push(b'\n');
    }
    Ok(out)
}

/// One `padlock-auth users import` run with `lines` on its standard input;
/// its complaints (which never hold a secret) are the error.
async fn import(
    bin: &std::path::Path,
    args: &BulkUsersArgs,
    data_dir: &std::path::Path,
    lines: Vec<u8>,
) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["users", "import", "--batch", USERS_PER_TRANSACTION, "-"])
        .env("DATABASE_URL", args.database_url.expose())
        .env("PADLOCK_DATA_KEYS", args.data_keys.expose())
        .env_remove("PADLOCK_DATA_KEYS_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {} (--auth-bin)", bin.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .context("padlock-auth's standard input")?;
    let writing = async move {
        stdin.write_all(&lines).await?;
        stdin.shutdown().await
    };
    let (written, output) = tokio::join!(writing, child.wait_with_output());
    let output = output.context("waiting for padlock-auth users import")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        anyhow::bail!(
            "padlock-auth users import failed ({}; does --prefix collide with an earlier \
             load?):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    written.context("writing to padlock-auth users import")?;
    Ok(())
}

/// Signs in `users` of the first `existing` bulk users, evenly spread over
/// them from a random offset, and gives each the secret its codes come
/// from. Their last accepted step is unknown to this tool: it is taken to
/// be long past, so none of them may have verified within the last 90 s
/// (three steps), or a code would be a reuse.
pub async fn sign_in_existing(
    auth: &str,
    args: &BulkArgs,
    existing: usize,
    users: usize,
    concurrency: usize,
    timeout: Duration,
    run_secs: u64,
) -> anyhow::Result<Vec<TotpUser>> {
    anyhow::ensure!(
        users <= existing,
        "--users ({users}) must not exceed --existing ({existing})"
    );
    let seed = BulkSeed::from_args(args)?;
    let password = seed.password();
    let channel = endpoint(auth, timeout)?
        .connect()
        .await
        .with_context(|| format!("connecting to auth at {auth}"))?;
    let numbers = sample(existing, users, rand::random());
    let signed_in = parallel("existing users signed in", users, concurrency, |i| {
        let username = username(&args.prefix, numbers[i]);
        let (channel, password, seed) = (&channel, &password, &seed);
        async move {
            let session: Session = sign_in_on(channel, &username, password)
                .await
                .context("signing in a bulk user (same --prefix and --bulk-seed as the load?)")?;
            anyhow::Ok(TotpUser {
                before_step_up: session.bearer.clone(),
                secret: seed.totp_secret(&username),
                session,
                // Nothing accepted within the last three steps.
                last_step: 0,
            })
        }
    })
    .await?;
    let needed = i64::try_from(clock::unix_now().as_secs() + run_secs)
        .unwrap_or(i64::MAX)
        .saturating_add(TOKEN_MARGIN_SECS);
    if signed_in.iter().any(|u| u.session.expires_at < needed) {
        anyhow::bail!(
            "signing in the sample took so long that its access tokens expire before the \
             run ends: sample fewer --users"
        );
    }
    Ok(signed_in)
}

/// `users` numbers in `0..existing`, one per stride of `existing / users`,
/// at the same random offset (`salt`) within each stride.
fn sample(existing: usize, users: usize, salt: usize) -> Vec<usize> {
    let stride = existing / users.max(1);
    let offset = salt % stride.max(1);
    (0..users).map(|i| i * stride + offset).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(text: &str) -> BulkSeed {
        BulkSeed(Secret::new(text.to_owned()))
    }

    #[test]
    fn secrets_differ_per_user_and_seed_and_are_stable() {
        let a = seed("seed-a");
        assert_eq!(a.totp_secret("bulk-0000001").len(), 20);
        assert_eq!(a.totp_secret("bulk-0000001"), a.totp_secret("bulk-0000001"));
        assert_ne!(a.totp_secret("bulk-0000001"), a.totp_secret("bulk-0000002"));
        assert_ne!(
            a.totp_secret("bulk-0000001"),
            seed("seed-b").totp_secret("bulk-0000001")
        );
        assert_eq!(a.password().len(), 40);
        assert_ne!(a.password(), seed("seed-b").password());
    }

    #[test]
    fn the_password_hash_is_argon2id_at_auths_parameters() {
        let phc = hash_password("a password").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[test]
    fn lines_are_what_users_import_reads() {
        let a = seed("seed-a");
        let text = String::from_utf8(lines("bulk", &a, "$argon2id$x", 41..43).unwrap()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["username"], "bulk-0000042");
        assert_eq!(lines[1]["password_hash"], "$argon2id$x");
        let secret = lines[1]["totp"]["secret"].as_str().unwrap();
        assert_eq!(
            totp::decode_base32(secret).unwrap(),
            a.totp_secret("bulk-0000042")
        );
    }

    #[test]
    fn usernames_are_fixed_width() {
        assert_eq!(username("bulk", 42), "bulk-0000042");
        assert_eq!(username("b", 1_000_000), "b-1000000");
    }

    #[test]
    fn a_sample_spreads_evenly_and_stays_in_range() {
        assert_eq!(sample(10, 5, 0), vec![0, 2, 4, 6, 8]);
        assert_eq!(sample(10, 5, 3), vec![1, 3, 5, 7, 9]);
        assert_eq!(sample(1000, 1000, 12345), (0..1000).collect::<Vec<_>>());
        let spread = sample(1_000_000, 1000, 999);
        assert_eq!(spread.len(), 1000);
        assert_eq!(spread[0], 999);
        assert_eq!(spread[999], 999_999);
        assert!(spread.windows(2).all(|w| w[1] - w[0] == 1000));
    }

    #[test]
    fn a_missing_seed_is_a_clear_error() {
        let args = BulkArgs {
            prefix: "bulk".into(),
            bulk_seed: None,
        };
        let err = BulkSeed::from_args(&args).unwrap_err().to_string();
        assert!(err.contains("--bulk-seed"), "{err}");
    }
}
