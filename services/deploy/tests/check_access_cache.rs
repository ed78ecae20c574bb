//! `CheckAccess` answers from caches (verified tokens, people's holdings)
//! and still gives the answers the database and the verifier would: a
//! token never outlives its `exp`, a key dropped from the JWKS drops the
//! tokens it signed, and a revoked permission counts at once on the replica
//! that revoked it and within the documented recheck on another one.

#![allow(clippy::unwrap_used)]

mod common;

use padlock_proto::Reason;
use std::time::Duration;

use common::*;
use padlock_proto::deploy::v1::{self as pb, Environment::*, NodePermission::*};
use tonic::Code;

/// CheckAccess(transport, `app`, production) as `token`: `Ok(reason)`,
/// empty when allowed.
async fn check(h: &Harness, token: &str, app: &str) -> Result<String, tonic::Status> {
    h.policy()
        .check_access(bearer(
            token,
            pb::CheckAccessRequest {
                action: pb::Action::TransportPackage as i32,
                app_id: app.into(),
                environment: Production as i32,
            },
        ))
        .await
        .map(|r| r.into_inner().reason)
}

async fn revoke(h: &Harness, app: &str, username: &str) {
    h.permissions()
        .revoke_node_permissions(bearer(
            &h.stepped_up("tina"),
            pb::RevokeNodePermissionsRequest {
                app_id: app.into(),
                environment: Production as i32,
                username: username.into(),
                permissions: vec![Transport as i32],
            },
        ))
        .await
        .unwrap();
}

/// `h`'s app with "dev" as a Deploy member holding TRANSPORT on production.
async fn shop_with_dev(h: &Harness) -> String {
    let app = h.shop().await;
    h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
    h.grant(&h.stepped_up("tina"), &app, Production, "dev", &[Transport])
        .await
        .unwrap();
    app
}

/// A second replica on `h`'s database, trusting the same auth keys.
async fn replica(h: &Harness, db: &padlock_test_support::TestDatabase) -> Harness {
    replica_with(h, db, |o| o).await
}

