//! The seed document's flow, in-process on SQLite and PostgreSQL: a
//! Technical Contact grants an external developer acceptance only; a
//! package goes test -> acceptance -> production; production needs a fresh
//! second factor and the node permission. Time moves by the manual clock.

mod common;

use padlock_proto::Reason;
use std::time::Duration;

use common::*;
use padlock_proto::deploy::v1::{self as pb, Environment::*, NodePermission::*};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_to_production_needs_fresh_mfa_and_the_node_permission() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
        let tina = h.token("tina", &[], None);
        for env in [Test, Acceptance] {
            h.grant(&tina, &app, env, "dev", &[Transport])
                .await
                .unwrap();
        }

        let dev = h.token("dev", &[], None);
        let package = h.upload(&dev, &app, "1.0.0", &mda(1, 5000)).await.unwrap();
        assert_eq!(package.size, 5000);
        h.deploy(&dev, &package.id, Test).await.unwrap();
        let moved = h
            .transport(&dev, &package.id, Test, Acceptance)
            .await
            .unwrap();
        assert_eq!(moved.from_environment(), Test);
        assert_eq!(moved.mfa_at, None, "acceptance carries no padlock");
        let before = h.deployments(&tina, &app).await.len();

        // Production: the Technical Contact without a second factor.
        let meta = refused(
            h.transport(&tina, &package.id, Acceptance, Production)
                .await,
            Code::Unauthenticated,
            Reason::MfaRequired.as_str_name(),
        );
        assert_eq!(meta["max_age"], "28800", "{}", h.backend);
        assert_eq!(meta["action"], "transport_package");
        assert_eq!(meta["environment"], "production");
        assert_eq!(
            h.deployments(&tina, &app).await.len(),
            before,
            "a refusal changes nothing"
        );

        // With a fresh second factor it goes through and records it.
        let mfa_at = h.now();
        let tina_mfa = h.token("tina", &[], Some(mfa_at));
        let done = h
            .transport(&tina_mfa, &package.id, Acceptance, Production)
            .await
            .unwrap();
        assert_eq!(done.environment(), Production);
        assert_eq!(done.mfa_at.unwrap().seconds, mfa_at);
        assert_eq!(done.mfa_method, "totp");

        // The external developer, even stepped up, lacks production.
        let dev_mfa = h.stepped_up("dev");
        let meta = refused(
            h.transport(&dev_mfa, &package.id, Acceptance, Production)
                .await,
            Code::PermissionDenied,
            Reason::NodePermissionMissing.as_str_name(),
        );
        assert_eq!(meta["environment"], "production");

        // Exactly eight hours later it still counts; one second more, it does not.
        h.clock.advance(Duration::from_secs(EIGHT_HOURS as u64));
        let still = h.token("tina", &[], Some(mfa_at));
        h.deploy(&still, &package.id, Production).await.unwrap();
        h.clock.advance(Duration::from_secs(1));
        let stale = h.token("tina", &[], Some(mfa_at));
        let meta = refused(
            h.transport(&stale, &package.id, Acceptance, Production)
                .await,
            Code::Unauthenticated,
            Reason::MfaExpired.as_str_name(),
        );
        assert_eq!(meta["max_age"], "28800");

        // The audit trail has the transports and the refusals, with mfa_at.
        let events = h.app.store().audit_events(Some(&app), 100).await.unwrap();
        let refusals: Vec<_> = events
            .iter()
            .filter(|e| e.outcome == "refused")
            .map(|e| e.reason.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            refusals,
            [
                Reason::MfaExpired.as_str_name(),
                Reason::NodePermissionMissing.as_str_name(),
                Reason::MfaRequired.as_str_name()
            ],
            "{}",
            h.backend
        );
        let prod = events
            .iter()
            .find(|e| {
                e.action == "transport_package"
                    && e.outcome == "ok"
                    && e.environment.as_deref() == Some("production")
            })
            .expect("the production transport is audited");
        assert_eq!(prod.actor, "tina");
        assert_eq!(prod.mfa_at, Some(mfa_at));
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_move_one_environment_at_a_time() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.stepped_up("tina");
        let package = h.upload(&tina, &app, "1.0.0", &mda(2, 3000)).await.unwrap();
        let status = h
            .transport(&tina, &package.id, Test, Production)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["to_environment"]);
        refused(
            h.transport(&tina, &package.id, Test, Acceptance).await,
            Code::FailedPrecondition,
            Reason::PackageNotDeployedInSource.as_str_name(),
        );

        // Only what runs in the source environment now can move on.
        h.deploy(&tina, &package.id, Test).await.unwrap();
        let newer = h.upload(&tina, &app, "1.1.0", &mda(3, 3000)).await.unwrap();
        h.deploy(&tina, &newer.id, Test).await.unwrap();
        refused(
            h.transport(&tina, &package.id, Test, Acceptance).await,
            Code::FailedPrecondition,
            Reason::PackageNotDeployedInSource.as_str_name(),
        );
        h.transport(&tina, &newer.id, Test, Acceptance)
            .await
            .unwrap();

        let envs = h
            .apps()
            .list_environments(bearer(
                &tina,
                pb::ListEnvironmentsRequest {
                    app_id: app.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .environments;
        let current: Vec<_> = envs
            .iter()
            .map(|e| e.current.as_ref().map(|d| d.package_version.clone()))
            .collect();
        assert_eq!(
            current,
            [Some("1.1.0".to_owned()), Some("1.1.0".to_owned()), None],
            "{}",
            h.backend
        );
        assert_eq!(envs[2].node_name, "shop-production");

        refused(
            h.deploy(&tina, &uuid::Uuid::new_v4().to_string(), Test)
                .await,
            Code::NotFound,
            Reason::PackageNotFound.as_str_name(),
        );
        let status = h
            .deploy(&tina, "nope", Environment::Unspecified)
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["package_id", "environment"]);
        h.stop().await;
    }
}

