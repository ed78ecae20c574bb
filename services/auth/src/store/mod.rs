//! The auth service's storage: users, sessions, factors and the audit trail,
//! behind plain functions over domain types. Every single-use and limit rule
//! is a conditional UPDATE in the database, so it holds under concurrency
//! and across replicas sharing one database. Codes are checked in batches
//! (`code_checks`): a try is taken (`lockout`) before a code is compared,
//! and a right code is recorded once (`accept`).

mod accept;
mod audit_chain;
mod batch;
mod code_checks;
mod entity;
mod lockout;
pub mod migration;
mod reseal;
mod sql;
mod throttle;

use std::collections::HashMap;
use std::time::Duration;

use padlock_runtime::secret::Secret;
use padlock_runtime::{audit, db};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, DatabaseTransaction, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use entity::{audit_event, factor, session, sms_limit, user};

pub use crate::factor::Method;
pub use audit_chain::verify as verify_audit_chain;
pub use code_checks::{Checked, CodeCheck, CodeChecks, CodeOutcome, Purpose, Refusal};
pub use padlock_runtime::db::StoreError;
pub use reseal::{Resealed, SealedSecret};
pub use throttle::{Reservation, ThrottlePolicy};

pub type Result<T> = std::result::Result<T, StoreError>;

/// A session, its user and the user's factor, if any.
pub type SessionContext = (Session, User, Option<Factor>);

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
    pub fn has_role(&self, role: &str) -> bool {
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
pub struct LockoutPolicy {
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
        let db = db::connect(db::connect_options(url)).await?;
        db::migrate::<migration::Migrator>(&db).await?;
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
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Creates a user and its audit record in one transaction: a user is
    /// never created without its record (or half-created on a lost
    /// connection).
    pub async fn create_user(&self, u: &User, audit: AuditEvent) -> Result<()> {
        let txn = audit::begin(&self.db).await?;
        user::Entity::insert(user::ActiveModel {
            id: Set(u.id.clone()),
            username: Set(u.username.clone()),
            password_hash: Set(u.password_hash.clone()),
            roles: Set(u.roles.join(" ")),
            created_at: Set(u.created_at),
        })
        .exec_without_returning(&txn)
        .await?;
        insert_audit(&txn, vec![audit]).await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let row = user::Entity::find()
            .filter(user::Column::Username.eq(username))
            .one(&self.db)
            .await?;
        Ok(row.map(user_from_row))
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        Ok(user::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(user_from_row))
    }

    pub async fn create_session(&self, s: &Session, token_hash: &str, now: i64) -> Result<()> {
        session::Entity::insert(session::ActiveModel {
            id: Set(s.id.clone()),
            user_id: Set(s.user_id.clone()),
            token_hash: Set(token_hash.to_owned()),
            auth_time: Set(s.auth_time),
            mfa_at: Set(s.mfa_at),
            mfa_method: Set(s.mfa_method.map(|m| m.as_str().to_owned())),
            created_at: Set(now),
            expires_at: Set(s.expires_at),
            ended_at: Set(None),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>> {
        Ok(session::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(session_from_row))
    }

    /// A session with its user and the user's factor, in one query: what
    /// checking a code needs (`TwoFactorService`). `None` without the session.
    pub async fn session_with_user(&self, session_id: &str) -> Result<Option<SessionContext>> {
        let mut found = self.sessions_with_users(&[session_id]).await?;
        Ok(found.remove(session_id))
    }

    /// [`Store::session_with_user`] for many sessions in one query, by
    /// session id; sessions that do not exist are missing.
    pub async fn sessions_with_users(
        &self,
        session_ids: &[&str],
    ) -> Result<HashMap<String, SessionContext>> {
        use sea_orm::sea_query::{Alias, JoinType, Query};
        use sea_orm::{ConnectionTrait, FromQueryResult, IdenStatic, Iterable};
        const S: &str = "s_";
        const U: &str = "u_";
        const F: &str = "f_";
        let mut query = Query::select();
        for c in session::Column::iter() {
            query.expr_as(
                Expr::col((session::Entity, c)),
                Alias::new(format!("{S}{}", c.as_str())),
            );
        }
        for c in user::Column::iter() {
            query.expr_as(
                Expr::col((user::Entity, c)),
                Alias::new(format!("{U}{}", c.as_str())),
            );
        }
        for c in factor::Column::iter() {
            query.expr_as(
                Expr::col((factor::Entity, c)),
                Alias::new(format!("{F}{}", c.as_str())),
            );
        }
        query
            .from(session::Entity)
            .join(
                JoinType::InnerJoin,
                user::Entity,
                Expr::col((user::Entity, user::Column::Id))
                    .equals((session::Entity, session::Column::UserId)),
            )
            .join(
                JoinType::LeftJoin,
                factor::Entity,
                Expr::col((factor::Entity, factor::Column::UserId))
                    .equals((session::Entity, session::Column::UserId)),
            )
            .and_where(
                // Padded by repeating the last id, so that the query has
                // one of a few shapes (db::padded_shape).
                Expr::col((session::Entity, session::Column::Id)).is_in(
                    session_ids.iter().copied().chain(std::iter::repeat_n(
                        session_ids.last().copied().unwrap_or_default(),
                        db::padded_shape(session_ids.len()) - session_ids.len(),
                    )),
                ),
            );
        let mut found = HashMap::with_capacity(session_ids.len());
        for row in self.hot.query_all(&query).await? {
            let session = session::Model::from_query_result(&row, S)?;
            let user = user::Model::from_query_result(&row, U)?;
            let has_factor = row
                .try_get::<Option<String>>(F, factor::Column::UserId.as_str())?
                .is_some();
            let factor = if has_factor {
                factor_from_row(factor::Model::from_query_result(&row, F)?)
            } else {
                None
            };
            found.insert(
                session.id.clone(),
                (session_from_row(session), user_from_row(user), factor),
            );
        }
        Ok(found)
    }

    pub async fn session_by_token_hash(&self, token_hash: &str) -> Result<Option<Session>> {
        Ok(session::Entity::find()
            .filter(session::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
            .map(session_from_row))
    }

    /// Ends a live session; false if it was not live.
    pub async fn end_session(&self, id: &str, now: i64) -> Result<bool> {
        let result = session::Entity::update_many()
            .col_expr(session::Column::EndedAt, Expr::value(now))
            .filter(session::Column::Id.eq(id))
            .filter(session::Column::EndedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn factor(&self, user_id: &str) -> Result<Option<Factor>> {
        let row = factor::Entity::find_by_id(user_id.to_owned())
            .one(&self.db)
            .await?;
        Ok(row.and_then(factor_from_row))
    }

    /// Starts (or restarts) a pending enrollment. Returns false, writing
    /// nothing, when the user already has an active factor. A restart keeps
    /// the lockout counters, so restarting does not reset a lockout.
    pub async fn begin_enrollment(&self, f: &NewFactor) -> Result<bool> {
        let row = factor::ActiveModel {
            user_id: Set(f.user_id.clone()),
            method: Set(f.method.as_str().to_owned()),
            state: Set(FactorState::Pending.as_str().to_owned()),
            enrollment_id: Set(f.enrollment_id.clone()),
            secret_key_id: Set(f.secret_key_id.clone()),
            secret_ciphertext: Set(f.secret_ciphertext.clone()),
            created_at: Set(f.created_at),
            enrollment_expires_at: Set(f.enrollment_expires_at),
            activated_at: Set(None),
            last_step: Set(None),
            failed_attempts: Set(0),
            locked_until: Set(None),
            lockouts: Set(0),
            code_hash: Set(None),
            code_key_id: Set(None),
            code_expires_at: Set(None),
            code_tries: Set(0),
            code_sent_at: Set(None),
            masked_phone: Set(f.masked_phone.clone()),
            phone_mac: Set(f.phone_mac.clone()),
        };
        let on_conflict = OnConflict::column(factor::Column::UserId)
            .update_columns([
                factor::Column::CodeHash,
                factor::Column::CodeKeyId,
                factor::Column::CodeExpiresAt,
                factor::Column::CodeTries,
                factor::Column::MaskedPhone,
                factor::Column::PhoneMac,
                factor::Column::Method,
                factor::Column::EnrollmentId,
                factor::Column::SecretKeyId,
                factor::Column::SecretCiphertext,
                factor::Column::CreatedAt,
                factor::Column::EnrollmentExpiresAt,
                factor::Column::LastStep,
            ])
            .action_and_where(
                Expr::col((factor::Entity, factor::Column::State))
                    .eq(FactorState::Pending.as_str()),
            )
            .to_owned();
        let rows = factor::Entity::insert(row)
            .on_conflict(on_conflict)
            .exec_without_returning(&self.db)
            .await?;
        Ok(rows == 1)
    }

    /// Stores a new SMS code for the factor, if the resend cooldown has
    /// passed and every send limit has room; counts the send against each
    /// limit. All or nothing, in one transaction, so limits hold across
    /// replicas and concurrent requests; a refused send changes nothing.
    pub async fn store_code(
        &self,
        user_id: &str,
        code: &PendingCode,
        now: i64,
        cooldown: i64,
        limits: &[SendLimit],
    ) -> Result<SendGate> {
        let txn = self.db.begin().await?;
        let stored = factor::Entity::update_many()
            .col_expr(factor::Column::CodeHash, Expr::value(code.hash.clone()))
            .col_expr(factor::Column::CodeKeyId, Expr::value(code.key_id.clone()))
            .col_expr(factor::Column::CodeExpiresAt, Expr::value(code.expires_at))
            .col_expr(factor::Column::CodeTries, Expr::value(0))
            .col_expr(factor::Column::CodeSentAt, Expr::value(now))
            .filter(factor::Column::UserId.eq(user_id))
            .filter(
                Condition::any()
                    .add(factor::Column::CodeSentAt.is_null())
                    .add(factor::Column::CodeSentAt.lte(now - cooldown)),
            )
            .exec(&txn)
            .await?;
        if stored.rows_affected == 0 {
            txn.rollback().await?;
            let sent_at = self
                .factor(user_id)
                .await?
                .and_then(|f| f.code_sent_at)
                .unwrap_or(now);
            return Ok(SendGate::Cooldown {
                until: sent_at + cooldown,
            });
        }
        for limit in limits {
            let window_start = now - now.rem_euclid(limit.window);
            let counted = sms_limit::Entity::insert(sms_limit::ActiveModel {
                bucket: Set(limit.bucket.clone()),
                window_start: Set(window_start),
                count: Set(1),
            })
            .on_conflict(
                OnConflict::columns([sms_limit::Column::Bucket, sms_limit::Column::WindowStart])
                    .value(
                        sms_limit::Column::Count,
                        Expr::col((sms_limit::Entity, sms_limit::Column::Count)).add(1),
                    )
                    .action_and_where(
                        Expr::col((sms_limit::Entity, sms_limit::Column::Count))
                            .lt(i64::from(limit.cap)),
                    )
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
            if counted == 0 {
                txn.rollback().await?;
                return Ok(SendGate::Capped {
                    bucket: limit.bucket.clone(),
                    until: window_start + limit.window,
                });
            }
        }
        txn.commit().await?;
        Ok(SendGate::Open)
    }

    /// Forgets a code that could not be delivered, so it costs the user no
    /// tries and they may ask again at once.
    pub async fn clear_undelivered_code(&self, user_id: &str, hash: &str) -> Result<()> {
        factor::Entity::update_many()
            .col_expr(
                factor::Column::CodeHash,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                factor::Column::CodeExpiresAt,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(factor::Column::CodeSentAt, Expr::value(Option::<i64>::None))
            .filter(factor::Column::UserId.eq(user_id))
            .filter(factor::Column::CodeHash.eq(hash))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Support's reset: removes the factor and its secrets, and ends the
    /// second-factor state of every session of the user, atomically.
    /// False when the user had no factor (sessions are cleared anyway).
    pub async fn reset_factor(&self, user_id: &str) -> Result<bool> {
        let txn = self.db.begin().await?;
        let removed = factor::Entity::delete_many()
            .filter(factor::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?
            .rows_affected;
        session::Entity::update_many()
            .col_expr(session::Column::MfaAt, Expr::value(Option::<i64>::None))
            .col_expr(
                session::Column::MfaMethod,
                Expr::value(Option::<String>::None),
            )
            .filter(session::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(removed == 1)
    }

    /// Support's unlock: clears the failures, the lockout and its history.
    pub async fn unlock(&self, user_id: &str) -> Result<bool> {
        let result = factor::Entity::update_many()
            .col_expr(factor::Column::FailedAttempts, Expr::value(0))
            .col_expr(
                factor::Column::LockedUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(factor::Column::Lockouts, Expr::value(0))
            .filter(factor::Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Appends one record to the audit chain, in a transaction of its own.
    pub async fn audit(&self, e: AuditEvent) -> Result<()> {
        self.audit_all(vec![e]).await
    }

    /// Appends `events` to the audit chain, in order, in one transaction.
    pub async fn audit_all(&self, events: Vec<AuditEvent>) -> Result<()> {
        let txn = audit::begin(&self.db).await?;
        insert_audit(&txn, events).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The newest `limit` audit records about `subject` (all when `None`).
    pub async fn audit_events(
        &self,
        subject: Option<&str>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>> {
        self.find_audit_events(&AuditQuery {
            subject: subject.map(str::to_owned),
            limit,
            ..Default::default()
        })
        .await
    }

    /// Audit records matching `q`, newest first.
    pub async fn find_audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let mut query = audit_event::Entity::find();
        if let Some(subject) = &q.subject {
            query = query.filter(audit_event::Column::Subject.eq(subject));
        }
        if let Some(kind) = &q.kind {
            query = query.filter(audit_event::Column::Kind.eq(kind));
        }
        if let Some(since) = q.since {
            query = query.filter(audit_event::Column::At.gte(since));
        }
        if let Some(until) = q.until {
            query = query.filter(audit_event::Column::At.lt(until));
        }
        if let Some(before) = q.before_id {
            query = query.filter(audit_event::Column::Id.lt(before));
        }
        let rows = query
            .order_by_desc(audit_event::Column::Id)
            .limit(q.limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.id,
                at: r.at,
                kind: r.kind,
                outcome: r.outcome,
                actor: r.actor,
                subject: r.subject,
                detail: r.detail,
            })
            .collect())
    }
}

/// A filter over the audit trail; `before_id` pages backwards.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub subject: Option<String>,
    pub kind: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: u64,
}

/// Appends `events` to the audit chain, in order, in `txn` (begun with
/// [`audit::begin`]): one head read and one INSERT however many there are.
/// Call it after the transaction's other writes.
async fn insert_audit(txn: &DatabaseTransaction, events: Vec<AuditEvent>) -> Result<()> {
    let records = events.into_iter().map(audit_chain::values).collect();
    audit::append(txn, &audit_chain::CHAIN, records).await?;
    Ok(())
}

fn user_from_row(r: user::Model) -> User {
    User {
        id: r.id,
        username: r.username,
        password_hash: r.password_hash,
        roles: r.roles.split_whitespace().map(str::to_owned).collect(),
        created_at: r.created_at,
    }
}

fn session_from_row(r: session::Model) -> Session {
    Session {
        id: r.id,
        user_id: r.user_id,
        auth_time: r.auth_time,
        mfa_at: r.mfa_at,
        mfa_method: r.mfa_method.as_deref().and_then(Method::parse),
        expires_at: r.expires_at,
        ended_at: r.ended_at,
    }
}

fn factor_from_row(r: factor::Model) -> Option<Factor> {
    let state = match r.state.as_str() {
        "pending" => FactorState::Pending,
        "active" => FactorState::Active,
        _ => return None,
    };
    Some(Factor {
        user_id: r.user_id,
        method: Method::parse(&r.method)?,
        state,
        enrollment_id: r.enrollment_id,
        secret_key_id: r.secret_key_id,
        secret_ciphertext: r.secret_ciphertext,
        enrollment_expires_at: r.enrollment_expires_at,
        activated_at: r.activated_at,
        last_step: r.last_step,
        failed_attempts: u32::try_from(r.failed_attempts).unwrap_or(0),
        locked_until: r.locked_until,
        code: match (r.code_hash, r.code_key_id, r.code_expires_at) {
            (Some(hash), Some(key_id), Some(expires_at)) => Some(PendingCode {
                hash,
                key_id,
                expires_at,
                tries: u32::try_from(r.code_tries).unwrap_or(0),
            }),
            _ => None,
        },
        code_sent_at: r.code_sent_at,
        masked_phone: r.masked_phone,
        phone_mac: r.phone_mac,
    })
}
