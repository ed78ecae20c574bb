//! Many users at once, for the scale figure (Verify with 1,000,000 users in
//! the database). Creating them over gRPC would cost two argon2id hashes
//! each (days for a million), so `bulk-users` writes the rows straight into
//! the auth database instead, in large multi-row INSERTs, a few
//! transactions in all:
//!
//! - `users`: one password hash for all of them, a real argon2id PHC string
//!   computed once by the auth service's own hasher, so `SignIn` works for
//!   any of them and costs what it costs for anyone;
//! - `factors`: an active TOTP factor each, its secret sealed with the auth
//!   service's own sealing (AES-256-GCM under the current data key, the
//!   user id as associated data), exactly as enrollment stores it.
//!
//! Passwords and TOTP secrets are derived from a seed (`--bulk-seed`), so
//! the verify scenario can sign in any sample of these users and compute
//! their codes without anything stored in between. No audit records are
//! written: the audit trail is the service's to write (and to chain).
//!
//! This is the one place the load tool links the auth crate; every measured
//! request still goes over gRPC.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use padlock_auth::sealing::DataKeys;
use padlock_auth::store::Method;
use padlock_auth::store::migration::Migrator;
use padlock_runtime::Secret;
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, TransactionTrait as _};
use serde::Serialize;
use sha1::Sha1;

use crate::cli::{BulkArgs, BulkUsersArgs};
use crate::clock;
use crate::grpc::endpoint;
use crate::setup::{Session, TotpUser, parallel, sign_in_on};

/// Rows per INSERT: 3,000 rows of at most 9 values stay under SQLite's
/// 32,766 bound parameters per statement (PostgreSQL allows 65,535).
const ROWS_PER_INSERT: usize = 3_000;
/// Users per transaction: a million users commit in 20 transactions, and
/// an interrupted load keeps what it committed.
const USERS_PER_TRANSACTION: usize = 50_000;
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
    pub database: &'static str,
    pub prefix: String,
    pub first: usize,
    pub users: usize,
    /// Rows inserted: one user and one factor per user.
    pub rows: usize,
    /// The one argon2id hash, before the load.
    pub hash_s: f64,
    /// The INSERTs and commits, sealing included.
    pub load_s: f64,
    pub rows_per_s: f64,
    pub users_per_s: f64,
}

impl LoadReport {
    fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "bulk-users: {} users {}..{} on {}: {} rows in {:.1} s, {:.0} rows/s \
             ({:.0} users/s); the password hash took {:.2} s",
            self.users,
            username(&self.prefix, self.first),
            username(&self.prefix, self.first + self.users.saturating_sub(1)),
            self.database,
            self.rows,
            self.load_s,
            self.rows_per_s,
            self.users_per_s,
            self.hash_s,
        )
    }
}

/// `bulk-users`: migrates the auth schema if needed (the service's own
/// migrations), then inserts the users and their factors.
pub async fn run(args: &BulkUsersArgs, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    let seed = BulkSeed::from_args(&args.bulk)?;
    let keys = DataKeys::parse(args.data_keys.expose()).context("--data-keys")?;
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    let last = args
        .first
        .checked_add(args.users - 1)
        .context("--first + --users is too large")?;
    for n in [args.first, last] {
        padlock_auth::grpc::support::validate_new_user(
            &username(&args.bulk.prefix, n),
            &seed.password(),
            &[],
        )
        .map_err(|e| anyhow::anyhow!("--prefix makes invalid usernames: {e:?}"))?;
    }

    let db = padlock_runtime::db::connect(padlock_runtime::db::connect_options(
        args.database_url.expose(),
    ))
    .await
    .context("connecting to the auth database")?;
    padlock_runtime::db::migrate::<Migrator>(&db)
        .await
        .context("migrating the auth schema")?;

    let started = Instant::now();
    let hash = padlock_auth::password::Hasher::new(1)
        .hash(seed.password())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the bulk password: {e}"))?;
    let hash_s = started.elapsed().as_secs_f64();

    let loader = Loader {
        db: &db,
        seed: &seed,
        keys: &keys,
        prefix: &args.bulk.prefix,
        password_hash: &hash,
        now: i64::try_from(clock::unix_now().as_secs()).unwrap_or(i64::MAX),
    };
    let started = Instant::now();
    let end = args.first + args.users;
    let mut done = 0;
    for from in (args.first..end).step_by(USERS_PER_TRANSACTION) {
        let to = (from + USERS_PER_TRANSACTION).min(end);
        loader.transaction(from, to).await?;
        done += to - from;
        eprintln!(
            "  committed {done}/{} users ({:.0} users/s)",
            args.users,
            done as f64 / started.elapsed().as_secs_f64().max(0.001)
        );
    }
    let load_s = started.elapsed().as_secs_f64().max(0.001);
    let rows = 2 * args.users;
    let report = LoadReport {
        database: match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "PostgreSQL",
            sea_orm::DatabaseBackend::Sqlite => "SQLite",
            _ => "other",
        },
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

/// Writes bulk users with one password hash and one timestamp.
struct Loader<'a> {
    db: &'a DatabaseConnection,
    seed: &'a BulkSeed,
    keys: &'a DataKeys,
    prefix: &'a str,
    password_hash: &'a str,
    now: i64,
}

impl Loader<'_> {
    /// Users `from..to` and their factors, committed together.
    async fn transaction(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let txn = self.db.begin().await?;
        for start in (from..to).step_by(ROWS_PER_INSERT) {
            let numbers = start..(start + ROWS_PER_INSERT).min(to);
            let mut users = Query::insert();
            users.into_table(Alias::new("users")).columns(
                ["id", "username", "password_hash", "roles", "created_at"].map(Alias::new),
            );
            let mut factors = Query::insert();
            factors.into_table(Alias::new("factors")).columns(
                [
                    "user_id",
                    "method",
                    "state",
                    "enrollment_id",
                    "secret_key_id",
                    "secret_ciphertext",
                    "created_at",
                    "enrollment_expires_at",
                    "activated_at",
                ]
                .map(Alias::new),
            );
            for n in numbers {
                let username = username(self.prefix, n);
                let id = uuid::Uuid::new_v4().to_string();
                // As enrollment seals it: the user id is the associated data.
                let sealed = self
                    .keys
                    .seal(&self.seed.totp_secret(&username), id.as_bytes());
                users.values([
                    Expr::val(id.clone()),
                    Expr::val(username),
                    Expr::val(self.password_hash),
                    Expr::val(""),
                    Expr::val(self.now),
                ])?;
                factors.values([
                    Expr::val(id),
                    Expr::val(Method::Totp.as_str()),
                    // FactorState::Active as the store spells it.
                    Expr::val("active"),
                    Expr::val(uuid::Uuid::new_v4().to_string()),
                    Expr::val(sealed.key_id),
                    Expr::val(sealed.blob),
                    Expr::val(self.now),
                    Expr::val(self.now),
                    Expr::val(self.now),
                ])?;
            }
            txn.execute(&users)
                .await
                .context("inserting users (does --prefix collide with an earlier load?)")?;
            txn.execute(&factors).await.context("inserting factors")?;
        }
        txn.commit().await.context("committing")?;
        Ok(())
    }
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
        assert!(
            padlock_auth::grpc::support::validate_new_user(
                &username("bulk", 999_999),
                &a.password(),
                &[]
            )
            .is_ok()
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
