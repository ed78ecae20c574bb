//! `bulk-users` writes users the real auth service accepts: on each
//! backend, auth runs in-process on 127.0.0.1:0 with the real clock (the
//! load tool computes codes from it), the loader writes users into auth's
//! database in two parts, and `verify --existing` signs a sample in over
//! gRPC and has every code it presents accepted.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use clap::Parser as _;
use padlock_auth::Options;
use padlock_bench::bulk;
use padlock_bench::cli::{BulkUsersArgs, Cli, Command};
use padlock_bench::scenario;
use padlock_runtime::{Secret, SystemClock};
use tokio::sync::oneshot;

const SEED: &str = "bulk-users test seed";

fn bulk_users(url: &str, keys: &str, first: usize, users: usize) -> BulkUsersArgs {
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
    ])
    .unwrap();
    let Command::BulkUsers(args) = cli.command else {
        panic!("not bulk-users");
    };
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_users_sign_in_and_their_derived_codes_verify() {
    for db in padlock_test_support::databases().await {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut options = Options::in_dir(&data_dir);
        options.database_url = Some(Secret::new(db.url.clone()));
        let app = padlock_auth::open(options, Arc::new(SystemClock))
            .await
            .unwrap();
        // auth generated its data keys in the data directory; the loader
        // must seal under the same ones.
        let keys = std::fs::read_to_string(data_dir.join("data-keys")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            padlock_auth::serve(app, listener, &Default::default(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });

        // Two parts, as the scale run loads 1,000 users and then the rest.
        bulk::run(&bulk_users(&db.url, &keys, 0, 3), None)
            .await
            .unwrap();
        bulk::run(&bulk_users(&db.url, &keys, 3, 2), None)
            .await
            .unwrap();
        let again = bulk::run(&bulk_users(&db.url, &keys, 4, 1), None)
            .await
            .unwrap_err();
        assert!(
            format!("{again:#}").contains("inserting users"),
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

        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
