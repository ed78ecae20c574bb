//! The deploy storage conformance suite: the same assertions on SQLite and
//! on a real PostgreSQL, straight against the repository functions.

use padlock_deploy::policy::{Env, Permission};
use padlock_deploy::store::{AuditEvent, Deployment, Outcome, Package, Role, Store, StoreError};

const NOW: i64 = 1_800_000_000;

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
        store
            .create_app("a1", "Shop", "tina", "ops", NOW)
            .await
            .unwrap();
        let err = store
            .create_app("a2", "Shop", "tom", "ops", NOW)
            .await
            .unwrap_err();
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
    }
}

#[tokio::test]
async fn demoting_or_removing_a_member_drops_their_permissions() {
    for (db, store) in stores().await {
        store
            .create_app("a1", "Shop", "tina", "ops", NOW)
            .await
            .unwrap();
        store
            .put_member("a1", "dev", Role::Deploy, "tina", NOW)
            .await
            .unwrap();
        store
            .grant(
                "a1",
                Env::Acceptance,
                "dev",
                &[Permission::Transport, Permission::Logs],
                "tina",
                NOW,
            )
            .await
            .unwrap();
        store
            .grant(
                "a1",
                Env::Acceptance,
                "dev",
                &[Permission::Transport],
                "tina",
                NOW,
            )
            .await
            .unwrap();
        assert_eq!(
            store.grants("a1", Some("dev")).await.unwrap().len(),
            2,
            "{}",
            db.backend
        );
        store
            .put_member("a1", "dev", Role::Member, "tina", NOW)
            .await
            .unwrap();
        assert!(store.grants("a1", Some("dev")).await.unwrap().is_empty());
        store
            .put_member("a1", "dev", Role::Deploy, "tina", NOW)
            .await
            .unwrap();
        store
            .grant("a1", Env::Test, "dev", &[Permission::Operate], "tina", NOW)
            .await
            .unwrap();
        assert!(store.remove_member("a1", "dev").await.unwrap());
        assert!(!store.remove_member("a1", "dev").await.unwrap());
        assert!(store.grants("a1", None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_newest_deployment_is_what_runs() {
    for (db, store) in stores().await {
        store
            .create_app("a1", "Shop", "tina", "ops", NOW)
            .await
            .unwrap();
        store.insert_package(&package("p1", "1.0.0")).await.unwrap();
        store.insert_package(&package("p2", "1.1.0")).await.unwrap();
        assert!(matches!(
            store.insert_package(&package("p3", "1.0.0")).await,
            Err(StoreError::Conflict)
        ));
        assert!(store.blob_in_use(&"ab".repeat(32)).await.unwrap());
        store
            .insert_deployment(&deployment("p1", Env::Test, NOW))
            .await
            .unwrap();
        store
            .insert_deployment(&deployment("p2", Env::Test, NOW))
            .await
            .unwrap();
        store
            .insert_deployment(&deployment("p1", Env::Acceptance, NOW + 1))
            .await
            .unwrap();
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
                reason: Some("NODE_PERMISSION_MISSING"),
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
            ("dev", Some("production"), Some("NODE_PERMISSION_MISSING"))
        );
        assert_eq!(e.mfa_at, Some(NOW - 60));
    }
}
