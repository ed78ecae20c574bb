//! `CheckAccess` answers from a cache of verified tokens and still gives
//! the answers the verifier would: a token never outlives its `exp`, and a
//! key dropped from the JWKS drops the tokens it signed.

#![allow(clippy::unwrap_used)]

mod common;

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

/// `h`'s app with "dev" as a Deploy member holding TRANSPORT on production.
async fn shop_with_dev(h: &Harness) -> String {
    let app = h.shop().await;
    h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
    h.grant(&h.stepped_up("tina"), &app, Production, "dev", &[Transport])
        .await
        .unwrap();
    app
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
            "TOKEN_INVALID",
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
            "MFA_EXPIRED",
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
            "TOKEN_INVALID",
        );
        h.stop().await;
    }
}
