//! Teams and node permissions: only the Technical Contact manages them,
//! only Deploy members hold permissions, and changing production's is a
//! padlocked action.

mod common;

use common::*;
use padlock_proto::Reason;
use padlock_proto::deploy::v1::{self as pb, Environment::*, NodePermission::*};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_technical_contact_grants_and_production_needs_a_second_factor() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
        h.add_member(&app, "mia", pb::TeamRole::Member).await;
        let tina = h.token("tina", &[], None);

        let set = h
            .grant(
                &tina,
                &app,
                Acceptance,
                "dev",
                &[Transport, Logs, Transport],
            )
            .await
            .unwrap();
        assert_eq!(
            set.permissions,
            [Transport as i32, Logs as i32],
            "{}",
            h.backend
        );
        refused(
            h.grant(&h.stepped_up("dev"), &app, Acceptance, "dev", &[Operate])
                .await,
            Code::PermissionDenied,
            Reason::TechnicalContactRequired.as_str_name(),
        );
        refused(
            h.grant(&tina, &app, Acceptance, "mia", &[Transport]).await,
            Code::FailedPrecondition,
            Reason::DeployRoleRequired.as_str_name(),
        );
        refused(
            h.grant(&tina, &app, Acceptance, "nobody", &[Transport])
                .await,
            Code::NotFound,
            Reason::MemberNotFound.as_str_name(),
        );
        let meta = refused(
            h.grant(&tina, &app, Production, "dev", &[Transport]).await,
            Code::Unauthenticated,
            Reason::MfaRequired.as_str_name(),
        );
        assert_eq!(meta["action"], "change_node_permissions");
        h.grant(&h.stepped_up("tina"), &app, Production, "dev", &[Operate])
            .await
            .unwrap();
        let status = h.grant(&tina, &app, Test, "dev", &[]).await.unwrap_err();
        assert_eq!(bad_fields(&status), ["permissions"]);

        let left = h
            .permissions()
            .revoke_node_permissions(bearer(
                &tina,
                pb::RevokeNodePermissionsRequest {
                    app_id: app.clone(),
                    environment: Acceptance as i32,
                    username: "dev".into(),
                    permissions: vec![Logs as i32],
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(left.permissions, [Transport as i32]);

        let listed = h
            .permissions()
            .list_node_permissions(bearer(
                &h.token("dev", &[], None),
                pb::ListNodePermissionsRequest {
                    app_id: app.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .entries;
        let summary: Vec<_> = listed
            .iter()
            .map(|e| (e.username.as_str(), e.environment(), e.permissions.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("dev", Acceptance, vec![Transport as i32]),
                ("dev", Production, vec![Operate as i32])
            ]
        );

        // Removing a member, or demoting them, takes their permissions away.
        h.add_member(&app, "dev", pb::TeamRole::Member).await;
        assert!(
            h.app
                .store()
                .grants(&app, Some("dev"))
                .await
                .unwrap()
                .is_empty()
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_are_managed_by_the_technical_contact() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        // Naming a Technical Contact decides who reaches production: an
        // operator needs a fresh second factor for it.
        let ops_password_only = h.token("ops", &["operator"], None);
        let meta = refused(
            h.apps()
                .create_app(bearer(
                    &ops_password_only,
                    pb::CreateAppRequest {
                        name: "Shop".into(),
                        technical_contact: "tina".into(),
                    },
                ))
                .await,
            Code::Unauthenticated,
            Reason::MfaRequired.as_str_name(),
        );
        assert_eq!(meta["action"], "create_app");
        let stale = h.token("ops", &["operator"], Some(h.now() - 28_801));
        refused(
            h.apps()
                .create_app(bearer(
                    &stale,
                    pb::CreateAppRequest {
                        name: "Shop".into(),
                        technical_contact: "tina".into(),
                    },
                ))
                .await,
            Code::Unauthenticated,
            Reason::MfaExpired.as_str_name(),
        );
        let ops = h.token("ops", &["operator"], Some(h.now()));
        refused(
            h.apps()
                .create_app(bearer(
                    &h.token("tina", &[], None),
                    pb::CreateAppRequest {
                        name: "X".into(),
                        technical_contact: "tina".into(),
                    },
                ))
                .await,
            Code::PermissionDenied,
            Reason::RoleRequired.as_str_name(),
        );
        let app = h.shop().await;
        refused(
            h.apps()
                .create_app(bearer(
                    &ops,
                    pb::CreateAppRequest {
                        name: "Shop".into(),
                        technical_contact: "tom".into(),
                    },
                ))
                .await,
            Code::AlreadyExists,
            Reason::AppNameTaken.as_str_name(),
        );
        let status = h
            .apps()
            .create_app(bearer(
                &ops,
                pb::CreateAppRequest {
                    name: " ".into(),
                    technical_contact: "a b".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["name", "technical_contact"]);

        let dev = h.stepped_up("dev");
        h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
        refused(
            h.apps()
                .add_team_member(bearer(
                    &dev,
                    pb::AddTeamMemberRequest {
                        app_id: app.clone(),
                        username: "eve".into(),
                        role: pb::TeamRole::Deploy as i32,
                    },
                ))
                .await,
            Code::PermissionDenied,
            Reason::TechnicalContactRequired.as_str_name(),
        );
        // A team change needs the Technical Contact's fresh second factor.
        let tina_password_only = h.token("tina", &[], None);
        for role in [pb::TeamRole::TechnicalContact, pb::TeamRole::Member] {
            let meta = refused(
                h.apps()
                    .add_team_member(bearer(
                        &tina_password_only,
                        pb::AddTeamMemberRequest {
                            app_id: app.clone(),
                            username: "dev".into(),
                            role: role as i32,
                        },
                    ))
                    .await,
                Code::Unauthenticated,
                Reason::MfaRequired.as_str_name(),
            );
            assert_eq!(
                (meta["action"].as_str(), meta["environment"].as_str()),
                ("change_team", "production")
            );
        }
        refused(
            h.apps()
                .remove_team_member(bearer(
                    &tina_password_only,
                    pb::RemoveTeamMemberRequest {
                        app_id: app.clone(),
                        username: "dev".into(),
                    },
                ))
                .await,
            Code::Unauthenticated,
            Reason::MfaRequired.as_str_name(),
        );
        let member = h.app.store().member(&app, "dev").await.unwrap().unwrap();
        assert_eq!(
            member.role,
            padlock_deploy::policy::Role::Deploy,
            "unchanged"
        );
        let tina = h.stepped_up("tina");
        refused(
            h.apps()
                .remove_team_member(bearer(
                    &tina,
                    pb::RemoveTeamMemberRequest {
                        app_id: app.clone(),
                        username: "tina".into(),
                    },
                ))
                .await,
            Code::FailedPrecondition,
            Reason::LastTechnicalContact.as_str_name(),
        );
        let listed = h
            .apps()
            .list_apps(bearer(&dev, pb::ListAppsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .apps;
        assert_eq!(
            listed
                .iter()
                .map(|a| (a.name.as_str(), a.technical_contact.as_str()))
                .collect::<Vec<_>>(),
            [("Shop", "tina")],
            "{}",
            h.backend
        );
        h.apps()
            .remove_team_member(bearer(
                &tina,
                pb::RemoveTeamMemberRequest {
                    app_id: app.clone(),
                    username: "dev".into(),
                },
            ))
            .await
            .unwrap();
        refused(
            h.apps()
                .get_app(bearer(
                    &dev,
                    pb::GetAppRequest {
                        app_id: app.clone(),
                    },
                ))
                .await,
            Code::PermissionDenied,
            Reason::NotAMember.as_str_name(),
        );
        refused(
            h.apps()
                .get_app(bearer(
                    &dev,
                    pb::GetAppRequest {
                        app_id: uuid::Uuid::new_v4().to_string(),
                    },
                ))
                .await,
            Code::NotFound,
            Reason::AppNotFound.as_str_name(),
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_node_details_and_backups_are_padlocked() {
    let db = padlock_test_support::sqlite();
    let h = Harness::start(&db).await;
    let app = h.shop().await;
    let request = |env: pb::Environment| pb::GetNodeDetailsRequest {
        app_id: app.clone(),
        environment: env as i32,
    };
    let tina = h.token("tina", &[], None);
    let details = h
        .nodes()
        .get_node_details(bearer(&tina, request(Acceptance)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(details.node_name, "shop-acceptance");
    refused(
        h.nodes()
            .get_node_details(bearer(&tina, request(Production)))
            .await,
        Code::Unauthenticated,
        Reason::MfaRequired.as_str_name(),
    );
    h.nodes()
        .get_node_details(bearer(&h.stepped_up("tina"), request(Production)))
        .await
        .unwrap();

    let backup = pb::DownloadBackupRequest {
        app_id: app.clone(),
        environment: Production as i32,
    };
    refused(
        h.nodes()
            .download_backup(bearer(&tina, backup.clone()))
            .await,
        Code::Unauthenticated,
        Reason::MfaRequired.as_str_name(),
    );
    let mut stream = h
        .nodes()
        .download_backup(bearer(&h.stepped_up("tina"), backup))
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.data);
    }
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["environment"], "production");
    h.stop().await;
}
