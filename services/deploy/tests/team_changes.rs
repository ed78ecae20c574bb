//! Changes that decide who reaches production, under concurrency: each
//! runs its checks, its write and its audit record in one transaction that
//! holds the app, so racing changes take turns instead of both acting on
//! what they read before the other committed. On SQLite and PostgreSQL.

mod common;

use common::{Harness, bearer, mda, refused};
use padlock_deploy::policy::Role;
use padlock_proto::Reason;
use padlock_proto::deploy::v1::{self as pb, Environment::*, NodePermission::*};
use tonic::Code;

/// Rounds per database: each race is decided by scheduling, so it is run
/// often enough that a missing lock loses it (without the app's row lock,
/// both races below were lost on PostgreSQL within their first two rounds;
/// SQLite's write lock serialises them anyway).
const ROUNDS: usize = 20;

fn member_request(app_id: &str, username: &str, role: pb::TeamRole) -> pb::AddTeamMemberRequest {
    pb::AddTeamMemberRequest {
        app_id: app_id.into(),
        username: username.into(),
        role: role as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_technical_contacts_demoting_each_other_at_once_leave_one() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        for round in 0..ROUNDS {
            let app = {
                let ops = h.token("ops", &["operator"], Some(h.now()));
                h.apps()
                    .create_app(bearer(
                        &ops,
                        pb::CreateAppRequest {
                            name: format!("Shop {round}"),
                            technical_contact: "tina".into(),
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .id
            };
            h.add_member(&app, "tom", pb::TeamRole::TechnicalContact)
                .await;
            let demote = |by: &str, whom: &str| {
                let mut apps = h.apps();
                let request = bearer(
                    &h.stepped_up(by),
                    member_request(&app, whom, pb::TeamRole::Deploy),
                );
                async move { apps.add_team_member(request).await }
            };
            let (a, b) = tokio::join!(demote("tina", "tom"), demote("tom", "tina"));
            let contacts = h.app.store().app(&app).await.unwrap().unwrap();
            assert_eq!(
                contacts.technical_contacts.len(),
                1,
                "{} round {round}: {a:?} / {b:?}",
                h.backend
            );
            // Exactly one demotion went through; the other was refused
            // because its caller had just been demoted.
            assert!(a.is_ok() != b.is_ok(), "{a:?} / {b:?}");
            let loser = if a.is_ok() { b } else { a };
            refused(
                loser,
                Code::PermissionDenied,
                Reason::TechnicalContactRequired.as_str_name(),
            );
        }
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removal_racing_a_grant_never_leaves_a_former_member_with_permissions() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.stepped_up("tina");
        for round in 0..ROUNDS {
            h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
            let mut apps = h.apps();
            let remove = apps.remove_team_member(bearer(
                &tina,
                pb::RemoveTeamMemberRequest {
                    app_id: app.clone(),
                    username: "dev".into(),
                },
            ));
            let grant = h.grant(&tina, &app, Production, "dev", &[Transport, Backups]);
            let (removed, granted) = tokio::join!(remove, grant);
            removed.unwrap();
            let member = h.app.store().member(&app, "dev").await.unwrap();
            let grants = h.app.store().grants(&app, Some("dev")).await.unwrap();
            assert!(member.is_none(), "{} round {round}", h.backend);
            assert!(
                grants.is_empty(),
                "{} round {round}: a former member holds {grants:?} (grant: {granted:?})",
                h.backend
            );
            if let Err(status) = granted {
                // The grant came second: dev was no member any more.
                refused(
                    Err::<(), _>(status),
                    Code::NotFound,
                    Reason::MemberNotFound.as_str_name(),
                );
            }
        }
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_package_follows_the_promotion_order() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.stepped_up("tina");
        let old = h.upload(&tina, &app, "1.0.0", &mda(1, 64)).await.unwrap();
        let new = h.upload(&tina, &app, "1.1.0", &mda(2, 64)).await.unwrap();
        let records_before = h.app.store().audit_events(Some(&app), 100).await.unwrap();

        // Straight to production, or to acceptance, without the step before.
        let meta = refused(
            h.deploy(&tina, &new.id, Production).await,
            Code::FailedPrecondition,
            Reason::PackageNotPromoted.as_str_name(),
        );
        assert_eq!(meta["environment"], "production");
        assert_eq!(meta["required_environment"], "acceptance");
        refused(
            h.deploy(&tina, &new.id, Acceptance).await,
            Code::FailedPrecondition,
            Reason::PackageNotPromoted.as_str_name(),
        );
        assert!(h.deployments(&tina, &app).await.is_empty(), "{}", h.backend);
        assert_eq!(
            h.app
                .store()
                .audit_events(Some(&app), 100)
                .await
                .unwrap()
                .len(),
            records_before.len(),
            "a refused deploy writes no record of a deployment"
        );

        // The order kept: test, acceptance, production.
        for env in [Test, Acceptance, Production] {
            h.deploy(&tina, &old.id, env).await.unwrap();
        }
        h.deploy(&tina, &new.id, Test).await.unwrap();
        refused(
            h.deploy(&tina, &new.id, Production).await,
            Code::FailedPrecondition,
            Reason::PackageNotPromoted.as_str_name(),
        );
        // A rollback to a package that ran on acceptance before is fine.
        h.deploy(&tina, &old.id, Production).await.unwrap();
        assert_eq!(h.deployments(&tina, &app).await.len(), 5, "{}", h.backend);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_has_one_record_and_a_refused_one_changes_nothing() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.stepped_up("tina");
        h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
        h.grant(&tina, &app, Test, "dev", &[Transport])
            .await
            .unwrap();
        let dev = h.stepped_up("dev");
        let package = h.upload(&dev, &app, "1.0.0", &mda(3, 64)).await.unwrap();
        h.deploy(&dev, &package.id, Test).await.unwrap();
        refused(
            h.transport(&dev, &package.id, Test, Acceptance).await,
            Code::PermissionDenied,
            Reason::NodePermissionMissing.as_str_name(),
        );
        let records = h.app.store().audit_events(Some(&app), 100).await.unwrap();
        let ok: Vec<&str> = records
            .iter()
            .rev()
            .filter(|r| r.outcome == "ok")
            .map(|r| r.action.as_str())
            .collect();
        assert_eq!(
            ok,
            [
                "create_app",
                "add_team_member",
                "change_node_permissions",
                "upload_package",
                "deploy_package"
            ],
            "{}",
            h.backend
        );
        let refusals: Vec<_> = records.iter().filter(|r| r.outcome == "refused").collect();
        assert_eq!(refusals.len(), 1);
        assert_eq!(
            refusals[0].reason.as_deref(),
            Some(Reason::NodePermissionMissing.as_str_name())
        );
        assert_eq!(
            h.deployments(&dev, &app).await.len(),
            1,
            "nothing transported"
        );
        let member = h.app.store().member(&app, "dev").await.unwrap().unwrap();
        assert_eq!(member.role, Role::Deploy);
        h.stop().await;
    }
}
