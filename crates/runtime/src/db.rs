//! Database connection set-up every service shares, and how a storage error
//! is classified for callers. SQLite runs in WAL mode with
//! `synchronous=FULL`, so a commit is durable when it returns; PostgreSQL is
//! used as configured.

use std::time::Duration;

use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, RuntimeErr, SqlErr, sqlx};

/// How long a request waits for a pooled connection, including opening a
/// new one. A stopped PostgreSQL refuses connections and the pool retries
/// until this deadline, so it is how long a request takes to fail with
/// UNAVAILABLE while the database is down: short, so callers fail fast.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// On PostgreSQL, the longest one statement may run (`statement_timeout`):
/// no longer than the request that issued it may
/// ([`crate::server::DEFAULT_REQUEST_TIMEOUT`]). A statement that runs
/// this long waits on a lock or an overloaded server; it is cancelled
/// (SQLSTATE 57014, reported UNAVAILABLE) rather than holding its
/// connection. Migrations are exempt ([`migrate`]). SQLite's counterpart is
/// the busy timeout: how long a statement waits for the write lock.
pub const STATEMENT_TIMEOUT: Duration = crate::server::DEFAULT_REQUEST_TIMEOUT;
/// See [`STATEMENT_TIMEOUT`].
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's page cache per connection (`PRAGMA cache_size`; negative
/// means KiB): 512 KiB, not SQLite's 2,000 KiB. Each of the pool's 16
/// connections keeps its own, so the default would grow to 32 MB of a
/// service's 64 MB budget (docs/design.md, "Targets") as the database outgrows
/// it; the operating system caches the file anyway.
const SQLITE_CACHE_SIZE: &str = "-512";

/// Prepared statements each SQLite connection keeps: 32, not sqlx's 100.
/// Once a service has run each of its queries on every connection, 100
/// cost about 2 MB per connection (auth: 57 MB resident after 2,000
/// sign-ups, 33 MB with 24; BENCHMARKS.md). A request's few statements stay
/// cached; a rare one is prepared again.
const SQLITE_STATEMENT_CACHE: usize = 32;

/// Prepared statements of a connection that serves batches
/// ([`batch_shapes`]): a few statements, each in up to ten shapes.
const SQLITE_BATCH_STATEMENT_CACHE: usize = 64;

/// PostgreSQL's `random_page_cost` on a connection that runs batched
/// statements: 1.1, the value PostgreSQL's documentation suggests where a
/// random read costs about what a sequential one does (solid-state disks,
/// tables in cache), not its default 4. A batch looks up tens of rows by
/// primary key; on tables of a few thousand rows the default makes a
/// sequential scan and a hash join look cheaper than that many index
/// lookups, and they took two to three times as long (BENCHMARKS.md,
/// "Verify on PostgreSQL"). Only that connection's plans change.
const BATCH_RANDOM_PAGE_COST: &str = "1.1";

/// Pool, timeout and pragma settings for `url` (`sqlite://...` or
/// `postgres://...`).
pub fn connect_options(url: &str) -> ConnectOptions {
    options(url, 16, SQLITE_STATEMENT_CACHE, false)
}

/// [`connect_options`] for one connection of its own that runs batched
/// statements: room for every shape of them ([`batch_shapes`]), so none
/// is prepared twice, and on PostgreSQL [`BATCH_RANDOM_PAGE_COST`].
pub fn batch_connect_options(url: &str) -> ConnectOptions {
    let mut options = options(url, 1, SQLITE_BATCH_STATEMENT_CACHE, true);
    options.min_connections(1);
    options
}

fn options(url: &str, connections: u32, statements: usize, batch: bool) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .max_connections(connections)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .map_sqlx_sqlite_opts(move |o: SqliteConnectOptions| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                .create_if_missing(true)
                .pragma("cache_size", SQLITE_CACHE_SIZE)
                .statement_cache_capacity(statements)
        })
        .map_sqlx_postgres_opts(move |o: PgConnectOptions| {
            let o = o.options([(
                "statement_timeout",
                format!("{}ms", STATEMENT_TIMEOUT.as_millis()),
            )]);
            if batch {
                o.options([("random_page_cost", BATCH_RANDOM_PAGE_COST)])
            } else {
                o
            }
        });
    options
}

/// How a statement for `n` rows is split so that only a few statement
/// shapes ever exist: into powers of two, largest first (13 rows: 8, 4, 1).
/// A connection keeps a few dozen prepared statements
/// ([`connect_options`]); a statement for every row count would
/// push them all out, and preparing one costs more than running it.
pub fn batch_shapes(n: usize) -> impl Iterator<Item = usize> {
    (0..usize::BITS)
        .rev()
        .map(|bit| 1usize << bit)
        .filter(move |size| n & size != 0)
}

/// The smallest of the few shapes (powers of two) that holds `n` rows, for
/// statements that may repeat a row (an `IN` list): see [`batch_shapes`].
pub fn padded_shape(n: usize) -> usize {
    n.max(1).next_power_of_two()
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
    let failure = match err {
        // No connection from the pool: the database refused, timed out or
        // the pool is closing.
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => DbFailure::Unavailable,
        // The connection broke while a statement ran (the server stopped,
        // the network dropped), or the server is shutting down.
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))
            if lost_connection(e) =>
        {
            DbFailure::Unavailable
        }
        _ => DbFailure::Internal,
    };
    if failure == DbFailure::Unavailable {
        tracing::warn!(error = %err, "database unavailable");
    } else {
        tracing::error!(error = %err, "database error");
    }
    failure
}

