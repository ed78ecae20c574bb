//! The operator's commands on the server, `padlock-deploy apps create` and
//! `padlock-deploy team add`: the real binary on SQLite in a temporary data
//! directory (what it prints, how it fails), and the commands' library
//! functions on every backend (one transaction each with its audit record,
//! unique app names, an app never left without a Technical Contact).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use padlock_deploy::DeployError;
use padlock_deploy::inspect::Store;
use padlock_deploy::operator::{self, CLI_ACTOR};
use padlock_deploy::policy::Role;

const START: i64 = 1_800_000_000;

/// `padlock-deploy --data-dir DIR ARGS...`, with none of the caller's
/// settings.
fn padlock_deploy(data_dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_padlock-deploy"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("PADLOCK_DATA_DIR")
        .env_remove("PADLOCK_CLOCK_OFFSET_SECS")
        .env_remove("PADLOCK_LOG_FORMAT")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The last line of a failed command's standard error (the lines before
/// it are its logs).
fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", stdout(out));
    assert!(out.stdout.is_empty(), "a failure prints nothing on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().last().unwrap_or_default().to_owned()
}

async fn open(data_dir: &Path) -> Store {
    Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("deploy.db").display()
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn apps_create_prints_the_id_and_refuses_a_second_app_of_that_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("deploy");
    let create = ["apps", "create", "--name", "Shop", "--technical-contact"];

    let out = padlock_deploy(&data, &[&create[..], &["tina"]].concat());
    let id = stdout(&out).trim().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "prints the id: {id:?}");

    let again = padlock_deploy(&data, &[&create[..], &["tom"]].concat());
    assert_eq!(
        failure(&again),
        "padlock-deploy: an app with that name exists"
    );
    let bad = padlock_deploy(
        &data,
        &[&create[..3], &["  ", "--technical-contact", "tina"]].concat(),
    );
    assert!(failure(&bad).contains("invalid: --name"));

    let store = open(&data).await;
    let app = store.app(&id).await.unwrap().unwrap();
    assert_eq!(
        (app.name.as_str(), app.technical_contacts),
        ("Shop", vec!["tina".to_owned()])
    );
    let records = store.audit_events(None, 10).await.unwrap();
    assert_eq!(
        records.len(),
        1,
        "only the app that was created: {records:?}"
    );
    let record = &records[0];
    assert_eq!(
        (record.actor.as_str(), record.action.as_str()),
        (CLI_ACTOR, "create_app")
    );
    assert_eq!(record.app_id.as_deref(), Some(id.as_str()));
    assert_eq!(record.detail, "technical_contact=tina");
    assert_eq!(record.mfa_at, None);
}

#[tokio::test]
async fn team_add_names_the_app_by_name_or_id_and_keeps_a_technical_contact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("deploy");
    let id = stdout(&padlock_deploy(
        &data,
        &[
            "apps",
            "create",
            "--name",
            "Shop",
            "--technical-contact",
            "tina",
        ],
    ))
    .trim()
    .to_owned();
    let team_add = |app: &str, username: &str, role: &str| {
        padlock_deploy(
            &data,
            &[
                "team",
                "add",
                "--app",
                app,
                "--username",
                username,
                "--role",
                role,
            ],
        )
    };

    assert_eq!(
        stdout(&team_add("Shop", "dev", "deploy")),
        "dev on Shop: deploy\n"
    );
    assert_eq!(
        failure(&team_add(&id, "tina", "member")),
        "padlock-deploy: an app needs a Technical Contact; add another one first"
    );
    assert_eq!(
        stdout(&team_add(&id, "dev", "technical_contact")),
        "dev on Shop: deploy -> technical_contact\n"
    );
    // Two Technical Contacts: one may step down, the other then may not.
    assert_eq!(
        stdout(&team_add("Shop", "tina", "member")),
        "tina on Shop: technical_contact -> member\n"
    );
    assert!(failure(&team_add("Shop", "dev", "deploy")).contains("needs a Technical Contact"));
    assert_eq!(
        failure(&team_add("Shopping", "dev", "member")),
        "padlock-deploy: unknown app"
    );
    let unknown_role = team_add("Shop", "dev", "owner");
    assert!(!unknown_role.status.success());
    assert!(String::from_utf8_lossy(&unknown_role.stderr).contains("invalid value 'owner'"));

    let store = open(&data).await;
    let members: Vec<_> = store
        .members(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.username, m.role))
        .collect();
    assert_eq!(
        members,
        [
            ("dev".to_owned(), Role::TechnicalContact),
            ("tina".to_owned(), Role::Member)
        ]
    );
    let details: Vec<_> = store
        .audit_events(Some(&id), 10)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| {
            assert_eq!(r.actor, CLI_ACTOR);
            format!("{} {}", r.action, r.detail)
        })
        .collect();
    assert_eq!(
        details,
        [
            "create_app technical_contact=tina",
            "add_team_member username=dev role=deploy",
            "add_team_member username=dev role=deploy->technical_contact",
            "add_team_member username=tina role=technical_contact->member",
        ],
        "one record per change, none for a refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_write_one_change_with_its_record_on_every_backend() {
    for db in padlock_test_support::databases().await {
        let store = Store::connect(&db.url).await.unwrap();
        let app = operator::create_app(&store, START, "Shop", "tina")
            .await
            .unwrap();
        assert!(
            matches!(
                operator::create_app(&store, START, "Shop", "tom").await,
                Err(DeployError::AppNameTaken)
            ),
            "{}",
            db.backend
        );
        let (named, before, member) =
            operator::add_team_member(&store, START + 1, "Shop", "dev", Role::Deploy)
                .await
                .unwrap();
        assert_eq!((named.id.as_str(), before), (app.id.as_str(), None));
        assert_eq!(
            (member.username.as_str(), member.role),
            ("dev", Role::Deploy)
        );
        assert!(matches!(
            operator::add_team_member(&store, START + 2, &app.id, "tina", Role::Deploy).await,
            Err(DeployError::LastTechnicalContact)
        ));
        assert!(matches!(
            operator::add_team_member(&store, START + 2, "Web", "dev", Role::Member).await,
            Err(DeployError::AppNotFound)
        ));
        assert!(matches!(
            operator::add_team_member(&store, START + 2, "Shop", "", Role::Member).await,
            Err(DeployError::Invalid(_))
        ));
        let shop = store.app(&app.id).await.unwrap().unwrap();
        assert_eq!(shop.technical_contacts, ["tina"], "{}", db.backend);
        // One team change went through: the app's permissions version
        // moved once, so cached holdings see it.
        assert_eq!(store.permissions_version(&app.id).await.unwrap(), Some(1));

        let records = store.audit_events(None, 10).await.unwrap();
        assert_eq!(records.len(), 2, "{}: {records:?}", db.backend);
        assert!(records.iter().all(|r| r.actor == CLI_ACTOR));
        let intact = padlock_deploy::inspect::verify_audit_chain(&db.url, None)
            .await
            .unwrap()
            .into_result()
            .unwrap();
        assert_eq!(intact.head.seq, 2, "{}", db.backend);
    }
}
