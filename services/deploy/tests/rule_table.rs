//! The rule table (`padlock_deploy::policy::rules`) against the running service:
//! every RPC whose rule asks for a fresh second factor refuses the app's
//! own Technical Contact (who holds everything else) when their token has
//! none, and changes nothing. A padlocked method without a probe here
//! fails the test, so a new padlocked RPC gets one.

mod common;

use common::{Harness, bearer, mda};
use padlock_deploy::policy::rules::{RULES, SecondFactor};
use padlock_proto::Reason;
use padlock_proto::deploy::v1::{self as pb, Environment::*, NodePermission::*};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Calls `method` on production of `app_id` (with `package_id`) as the
/// bearer of `token`; `None` for a method without a probe.
async fn call(
    h: &Harness,
    method: &str,
    token: &str,
    app_id: &str,
    package_id: &str,
) -> Option<Result<(), Status>> {
    let name = method.rsplit('/').next().unwrap_or_default();
    let production = Production as i32;
    let result = match name {
        "CreateApp" => h
            .apps()
            .create_app(bearer(
                token,
                pb::CreateAppRequest {
                    name: "Another".into(),
                    technical_contact: "tina".into(),
                },
            ))
            .await
            .map(|_| ()),
        "AddTeamMember" => h
            .apps()
            .add_team_member(bearer(
                token,
                pb::AddTeamMemberRequest {
                    app_id: app_id.into(),
                    username: "mallory".into(),
                    role: pb::TeamRole::TechnicalContact as i32,
                },
            ))
            .await
            .map(|_| ()),
        "RemoveTeamMember" => h
            .apps()
            .remove_team_member(bearer(
                token,
                pb::RemoveTeamMemberRequest {
                    app_id: app_id.into(),
                    username: "dev".into(),
                },
            ))
            .await
            .map(|_| ()),
        "DeployPackage" => h.deploy(token, package_id, Production).await.map(|_| ()),
        "TransportPackage" => h
            .transport(token, package_id, Acceptance, Production)
            .await
            .map(|_| ()),
        "GetNodeDetails" => h
            .nodes()
            .get_node_details(bearer(
                token,
                pb::GetNodeDetailsRequest {
                    app_id: app_id.into(),
                    environment: production,
                },
            ))
            .await
            .map(|_| ()),
        "DownloadBackup" => h
            .nodes()
            .download_backup(bearer(
                token,
                pb::DownloadBackupRequest {
                    app_id: app_id.into(),
                    environment: production,
                },
            ))
            .await
            .map(|_| ()),
        "GrantNodePermissions" => h
            .grant(token, app_id, Production, "dev", &[Transport])
            .await
            .map(|_| ()),
        "RevokeNodePermissions" => h
            .permissions()
            .revoke_node_permissions(bearer(
                token,
                pb::RevokeNodePermissionsRequest {
                    app_id: app_id.into(),
                    environment: production,
                    username: "dev".into(),
                    permissions: vec![Operate as i32],
                },
            ))
            .await
            .map(|_| ()),
        _ => return None,
    };
    Some(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_padlocked_rpc_refuses_a_token_without_a_second_factor() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.stepped_up("tina");
        h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
        h.grant(&tina, &app, Production, "dev", &[Operate])
            .await
            .unwrap();
        let package = h.upload(&tina, &app, "1.0.0", &mda(9, 64)).await.unwrap();
        for env in [Test, Acceptance] {
            h.deploy(&tina, &package.id, env).await.unwrap();
        }
        let records = h.app.store().audit_events(None, 1000).await.unwrap().len();

        // tina is the Technical Contact, also an operator: she holds
        // everything but a second factor.
        let password_only = h.token("tina", &["operator"], None);
        let padlocked: Vec<_> = RULES
            .iter()
            .filter(|r| r.second_factor != SecondFactor::No)
            .collect();
        assert_eq!(padlocked.len(), 9, "{padlocked:?}");
        for rule in padlocked {
            let result = call(&h, rule.method, &password_only, &app, &package.id)
                .await
                .unwrap_or_else(|| panic!("no probe for the padlocked {}", rule.method));
            let status = result.expect_err(rule.method);
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{}: {status:?}",
                rule.method
            );
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(
                info.reason,
                Reason::MfaRequired.as_str_name(),
                "{} on {}",
                rule.method,
                h.backend
            );
        }

        // Nothing changed; only refusals were recorded.
        assert_eq!(h.app.store().apps_of("tina").await.unwrap().len(), 1);
        let members = h.app.store().members(&app).await.unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
        assert_eq!(names, ["dev", "tina"], "{}", h.backend);
        let grants = h.app.store().grants(&app, Some("dev")).await.unwrap();
        assert_eq!(grants.len(), 1, "{}: {grants:?}", h.backend);
        assert_eq!(h.deployments(&tina, &app).await.len(), 2);
        let after = h.app.store().audit_events(None, 1000).await.unwrap();
        assert!(
            after[..after.len() - records]
                .iter()
                .all(|r| r.outcome == "refused"),
            "{}",
            h.backend
        );
        h.stop().await;
    }
}