use pb::Environment;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_access_tells_in_advance_and_changes_nothing() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let check = |token: String, env: Environment| {
            let mut client = h.policy();
            let app = app.clone();
            async move {
                client
                    .check_access(bearer(
                        &token,
                        pb::CheckAccessRequest {
                            action: pb::Action::TransportPackage as i32,
                            app_id: app,
                            environment: env as i32,
                        },
                    ))
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let answer = check(h.token("tina", &[], None), Production).await.unwrap();
        assert!(!answer.allowed);
        assert_eq!(
            (
                answer.reason.as_str(),
                answer.padlock,
                answer.max_age_seconds
            ),
            (Reason::MfaRequired.as_str_name(), true, 28_800)
        );
        let answer = check(h.token("tina", &[], None), Test).await.unwrap();
        assert!(
            answer.allowed && !answer.padlock && answer.max_age_seconds == 0,
            "{answer:?}"
        );
        let mfa_at = h.now();
        let answer = check(h.stepped_up("tina"), Production).await.unwrap();
        assert!(answer.allowed);
        assert_eq!(answer.mfa_expires_at.unwrap().seconds, mfa_at + EIGHT_HOURS);
        let answer = check(h.stepped_up("stranger"), Production).await.unwrap();
        assert_eq!(answer.reason, Reason::NodePermissionMissing.as_str_name());
        refused(
            check("garbage".into(), Production).await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );

        let actions = h
            .policy()
            .list_actions(bearer(
                &h.token("dev", &[], None),
                pb::ListActionsRequest {},
            ))
            .await
            .unwrap()
            .into_inner()
            .actions;
        assert_eq!(actions.len(), 18, "6 actions x 3 environments");
        let padlocked: Vec<_> = actions
            .iter()
            .filter(|a| a.padlock)
            .map(|a| (a.action(), a.environment()))
            .collect();
        let mut expected: Vec<_> = [
            pb::Action::DeployPackage,
            pb::Action::TransportPackage,
            pb::Action::GetNodeDetails,
            pb::Action::DownloadBackup,
            pb::Action::ChangeNodePermissions,
        ]
        .into_iter()
        .map(|a| (a, Production))
        .collect();
        expected.extend([Test, Acceptance, Production].map(|e| (pb::Action::ChangeTeam, e)));
        assert_eq!(padlocked, expected, "{}", h.backend);
        assert!(
            h.app
                .store()
                .audit_events(Some(&app), 100)
                .await
                .unwrap()
                .iter()
                .all(|e| e.action == "create_app")
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_max_age_applies_to_its_action_only() {
    let db = padlock_test_support::sqlite();
    let h = Harness::start_with(&db, |mut o| {
        o.policy = o.policy.with_max_age(
            padlock_deploy::policy::Action::TransportPackage,
            padlock_deploy::policy::MaxAge::from_secs(3600).unwrap(),
        );
        o
    })
    .await;
    let app = h.shop().await;
    let mfa_at = h.now();
    let tina = h.token("tina", &[], Some(mfa_at));
    let package = h.upload(&tina, &app, "1.0.0", &mda(4, 100)).await.unwrap();
    h.deploy(&tina, &package.id, Test).await.unwrap();
    h.deploy(&tina, &package.id, Acceptance).await.unwrap();
    h.clock.advance(Duration::from_secs(3601));
    let tina = h.token("tina", &[], Some(mfa_at));
    let meta = refused(
        h.transport(&tina, &package.id, Acceptance, Production)
            .await,
        Code::Unauthenticated,
        Reason::MfaExpired.as_str_name(),
    );
    assert_eq!(meta["max_age"], "3600");
    // Deploying keeps the default eight hours.
    h.deploy(&tina, &package.id, Production).await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_is_picked_up_without_a_restart() {
    let db = padlock_test_support::sqlite();
    let h = Harness::start(&db).await;
    let app = h.shop().await;
    let old = h.token("tina", &[], None);
    h.rotate_keys();
    let new = h.token("tina", &[], None);
    assert_ne!(
        padlock_token::Verifier::decode_header_kid(&old).unwrap(),
        padlock_token::Verifier::decode_header_kid(&new).unwrap()
    );
    for token in [&new, &old] {
        h.apps()
            .get_app(bearer(
                token,
                pb::GetAppRequest {
                    app_id: app.clone(),
                },
            ))
            .await
            .unwrap();
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_caller_learns_nothing_about_what_exists() {
    let db = padlock_test_support::sqlite();
    let h = Harness::start(&db).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for token in ["", "garbage"] {
        refused(
            h.deploy(token, &unknown, Production).await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );
        refused(
            h.transport(token, &unknown, Acceptance, Production).await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );
        refused(
            h.nodes()
                .get_node_details(bearer(
                    token,
                    pb::GetNodeDetailsRequest {
                        app_id: unknown.clone(),
                        environment: Production as i32,
                    },
                ))
                .await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );
        refused(
            h.grant(token, &unknown, Production, "dev", &[Transport])
                .await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );
    }
    h.stop().await;
}
