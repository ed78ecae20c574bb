//! The deploy storage conformance suite: the same assertions on SQLite and
//! on a real PostgreSQL, straight against the repository functions (unit tests, since the store
//! is not part of the crate's API).

use super::{AppChange, AuditEvent, Deployment, NewApp, Outcome, Package, Store, StoreError};
use crate::policy::{Env, Permission, Role};
use padlock_proto::Reason;

const NOW: i64 = 1_800_000_000;

fn new_app(id: &str, name: &str, technical_contact: &str) -> NewApp {
    NewApp {
        id: id.into(),
        name: name.into(),
        technical_contact: technical_contact.into(),
        by: "ops".into(),
        now: NOW,
    }
}

fn record(action: &'static str) -> AuditEvent {
    AuditEvent {
        at: NOW,
        actor: "tina".into(),
        action,
        app_id: Some("a1".into()),
        env: None,
        outcome: Outcome::Ok,
        reason: None,
        mfa_at: Some(NOW - 5),
        mfa_method: Some("totp".into()),
        detail: String::new(),
    }
}

async fn create(
    store: &Store,
    id: &str,
    name: &str,
    technical_contact: &str,
) -> Result<(), StoreError> {
    store
        .create_app(&new_app(id, name, technical_contact), record("create_app"))
        .await
}

async fn change(store: &Store) -> AppChange {
    store
        .change("a1")
        .await
        .expect("begin a change")
        .expect("the app exists")
}

async fn stores() -> Vec<(padlock_test_support::TestDatabase, Store)> {
    let mut all = Vec::new();
    for db in padlock_test_support::databases().await {
        let store = Store::connect(&db.url).await.expect("connect and migrate");
        all.push((db, store));
    }
    all
}

fn package(id: &str, version: &str) -> Package {
    Package {
        id: id.into(),
        app_id: "a1".into(),
        version: version.into(),
        file_name: format!("shop-{version}.mda"),
        size: 42,
        sha256: "ab".repeat(32),
        uploaded_by: "tina".into(),
        uploaded_at: NOW,
    }
}

fn deployment(package_id: &str, env: Env, at: i64) -> Deployment {
    Deployment {
        id: 0,
        app_id: "a1".into(),
        package_id: package_id.into(),
        env,
        from_env: None,
        deployed_by: "tina".into(),
        deployed_at: at,
        mfa_at: Some(at - 5),
        mfa_method: Some("totp".into()),
    }
}

