//! Support's tools, the only way a factor changes: reset (with a ticket),
//! unlock, look up, and read the audit trail. Users never act on their own
//! factor, support never on their own account.

mod common;

use padlock_proto::Reason;
use std::time::Duration;

use common::{Harness, assert_refused, bad_fields, base32_decode, bearer};
use padlock_proto::auth::v1::{
    FactorMethod, FactorState, GetUserFactorRequest, ListAuditEventsRequest, RefreshRequest,
    ResetFactorRequest, UnlockRequest,
};
use tonic::Code;

fn reset(username: &str, ticket: &str) -> ResetFactorRequest {
    ResetFactorRequest {
        username: username.into(),
        ticket: ticket.into(),
        reason: "Standard change: Reset Google authenticator".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_ends_second_factor_state_and_allows_a_new_enrollment() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (alice, _, step_up) = h.enrolled_user("alice").await;
        assert!(h.claims(&step_up.access_token).await.mfa_at.is_some());
        let sam = h.support_user("sam").await;

        assert_refused(
            h.start_totp(&alice.access_token).await,
            Code::FailedPrecondition,
            Reason::FactorLocked.as_str_name(),
        );
        h.support()
            .reset_factor(bearer(&sam, reset("alice", "CHG0012345")))
            .await
            .unwrap();

        // The session that had mfa_at refreshes without it now.
        let refreshed = h
            .sessions()
            .refresh(RefreshRequest {
                session_token: alice.session_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(refreshed.mfa_at, None, "{}", h.backend);
        let claims = h.claims(&refreshed.access_token).await;
        assert_eq!(
            (claims.mfa_at, claims.amr.clone()),
            (None, vec!["pwd".to_owned()])
        );

        // Alice may enroll again, with any method.
        let again = h.start_totp(&refreshed.access_token).await.unwrap();
        let secret = base32_decode(&again.secret);
        h.clock.advance(Duration::from_secs(30));
        h.confirm(
            &refreshed.access_token,
            &again.enrollment_id,
            &h.code(&secret, 0),
        )
        .await
        .unwrap();

        let events = h
            .support()
            .list_audit_events(bearer(
                &sam,
                ListAuditEventsRequest {
                    username: "alice".into(),
                    kind: "factor_reset".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .events;
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].actor.as_str(), events[0].subject.as_str()),
            ("sam", "alice")
        );
        assert!(
            events[0].detail.contains("ticket=CHG0012345"),
            "{}",
            events[0].detail
        );

        // Alice sees that support reset her factor, who and under which ticket.
        let factor = h
            .two_factor()
            .get_factor(bearer(
                &refreshed.access_token,
                padlock_proto::auth::v1::GetFactorRequest {},
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (factor.reset_by.as_str(), factor.reset_ticket.as_str()),
            ("sam", "CHG0012345"),
            "{}",
            h.backend
        );
        assert_eq!(
            factor.reset_at.map(|t| t.seconds),
            Some(events[0].at.unwrap().seconds)
        );
        h.stop().await;
    }
}

/// Every support call: (its name in refusals, the call with `token`).
async fn every_support_call(h: &Harness, token: &str) -> Vec<(&'static str, tonic::Status)> {
    let mut support = h.support();
    let mut refused = Vec::new();
    let mut push = |action: &'static str, result: Result<(), tonic::Status>| {
        if let Err(status) = result {
            refused.push((action, status));
        }
    };
    let create = padlock_proto::auth::v1::CreateUserRequest {
        username: "mallory".into(),
        password: "a long enough password".into(),
        roles: vec![],
        ticket: "CHG1".into(),
    };
    push(
        "support_create_user",
        support.create_user(bearer(token, create)).await.map(|_| ()),
    );
    push(
        "support_reset_factor",
        support
            .reset_factor(bearer(token, reset("alice", "CHG1")))
            .await
            .map(|_| ()),
    );
    let unlock = UnlockRequest {
        username: "alice".into(),
        ticket: "CHG1".into(),
    };
    push(
        "support_unlock",
        support.unlock(bearer(token, unlock)).await.map(|_| ()),
    );
    let lookup = GetUserFactorRequest {
        username: "alice".into(),
    };
    push(
        "support_get_user_factor",
        support
            .get_user_factor(bearer(token, lookup))
            .await
            .map(|_| ()),
    );
    push(
        "support_list_audit_events",
        support
            .list_audit_events(bearer(token, ListAuditEventsRequest::default()))
            .await
            .map(|_| ()),
    );
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_needs_a_second_factor_from_the_last_hour_for_every_call() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (_, _, alice_step_up) = h.enrolled_user("alice").await;
        h.add_user("sam", &["support"]).await;
        let password_only = h.sign_in("sam").await.access_token;
        let refused = every_support_call(&h, &password_only).await;
        assert_eq!(refused.len(), 5, "{}: every call refused", h.backend);
        for (action, status) in &refused {
            assert_eq!(status.code(), Code::Unauthenticated, "{action}: {status:?}");
            use tonic_types::StatusExt as _;
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.reason, Reason::MfaRequired.as_str_name(), "{action}");
            assert_eq!(info.metadata["max_age"], "3600");
            assert_eq!(info.metadata["action"], *action);
        }
        // Nothing changed: alice keeps her factor, mallory does not exist.
        let alice = h
            .app
            .store()
            .user_by_username("alice")
            .await
            .unwrap()
            .unwrap();
        assert!(h.app.store().factor(&alice.id).await.unwrap().is_some());
        assert!(
            h.app
                .store()
                .user_by_username("mallory")
                .await
                .unwrap()
                .is_none()
        );
        assert!(h.claims(&alice_step_up.access_token).await.mfa_at.is_some());

        // Stepped up, support works; an hour and a second later it does not.
        let session = h.sign_in("sam").await;
        let sam = h.enroll_totp(&session).await.1.access_token;
        let lookup = || GetUserFactorRequest {
            username: "alice".into(),
        };
        h.support()
            .get_user_factor(bearer(&sam, lookup()))
            .await
            .unwrap();
        h.clock.advance(Duration::from_secs(3601));
        // A refreshed token carries the session's mfa_at, an hour old now.
        let sam = h
            .sessions()
            .refresh(RefreshRequest {
                session_token: session.session_token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let expired = h.support().get_user_factor(bearer(&sam, lookup())).await;
        assert_refused(
            expired,
            Code::Unauthenticated,
            Reason::MfaExpired.as_str_name(),
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_checks_roles_tickets_and_never_acts_on_itself() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (alice, _, _) = h.enrolled_user("alice").await;
        let sam = h.support_user("sam").await;

        assert_refused(
            h.support()
                .reset_factor(bearer(&alice.access_token, reset("alice", "CHG1")))
                .await,
            Code::PermissionDenied,
            Reason::RoleRequired.as_str_name(),
        );
        assert_refused(
            h.support()
                .reset_factor(bearer(&sam, reset("sam", "CHG1")))
                .await,
            Code::PermissionDenied,
            Reason::SelfServiceForbidden.as_str_name(),
        );
        assert_refused(
            h.support()
                .reset_factor(bearer(&sam, reset("nobody", "CHG1")))
                .await,
            Code::NotFound,
            Reason::UserNotFound.as_str_name(),
        );
        let status = assert_refused(
            h.support()
                .reset_factor(bearer(&sam, reset("alice", "")))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(bad_fields(&status), ["ticket"]);
        let mut no_reason = reset("alice", "CHG1");
        no_reason.reason = " ".into();
        let status = assert_refused(
            h.support().reset_factor(bearer(&sam, no_reason)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(bad_fields(&status), ["reason"]);

        // Nothing was reset by any of those.
        let seen = h
            .support()
            .get_user_factor(bearer(
                &sam,
                GetUserFactorRequest {
                    username: "alice".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let factor = seen.factor.unwrap();
        assert_eq!(
            (factor.method(), factor.state()),
            (FactorMethod::Totp, FactorState::Active),
            "{}",
            h.backend
        );
        assert_eq!(seen.user.unwrap().username, "alice");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_lifts_a_lockout() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (alice, secret, _) = h.enrolled_user("alice").await;
        let right = [h.code(&secret, -1), h.code(&secret, 0), h.code(&secret, 1)];
        let wrong: Vec<String> = (0..)
            .map(|n| format!("{n:06}"))
            .filter(|c| !right.contains(c))
            .take(5)
            .collect();
        for code in &wrong {
            let _ = h.verify(&alice.access_token, code).await;
        }
        assert_refused(
            h.verify(&alice.access_token, &h.code(&secret, 1)).await,
            Code::ResourceExhausted,
            Reason::TooManyAttempts.as_str_name(),
        );
        let sam = h.support_user("sam").await;
        h.support()
            .unlock(bearer(
                &sam,
                UnlockRequest {
                    username: "alice".into(),
                    ticket: "INC-42".into(),
                },
            ))
            .await
            .unwrap();
        h.verify(&alice.access_token, &h.code(&secret, 1))
            .await
            .unwrap();
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_pages_newest_first() {
    let db = padlock_test_support::sqlite();
    let h = Harness::start(&db).await;
    h.add_user("alice", &[]).await;
    for _ in 0..5 {
        h.sign_in("alice").await;
    }
    let sam = h.support_user("sam").await;
    let page = |token: String| ListAuditEventsRequest {
        username: "alice".into(),
        kind: "sign_in".into(),
        page_size: 2,
        page_token: token,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let response = h
            .support()
            .list_audit_events(bearer(&sam, page(token)))
            .await
            .unwrap()
            .into_inner();
        seen.extend(response.events.iter().map(|e| e.id));
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    let status = assert_refused(
        h.support()
            .list_audit_events(bearer(
                &sam,
                ListAuditEventsRequest {
                    page_token: "x".into(),
                    page_size: 5000,
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_fields(&status), ["page_size", "page_token"]);
    h.stop().await;
}