async fn replica_with(
    h: &Harness,
    db: &padlock_test_support::TestDatabase,
    configure: impl FnOnce(padlock_deploy::Options) -> padlock_deploy::Options,
) -> Harness {
    let other = Harness::start_with(db, configure).await;
    *other.jwks.0.lock().unwrap() = h.ring.lock().unwrap().jwks();
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_token_is_refused_after_its_exp_plus_the_leeway() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = shop_with_dev(&h).await;
        let token = h.stepped_up("dev");
        let exp = h.now() + 600;
        assert_eq!(check(&h, &token, &app).await.unwrap(), "", "{}", h.backend);
        h.clock.advance(Duration::from_secs(
            (exp + padlock_token::LEEWAY_SECS - h.now()) as u64,
        ));
        assert_eq!(check(&h, &token, &app).await.unwrap(), "", "{}", h.backend);
        h.clock.advance(Duration::from_secs(1));
        refused(
            check(&h, &token, &app).await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_is_judged_at_each_call_not_when_the_token_was_kept() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start_with(&db, |o| o).await;
        let app = shop_with_dev(&h).await;
        // Stepped up 7 h 59 min ago; the token itself is fresh.
        let token = h.token("dev", &[], Some(h.now() - EIGHT_HOURS + 60));
        assert_eq!(check(&h, &token, &app).await.unwrap(), "");
        h.clock.advance(Duration::from_secs(61));
        assert_eq!(
            check(&h, &token, &app).await.unwrap(),
            Reason::MfaExpired.as_str_name(),
            "{}",
            h.backend
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_dropped_from_the_jwks_drops_the_tokens_it_signed() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = shop_with_dev(&h).await;
        let old = h.stepped_up("dev");
        assert_eq!(check(&h, &old, &app).await.unwrap(), "");

        // Two rotations: the JWKS holds the two newest keys, not `old`'s.
        h.rotate_keys();
        h.rotate_keys();
        // Until deploy refreshes its keys, `old`'s key is still trusted.
        assert_eq!(check(&h, &old, &app).await.unwrap(), "");
        // A token with the newest key's kid makes deploy refresh.
        let new = h.stepped_up("dev");
        assert_eq!(check(&h, &new, &app).await.unwrap(), "", "{}", h.backend);
        refused(
            check(&h, &old, &app).await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_counts_at_once_on_the_replica_that_made_it() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = shop_with_dev(&h).await;
        let dev = h.stepped_up("dev");
        assert_eq!(check(&h, &dev, &app).await.unwrap(), "");
        revoke(&h, &app, "dev").await;
        assert_eq!(
            check(&h, &dev, &app).await.unwrap(),
            Reason::NodePermissionMissing.as_str_name(),
            "{}",
            h.backend
        );
        // Granting again counts at once too.
        h.grant(&h.stepped_up("tina"), &app, Production, "dev", &[Transport])
            .await
            .unwrap();
        assert_eq!(check(&h, &dev, &app).await.unwrap(), "");
        // So does leaving the team, which takes the permissions with it.
        h.apps()
            .remove_team_member(bearer(
                &h.stepped_up("tina"),
                pb::RemoveTeamMemberRequest {
                    app_id: app.clone(),
                    username: "dev".into(),
                },
            ))
            .await
            .unwrap();
        assert_eq!(
            check(&h, &dev, &app).await.unwrap(),
            Reason::NodePermissionMissing.as_str_name()
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_sees_a_revocation_within_the_recheck_and_acts_on_it_at_once() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let other = replica(&h, &db).await;
        let app = shop_with_dev(&h).await;
        let tina = h.stepped_up("tina");
        let package = h.upload(&tina, &app, "1.0.0", &mda(3, 100)).await.unwrap();
        let dev = h.stepped_up("dev");
        assert_eq!(check(&other, &dev, &app).await.unwrap(), "");
        revoke(&h, &app, "dev").await;

        // A padlocked action reads the database: refused at once (the
        // step-up rule is checked before the promotion order).
        refused(
            other.deploy(&dev, &package.id, Production).await,
            Code::PermissionDenied,
            Reason::NodePermissionMissing.as_str_name(),
        );

        // CheckAccess within the documented recheck (1 s by default).
        other
            .clock
            .advance(padlock_deploy::Options::DEFAULT_PERMISSION_RECHECK);
        assert_eq!(
            check(&other, &dev, &app).await.unwrap(),
            Reason::NodePermissionMissing.as_str_name(),
            "{}",
            h.backend
        );
        other.stop().await;
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_zero_recheck_another_replica_sees_a_revocation_at_once() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let other = replica_with(&h, &db, |mut o| {
            o.permission_recheck = Duration::ZERO;
            o
        })
        .await;
        let app = shop_with_dev(&h).await;
        let dev = h.stepped_up("dev");
        assert_eq!(check(&other, &dev, &app).await.unwrap(), "");
        assert_eq!(check(&other, &dev, &app).await.unwrap(), "");
        revoke(&h, &app, "dev").await;
        assert_eq!(
            check(&other, &dev, &app).await.unwrap(),
            Reason::NodePermissionMissing.as_str_name(),
            "{}",
            h.backend
        );
        other.stop().await;
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_app_is_not_found_even_after_a_known_one_was_kept() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = shop_with_dev(&h).await;
        let dev = h.stepped_up("dev");
        assert_eq!(check(&h, &dev, &app).await.unwrap(), "");
        let unknown = uuid::Uuid::new_v4().to_string();
        for _ in 0..2 {
            refused(
                check(&h, &dev, &unknown).await,
                Code::NotFound,
                Reason::AppNotFound.as_str_name(),
            );
        }
        h.stop().await;
    }
}