#[tokio::test]
async fn apps_have_unique_names_and_start_with_their_technical_contact() {
    for (db, store) in stores().await {
        create(&store, "a1", "Shop", "tina").await.unwrap();
        let err = create(&store, "a2", "Shop", "tom").await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict),
            "{}: {err:?}",
            db.backend
        );
        assert!(
            store.app("a2").await.unwrap().is_none(),
            "no half-created app"
        );
        let app = store.app("a1").await.unwrap().unwrap();
        assert_eq!(app.technical_contacts, ["tina"]);
        assert_eq!(store.apps_of("tina").await.unwrap().len(), 1);
        assert!(
            store.apps_of("tom").await.unwrap().is_empty(),
            "{}: the failed app left no member",
            db.backend
        );
        assert_eq!(
            store.audit_events(None, 10).await.unwrap().len(),
            1,
            "{}: one record, for the app that was created",
            db.backend
        );
        assert!(store.change("a2").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn demoting_or_removing_a_member_drops_their_permissions() {
    for (db, store) in stores().await {
        create(&store, "a1", "Shop", "tina").await.unwrap();
        let mut c = change(&store).await;
        c.put_member("dev", Role::Deploy, "tina", NOW)
            .await
            .unwrap();
        c.grant(
            Env::Acceptance,
            "dev",
            &[Permission::Transport, Permission::Logs],
            "tina",
            NOW,
        )
        .await
        .unwrap();
        c.grant(
            Env::Acceptance,
            "dev",
            &[Permission::Transport],
            "tina",
            NOW,
        )
        .await
        .unwrap();
        c.commit(record("grant")).await.unwrap();
        assert_eq!(
            store.grants("a1", Some("dev")).await.unwrap().len(),
            2,
            "{}",
            db.backend
        );
        let mut c = change(&store).await;
        c.put_member("dev", Role::Member, "tina", NOW)
            .await
            .unwrap();
        c.commit(record("add_team_member")).await.unwrap();
        assert!(store.grants("a1", Some("dev")).await.unwrap().is_empty());
        let mut c = change(&store).await;
        c.put_member("dev", Role::Deploy, "tina", NOW)
            .await
            .unwrap();
        c.grant(Env::Test, "dev", &[Permission::Operate], "tina", NOW)
            .await
            .unwrap();
        assert!(c.remove_member("dev").await.unwrap());
        assert!(!c.remove_member("dev").await.unwrap());
        c.commit(record("remove_team_member")).await.unwrap();
        assert!(store.grants("a1", None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_change_commits_with_its_record_or_leaves_nothing() {
    for (db, store) in stores().await {
        create(&store, "a1", "Shop", "tina").await.unwrap();
        let records = || async { store.audit_events(Some("a1"), 100).await.unwrap().len() };
        let version = store.permissions_version("a1").await.unwrap();

        // Dropped without a commit, and rolled back: nothing of either stays.
        let mut c = change(&store).await;
        c.put_member("dev", Role::Deploy, "tina", NOW)
            .await
            .unwrap();
        drop(c);
        let mut c = change(&store).await;
        c.put_member("eve", Role::TechnicalContact, "tina", NOW)
            .await
            .unwrap();
        c.rollback().await.unwrap();
        assert!(
            store.member("a1", "dev").await.unwrap().is_none(),
            "{}",
            db.backend
        );
        assert!(store.member("a1", "eve").await.unwrap().is_none());
        assert_eq!(records().await, 1, "{}: only the creation", db.backend);
        assert_eq!(store.permissions_version("a1").await.unwrap(), version);

        // Committed: the change, its record and a new permissions version.
        let mut c = change(&store).await;
        assert_eq!(c.app().technical_contacts, ["tina"]);
        c.put_member("dev", Role::Deploy, "tina", NOW)
            .await
            .unwrap();
        c.commit(record("add_team_member")).await.unwrap();
        assert!(store.member("a1", "dev").await.unwrap().is_some());
        assert_eq!(records().await, 2, "{}", db.backend);
        assert!(store.permissions_version("a1").await.unwrap() > version);
        let newest = &store.audit_events(Some("a1"), 1).await.unwrap()[0];
        assert_eq!(newest.action, "add_team_member");
    }
}

#[tokio::test]
async fn the_newest_deployment_is_what_runs() {
    for (db, store) in stores().await {
        create(&store, "a1", "Shop", "tina").await.unwrap();
        let c = change(&store).await;
        c.insert_package(&package("p1", "1.0.0")).await.unwrap();
        c.insert_package(&package("p2", "1.1.0")).await.unwrap();
        c.commit(record("upload_package")).await.unwrap();
        let c = change(&store).await;
        assert!(matches!(
            c.insert_package(&package("p3", "1.0.0")).await,
            Err(StoreError::Conflict)
        ));
        drop(c);
        assert!(store.blob_in_use(&"ab".repeat(32)).await.unwrap());
        let c = change(&store).await;
        c.insert_deployment(&deployment("p1", Env::Test, NOW))
            .await
            .unwrap();
        c.insert_deployment(&deployment("p2", Env::Test, NOW))
            .await
            .unwrap();
        c.insert_deployment(&deployment("p1", Env::Acceptance, NOW + 1))
            .await
            .unwrap();
        assert!(c.has_run("p1", Env::Test).await.unwrap());
        assert!(c.has_run("p1", Env::Acceptance).await.unwrap());
        assert!(!c.has_run("p2", Env::Acceptance).await.unwrap());
        c.commit(record("deploy_package")).await.unwrap();
        let current = store
            .current_deployment("a1", Env::Test)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            current.package_id, "p2",
            "{}: same second, later row wins",
            db.backend
        );
        assert_eq!(current.mfa_at, Some(NOW - 5));
        assert!(
            store
                .current_deployment("a1", Env::Production)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.deployments("a1", None, 10).await.unwrap().len(), 3);
    }
}

#[tokio::test]
async fn audit_events_keep_who_what_where_and_the_second_factor() {
    for (db, store) in stores().await {
        store
            .audit(AuditEvent {
                at: NOW,
                actor: "dev".into(),
                action: "transport_package",
                app_id: Some("a1".into()),
                env: Some(Env::Production),
                outcome: Outcome::Refused,
                reason: Some(Reason::NodePermissionMissing.as_str_name()),
                mfa_at: Some(NOW - 60),
                mfa_method: Some("totp".into()),
                detail: String::new(),
            })
            .await
            .unwrap();
        let events = store.audit_events(Some("a1"), 10).await.unwrap();
        assert_eq!(events.len(), 1, "{}", db.backend);
        let e = &events[0];
        assert_eq!(
            (
                e.actor.as_str(),
                e.environment.as_deref(),
                e.reason.as_deref()
            ),
            (
                "dev",
                Some("production"),
                Some(Reason::NodePermissionMissing.as_str_name())
            )
        );
        assert_eq!(e.mfa_at, Some(NOW - 60));
    }
}
