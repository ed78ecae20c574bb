//! `padlock-auth users import`, the real binary, against the database of an
//! auth service running in-process (same data keys), on SQLite and
//! PostgreSQL: imported users sign in over gRPC with their old password,
//! their imported TOTP seed's codes pass Verify, each has its
//! `user_created` record; a bad file writes nothing and names line and
//! field without echoing a value; taken and repeated usernames are refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Output, Stdio};

use common::{Harness, PASSWORD};
use padlock_auth::sealing::{DataKeySource, DataKeys};
use padlock_runtime::Secret;
use padlock_test_support::TestDatabase;

/// The RFC 6238 test seed, as an authenticator app shows it.
const SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const SEED: &[u8] = b"12345678901234567890";

struct Setup {
    harness: Harness,
    keys: String,
    dir: tempfile::TempDir,
}

async fn setup(db: &TestDatabase) -> Setup {
    let keys = DataKeys::generate("k1").unwrap().to_spec();
    let spec = keys.clone();
    let harness = Harness::start_with(db, move |mut o| {
        o.data_keys = Some(DataKeySource::Spec(Secret::new(spec)));
        o
    })
    .await;
    Setup {
        harness,
        keys,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Runs `users import` on `url` with `input` on standard input.
fn import(setup: &Setup, url: &str, input: &str, args: &[&str]) -> Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_padlock-auth"))
        .arg("--data-dir")
        .arg(setup.dir.path().join("data"))
        .args(["users", "import"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("PADLOCK_DATA_KEYS", &setup.keys)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn phc(password: &str) -> String {
    padlock_auth::password::Hasher::new(1)
        .hash(password.to_owned())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_users_sign_in_and_their_seeds_verify() {
    for db in padlock_test_support::databases().await {
        let s = setup(&db).await;
        let h = &s.harness;
        let hash = phc(PASSWORD).await;
        let lines = [
            serde_json::json!({"username": "alice", "password_hash": hash,
                "roles": ["operator", "support"],
                "totp": {"secret": SEED_B32, "algorithm": "SHA1", "digits": 6, "period": 30}}),
            serde_json::json!({"username": "bob", "password": PASSWORD,
                "totp": {"secret": SEED_B32.to_ascii_lowercase()}}),
            serde_json::json!({"username": "carol", "password_hash": hash}),
        ];
        let file = s.dir.path().join("users.jsonl");
        let body: String = lines.iter().map(|l| format!("{l}\n\n")).collect();
        std::fs::write(&file, body).unwrap();
        // Two users a transaction: two transactions.
        let out = import(&s, &db.url, "", &[file.to_str().unwrap(), "--batch", "2"]);
        assert!(
            out.status.success(),
            "{}: {}",
            db.backend,
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with(
                "imported 3 users (2 with TOTP, 1 passwords hashed here) from 6 lines in 2 \
                 transactions"
            ),
            "{}: {stdout}",
            db.backend
        );

        for username in ["alice", "bob"] {
            let session = h.sign_in(username).await;
            let code = h.code(SEED, 0);
            let stepped = h.verify(&session.access_token, &code).await.unwrap();
            let claims = h.claims(&stepped.access_token).await;
            assert!(claims.mfa_at.is_some(), "{}: {username}", db.backend);
            // The same code again is a reuse, as for any enrolled factor.
            assert!(h.verify(&session.access_token, &code).await.is_err());
        }
        let carol = h.sign_in("carol").await;
        assert!(!carol.access_token.is_empty());

        let alice = h
            .app
            .store()
            .user_by_username("alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.roles, ["operator", "support"]);
        assert_eq!(alice.password_hash, hash, "the hash is kept as it is");
        let records = h
            .app
            .store()
            .audit_events(Some(&alice.id), 10)
            .await
            .unwrap();
        let created: Vec<_> = records
            .iter()
            .filter(|r| r.kind == "user_created")
            .collect();
        assert_eq!(created.len(), 1, "{}: {records:?}", db.backend);
        assert_eq!(
            created[0].detail,
            "roles=operator,support source=import factor=totp"
        );
        s.harness.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_writes_nothing_and_names_line_and_field() {
    for db in padlock_test_support::databases().await {
        let s = setup(&db).await;
        let h = &s.harness;
        h.add_user("dave", &[]).await;
        let hash = phc("another password").await;
        let input = [
            serde_json::json!({"username": "erin", "password_hash": hash}).to_string(),
            r#"{"username": "frank", "password": "s3cr3t"}"#.to_owned(),
            r#"{"username": "grace", "password_hash": "plaintext-oops-123"}"#.to_owned(),
            r#"{"username": "heidi", "password": "long enough 1", "totp": {"secret": "JBSWY3DP"}}"#
                .to_owned(),
            r#"{"username": "ivan", "password": "long enough 2", "totp": {"secret": "NOT*BASE32"}}"#
                .to_owned(),
            r#"{"username": "bad name", "password": "long enough 3", "roles": ["Admin"]}"#
                .to_owned(),
            serde_json::json!({"username": "dave", "password_hash": hash}).to_string(),
            serde_json::json!({"username": "erin", "password_hash": hash}).to_string(),
            r#"{"username": "judy", "pasword": "long enough 4"}"#.to_owned(),
            r#"{"username": "#.to_owned(),
        ]
        .join("\n");
        let out = import(&s, &db.url, &input, &["-"]);
        assert!(!out.status.success(), "{}", db.backend);
        let stderr = text(&out.stderr);
        for expected in [
            "line 2: password: at least 8 characters",
            "line 3: password_hash: not an argon2id PHC string",
            "line 4: totp.secret: shorter than 128 bits",
            "line 5: totp.secret: not base32",
            "line 6: username: 1 to 64 of letters, digits",
            "line 6: roles: each role is 1 to 32 of a-z and _",
            "line 7: username: taken",
            "line 8: username: also on line 1",
            "line 9: \"pasword\": unknown field",
            "line 9: password_hash: required",
            "line 10: line: not JSON",
            "9 of 10 lines are bad (above); nothing was imported",
        ] {
            assert!(
                stderr.contains(expected),
                "{}: {expected} in\n{stderr}",
                db.backend
            );
        }
        for secret in [
            "s3cr3t",
            "plaintext-oops",
            "JBSWY3DP",
            "NOT*BASE32",
            "long enough",
            "Admin",
            &hash,
        ] {
            assert!(!stderr.contains(secret), "{}: {secret} echoed", db.backend);
        }
        assert!(text(&out.stdout).is_empty());
        for username in ["erin", "frank", "judy"] {
            assert!(
                h.app
                    .store()
                    .user_by_username(username)
                    .await
                    .unwrap()
                    .is_none(),
                "{}: {username} was written",
                db.backend
            );
        }
        let created = h.app.store().audit_events(None, 100).await.unwrap();
        assert_eq!(
            created.iter().filter(|r| r.kind == "user_created").count(),
            1,
            "only dave's record"
        );
        s.harness.stop().await;
    }
}

/// One transaction of more users than SQLite binds parameters in one
/// statement (32,766): users, factors and audit records go in parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_one_transaction() {
    // 4,096 audit records would be one SQLite statement of 40,960 values.
    const USERS: usize = 4_100;
    for db in padlock_test_support::databases().await {
        let s = setup(&db).await;
        let hash = phc(PASSWORD).await;
        let input: String = (0..USERS)
            .map(|n| {
                serde_json::json!({"username": format!("user-{n}"), "password_hash": hash,
                    "totp": {"secret": SEED_B32}})
                .to_string()
                    + "\n"
            })
            .collect();
        let out = import(&s, &db.url, &input, &["--batch", "5000"]);
        assert!(
            out.status.success(),
            "{}: {}",
            db.backend,
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).starts_with(&format!(
                "imported {USERS} users ({USERS} with TOTP, 0 passwords hashed here) from \
                 {USERS} lines in 1 transactions"
            )),
            "{}: {}",
            db.backend,
            text(&out.stdout)
        );
        let records = s
            .harness
            .app
            .store()
            .audit_events(None, 5_000)
            .await
            .unwrap();
        assert_eq!(records.len(), USERS, "{}", db.backend);
        let session = s.harness.sign_in("user-3999").await;
        let code = s.harness.code(SEED, 0);
        s.harness
            .verify(&session.access_token, &code)
            .await
            .unwrap();
        s.harness.stop().await;
    }
}
