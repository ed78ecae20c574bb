//! What padlock's tests share: fresh databases on every backend the storage
//! suite must pass on (SQLite always, PostgreSQL when
//! `PADLOCK_TEST_DATABASE_URL` names a server, which `tests/run-all.sh`
//! starts, and which CI must have), and a fake Twilio for the SMS sender.
//! Never depends on a service.

pub mod fake_twilio;
pub mod raw_grpc;

use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;

/// The variable naming a PostgreSQL server tests may create databases on.
pub const POSTGRES_ENV: &str = "PADLOCK_TEST_DATABASE_URL";

/// A fresh, empty database; SQLite files go away when it drops.
#[derive(Debug)]
pub struct TestDatabase {
    /// `sqlite` or `postgres`, for test messages.
    pub backend: &'static str,
    pub url: String,
    _dir: Option<TempDir>,
}

/// True under CI, where skipping PostgreSQL is a failure, not a skip.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// The PostgreSQL server's URL, if there is one. Panics under CI without
/// one, so the PostgreSQL half of a suite can never be skipped silently.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => panic!("{POSTGRES_ENV} must be set under CI; run tests/run-all.sh"),
        _ => {
            eprintln!(
                "{POSTGRES_ENV} not set: skipping PostgreSQL (run tests/run-all.sh to include it)"
            );
            None
        }
    }
}

/// A fresh SQLite database in a temporary directory.
pub fn sqlite() -> TestDatabase {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    TestDatabase {
        backend: "sqlite",
        url,
        _dir: Some(dir),
    }
}

/// A fresh database on the PostgreSQL server, if there is one.
pub async fn postgres() -> Option<TestDatabase> {
    let admin = postgres_url()?;
    let name = format!("padlock_test_{}", uuid::Uuid::new_v4().simple());
    let conn = Database::connect(admin.as_str())
        .await
        .expect("connect to the test PostgreSQL server");
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    conn.close().await.ok();
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    Some(TestDatabase {
        backend: "postgres",
        url: format!("{base}/{name}"),
        _dir: None,
    })
}

/// SQLite, then PostgreSQL when available: run a suite once per entry.
pub async fn databases() -> Vec<TestDatabase> {
    let mut all = vec![sqlite()];
    all.extend(postgres().await);
    all
}
