//! `bulk-users` writes users the real auth service accepts: on each
//! backend, the padlock-auth binary serves on 127.0.0.1:0 with the real
//! clock (the load tool computes codes from it), the loader imports users
//! through `padlock-auth users import` in two parts, and `verify --existing`
//! signs a sample in over gRPC and has every code it presents accepted.
//!
//! The binary comes from the target directory this test was built into
//! (`cargo build --bins` first; tests/run-all.sh does). Without it the test
//! skips with a message, except under `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use clap::Parser as _;
use padlock_bench::bulk;
use padlock_bench::cli::{BulkUsersArgs, Cli, Command};
use padlock_bench::scenario;
use padlock_runtime::Secret;
use tokio::io::{AsyncBufReadExt as _, BufReader};

const SEED: &str = "bulk-users test seed";

/// `target/<profile>/padlock-auth`: this test runs from `target/<profile>/deps`.
fn auth_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent()?.parent()?.join("padlock-auth");
    if bin.is_file() {
        return Some(bin);
    }
    let why = format!(
        "{} not found: run `cargo build --bins` first",
        bin.display()
    );
    assert!(!padlock_test_support::in_ci(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

fn bulk_users(url: &str, keys: &str, first: usize, users: usize, bin: &Path) -> BulkUsersArgs {
    let first = first.to_string();
    let users = users.to_string();
    let cli = Cli::try_parse_from([
        "padlock-bench",
        "bulk-users",
        "--database-url",
        url,
        "--data-keys",
        keys,
        "--first",
        &first,
        "--users",
        &users,
        "--bulk-seed",
        SEED,
        "--auth-bin",
        bin.to_str().unwrap(),
    ])
    .unwrap();
    let Command::BulkUsers(args) = cli.command else {
        panic!("not bulk-users");
    };
    args
}

/// Starts `padlock-auth` serving `url` with its state in `data_dir`: the
/// process (killed when dropped) and its address.
async fn serve(
    bin: &PathBuf,
    url: &str,
    data_dir: &std::path::Path,
) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("DATABASE_URL", url)
        .env_remove("PADLOCK_DATA_KEYS")
        .env_remove("PADLOCK_DATA_KEYS_FILE")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, addr)) = line.split_once("listening on ") {
                return addr.to_owned();
            }
        }
        panic!("padlock-auth exited before it was ready");
    });
    let addr = ready.await.expect("padlock-auth ready within 60 s");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_users_sign_in_and_their_derived_codes_verify() {
    let Some(bin) = auth_bin() else { return };
    for db in padlock_test_support::databases().await {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let (mut server, addr) = serve(&bin, &db.url, &data_dir).await;
        // auth generated its data keys in the data directory; the import
        // must seal under the same ones.
        let keys = std::fs::read_to_string(data_dir.join("data-keys")).unwrap();
        let bulk_users = |first, users| bulk_users(&db.url, &keys, first, users, &bin);

        // Two parts, as the scale run loads 1,000 users and then the rest.
        bulk::run(&bulk_users(0, 3), None).await.unwrap();
        bulk::run(&bulk_users(3, 2), None).await.unwrap();
        let again = bulk::run(&bulk_users(4, 1), None).await.unwrap_err();
        assert!(
            format!("{again:#}").contains("line 1: username: taken"),
            "{}: {again:#}",
            db.backend
        );

        let cli = Cli::try_parse_from([
            "padlock-bench",
            "verify",
            "--auth",
            &addr,
            "--users",
            "5",
            "--existing",
            "5",
            "--bulk-seed",
            SEED,
            "--concurrency",
            "5",
            "--warmup",
            "0s",
            "--duration",
            "2s",
            "--no-floor",
        ])
        .unwrap();
        let Command::Verify {
            auth,
            users,
            existing,
            bulk,
            support,
            load,
        } = &cli.command
        else {
            panic!("not verify");
        };
        let report = scenario::verify(auth, *users, *existing, bulk, support, load)
            .await
            .unwrap();
        let phase = &report.phases[0];
        assert!(report.clean(), "{}: {:?}", db.backend, phase.errors);
        // Every user has at least two unused codes at any time.
        assert!(phase.ok >= 5, "{}: only {} accepted", db.backend, phase.ok);

        // Another seed derives another password: the sample cannot sign in.
        let mut wrong = bulk.clone();
        wrong.bulk_seed = Some(Secret::new("another seed".to_owned()));
        let refused =
            bulk::sign_in_existing(auth, &wrong, 5, 1, 1, std::time::Duration::from_secs(10), 1)
                .await
                .unwrap_err();
        assert!(
            format!("{refused:#}").contains("signing in a bulk user"),
            "{refused:#}"
        );

        server.kill().await.unwrap();
    }
}
