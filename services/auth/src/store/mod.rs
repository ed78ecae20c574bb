//! The auth service's storage: users, sessions, factors and the audit trail,
//! behind plain functions over domain types. Every single-use and limit rule
//! is a conditional UPDATE in the database, so it holds under concurrency
//! and across replicas sharing one database. Codes are checked in batches
//! (`code_checks`): a try is taken (`lockout`) before a code is compared,
//! and a right code is recorded once (`accept`).
//!
//! Here: the domain types and the connection. Users and sessions are in
//! `accounts`, factors and SMS codes in `factors`, the audit trail in
//! `audit_records` (its hash chain in `audit_chain`), sign-in throttling
//! in `throttle`, re-sealing under new data keys in `reseal`.

mod accept;
mod accounts;
mod audit_chain;
mod audit_records;
mod batch;
mod code_checks;
mod entity;
mod factors;
pub mod import;
mod lockout;
pub mod migration;
mod reseal;
mod sql;
mod throttle;

use std::time::Duration;

use padlock_runtime::db;
use padlock_runtime::secret::Secret;
use sea_orm::{DatabaseConnection, DbBackend};

pub use crate::factor::Method;
pub use audit_chain::verify as verify_audit_chain;
pub(crate) use audit_records::AuditQuery;
use audit_records::insert_audit;
pub use code_checks::Refusal;
pub use code_checks::{CodeCheck, CodeChecks, CodeOutcome, Purpose};
use factors::factor_from_row;
pub use padlock_runtime::db::StoreError;
pub use reseal::Resealed;
pub(crate) use throttle::{Reservation, ThrottlePolicy};

pub type Result<T> = std::result::Result<T, StoreError>;

/// A session, its user and the user's factor, if any.
pub(crate) type SessionContext = (Session, User, Option<Factor>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorState {
    Pending,
    Active,
}

impl FactorState {
    fn as_str(self) -> &'static str {
        match self {
            FactorState::Pending => "pending",
            FactorState::Active => "active",
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

impl User {
    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub auth_time: i64,
    pub mfa_at: Option<i64>,
    pub mfa_method: Option<Method>,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
}

impl Session {
    pub fn is_live(&self, now: i64) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

#[derive(Debug, Clone)]
pub struct Factor {
    pub user_id: String,
    pub method: Method,
    pub state: FactorState,
    pub enrollment_id: String,
    pub secret_key_id: String,
    pub secret_ciphertext: Vec<u8>,
    pub enrollment_expires_at: i64,
    pub activated_at: Option<i64>,
    pub last_step: Option<i64>,
    /// Tries taken since the last success, unlock or ended lock (`lockout`).
    pub failed_attempts: u32,
    pub locked_until: Option<i64>,
    /// The SMS code waiting to be entered, if any.
    pub code: Option<PendingCode>,
    pub code_sent_at: Option<i64>,
    pub masked_phone: Option<String>,
    pub phone_mac: Option<String>,
}

/// An SMS code as stored: its MAC, never the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCode {
    pub hash: String,
    pub key_id: String,
    pub expires_at: i64,
    pub tries: u32,
}

/// One send counter: at most `cap` sends per `window` seconds for `bucket`.
#[derive(Debug, Clone)]
pub struct SendLimit {
    /// e.g. `user:<id>:hour`, `phone:<mac>:day`, `global:minute`.
    pub bucket: String,
    pub window: i64,
    pub cap: u32,
}

/// Whether a code may be sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendGate {
    /// The code is stored and counted: send it.
    Open,
    /// The previous code went out less than the cooldown ago.
    Cooldown { until: i64 },
    /// A cap is reached until `until`; `bucket` names which.
    Capped { bucket: String, until: i64 },
}

impl Factor {
    /// When the lockout ends, if it is in force at `now`.
    pub fn locked_until(&self, now: i64) -> Option<i64> {
        self.locked_until.filter(|until| *until > now)
    }
}

/// A new pending enrollment.
#[derive(Debug, Clone)]
pub struct NewFactor {
    /// For SMS: the masked number and the number's MAC.
    pub masked_phone: Option<String>,
    pub phone_mac: Option<String>,
    pub user_id: String,
    pub method: Method,
    pub enrollment_id: String,
    pub secret_key_id: String,
    pub secret_ciphertext: Vec<u8>,
    pub created_at: i64,
    pub enrollment_expires_at: i64,
}

/// The lockout rule the store applies atomically (`lockout`, with
/// `config::LOCKOUT`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockoutPolicy {
    pub max_failures: u32,
    pub first_lock: Duration,
    pub max_lock: Duration,
}

/// Outcome of an audited event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
}

/// One audit record. `detail` must hold no secret.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: i64,
    pub kind: &'static str,
    pub outcome: Outcome,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub session_id: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub detail: String,
}

/// The auth database.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Where code checks read and record (`code_checks`): on SQLite
    /// one connection of its own, on PostgreSQL the pool until the
    /// code-check thread opens a connection of its own
    /// ([`Store::for_code_checks`]). A SQLite connection forgets its page
    /// cache whenever another connection has written, so with reads on one
    /// connection and writes on another every read went back to the file;
    /// one connection that both reads and writes keeps its pages.
    hot: DatabaseConnection,
    /// On PostgreSQL, the database the code-check thread connects to.
    postgres_url: Option<Secret<String>>,
}

impl Store {
    /// Connects and runs pending migrations. SQLite runs in WAL mode with
    /// `synchronous=FULL`, so a commit is durable when it returns.
    pub async fn connect(url: &str) -> Result<Self> {
        let db = db::connect_migrated::<migration::Migrator>(url, db::connect_options(url)).await?;
        let backend = db.get_database_backend();
        let hot = match backend {
            DbBackend::Sqlite if !url.contains(":memory:") => {
                db::connect(db::batch_connect_options(url)).await?
            }
            _ => db.clone(),
        };
        let postgres_url = (backend == DbBackend::Postgres).then(|| Secret::new(url.to_owned()));
        Ok(Self {
            db,
            hot,
            postgres_url,
        })
    }

    /// The store as the code-check thread uses it: on PostgreSQL with a
    /// connection of its own (`db::batch_connect_options`), opened from
    /// that thread, so that its runtime drives the connection. A pool
    /// connection is driven by the service's runtime, where each of a
    /// batch's round trips waited behind the requests' work (with this and
    /// the batch connection's planner cost, Verify on PostgreSQL about
    /// doubled; BENCHMARKS.md, "Verify on PostgreSQL"). On SQLite,
    /// the store itself: its batch connection has a thread of its own.
    async fn for_code_checks(&self) -> Result<Store> {
        let Some(url) = &self.postgres_url else {
            return Ok(self.clone());
        };
        Ok(Store {
            db: self.db.clone(),
            hot: db::connect(db::batch_connect_options(url.expose())).await?,
            postgres_url: None,
        })
    }

    /// True when the database answers.
    pub(crate) async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }
}