/// True when `err` says the connection or the server is gone rather than
/// that the statement was wrong.
fn lost_connection(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| unavailable_sqlstate(&code)),
        _ => false,
    }
}

/// True when PostgreSQL rolled the transaction back to break a deadlock or
/// a serialization conflict (SQLSTATE 40P01, 40001): trying the same
/// transaction again may succeed.
pub fn is_deadlock(err: &DbErr) -> bool {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match &**e {
                sqlx::Error::Database(e) => e
                    .code()
                    .is_some_and(|code| matches!(&*code, "40P01" | "40001")),
                _ => false,
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs that mean "not now" rather than "never":
/// connection exceptions (class 08), `admin_shutdown` (57P01, what a
/// `pg_ctl stop -m fast` sends to open sessions), `crash_shutdown`
/// (57P02), `cannot_connect_now` (57P03, starting or stopping),
/// `too_many_connections` (53300) and `query_canceled` (57014, what
/// [`STATEMENT_TIMEOUT`] raises).
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "57014")
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

/// How often opening a SQLite database that another process is opening
/// too is retried ([`connect`]).
const SQLITE_OPEN_RETRIES: u32 = 20;

/// Opens a pool with `options` (see [`connect_options`]). Each new SQLite
/// connection switches the file to WAL and sets its pragmas; when several
/// processes do that on a fresh file at once, SQLite may answer "database
/// is locked" straight away instead of waiting out the busy timeout (it
/// does not wait where waiting could deadlock). Replicas starting
/// together met it in about one start in thirty, so opening is retried a
/// few times on that answer alone.
pub async fn connect(options: ConnectOptions) -> Result<DatabaseConnection, DbErr> {
    let mut attempt = 0;
    loop {
        match Database::connect(options.clone()).await {
            Err(e) if attempt < SQLITE_OPEN_RETRIES && sqlite_busy(&e) => {
                attempt += 1;
                tracing::info!(attempt, "database file locked while opening; retrying");
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
            }
            result => return result,
        }
    }
}

/// True when opening failed on SQLite's SQLITE_BUSY (primary code 5).
fn sqlite_busy(err: &DbErr) -> bool {
    let DbErr::Conn(RuntimeErr::SqlxError(e)) = err else {
        return false;
    };
    match &**e {
        sqlx::Error::Database(e) if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            e.code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| code & 0xff == 5)
        }
        _ => false,
    }
}

/// How often a SQLite migration that raced another process is retried.
const SQLITE_MIGRATION_RETRIES: u32 = 10;

/// Connects with `options` and runs `M`'s pending migrations, then serves
/// from connections opened after them. On SQLite a connection that read the
/// schema before a migration changed it may prepare a statement against the
/// old schema: SQLite takes a double-quoted name it cannot resolve for a
/// string literal, so `SELECT "new_column" FROM t` yields the text
/// `new_column` under a column named `"new_column"`, and the driver caches
/// that statement with those column names ("no column found" on the next
/// read by name, for as long as the connection lives). So on a SQLite file
/// the migrations run on a pool of their own, closed before the serving
/// pool opens. An in-memory database lives only in its pool, so it is
/// migrated in place (nothing has read its schema yet).
pub async fn connect_migrated<M: sea_orm_migration::MigratorTrait>(
    url: &str,
    options: ConnectOptions,
) -> Result<DatabaseConnection, DbErr> {
    let db = connect(options.clone()).await?;
    migrate::<M>(&db).await?;
    if db.get_database_backend() != sea_orm::DatabaseBackend::Sqlite || url.contains(":memory:") {
        return Ok(db);
    }
    db.close().await?;
    connect(options).await
}

/// Applies `M`'s pending migrations. On PostgreSQL they run in one
/// transaction holding an advisory lock, so replicas (or `migrate` jobs)
/// starting together on a fresh database take turns instead of failing on
/// "already exists". SQLite has no such lock: processes sharing one file
/// retry a few times, and the loser finds the winner's work recorded.
pub async fn migrate<M: sea_orm_migration::MigratorTrait>(
    db: &sea_orm::DatabaseConnection,
) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    // Any fixed number; both services may share one database.
    const MIGRATION_LOCK: i64 = 0x0070_6164_6c6f_636b; // "padlock" in ASCII
    if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        let mut attempt = 0;
        loop {
            match M::up(db, None).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < SQLITE_MIGRATION_RETRIES => {
                    attempt += 1;
                    tracing::info!(attempt, error = %e, "migration raced another process; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let txn = db.begin().await?;
    // Waiting for another replica's migrations, and the migrations
    // themselves, may take longer than any request's statement.
    txn.execute_unprepared("SET LOCAL statement_timeout = 0")
        .await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    M::up(&txn, None).await?;
    txn.commit().await
}

#[cfg(test)]
mod tests;
