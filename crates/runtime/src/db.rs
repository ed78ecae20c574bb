//! Database connection set-up every service shares, and how a storage error
//! is classified for callers. SQLite runs in WAL mode with
//! `synchronous=FULL`, so a commit is durable when it returns; PostgreSQL is
//! used as configured.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, DbErr, RuntimeErr, SqlErr};

/// Pool and pragma settings for `url` (`sqlite://...` or `postgres://...`).
pub fn connect_options(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    options
}

/// What a storage error means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// A unique key was violated: the thing exists already.
    Conflict,
    /// The database cannot be reached right now; retrying may help.
    Unavailable,
    /// Anything else; a bug or corruption.
    Internal,
}

/// Classifies `err` and logs it (the log may hold SQL; callers never see it).
pub fn classify(err: &DbErr) -> DbFailure {
    if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return DbFailure::Conflict;
    }
    tracing::error!(error = %err, "database error");
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(RuntimeErr::SqlxError(_)) => {
            DbFailure::Unavailable
        }
        _ => DbFailure::Internal,
    }
}

/// A storage failure as the services report it. Messages never carry SQL
/// or values; the cause was logged by [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database unavailable")]
    Unavailable,
    #[error("database error")]
    Internal,
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match classify(&err) {
            DbFailure::Conflict => StoreError::Conflict,
            DbFailure::Unavailable => StoreError::Unavailable,
            DbFailure::Internal => StoreError::Internal,
        }
    }
}
