//! TOTP enrollment and step-up through the real gRPC surface, on SQLite and
//! PostgreSQL. Time moves by the manual clock, never by sleeping.

mod common;

use padlock_proto::Reason;
use std::time::Duration;

use common::{Harness, START, assert_refused, bad_fields, base32_decode, bearer};
use padlock_proto::auth::v1::{
    FactorMethod, FactorState, GetFactorRequest, RefreshRequest, SignOutRequest,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_enrollment_steps_the_session_up() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        h.add_user("alice", &[]).await;
        let session = h.sign_in("alice").await;
        let before = h.claims(&session.access_token).await;
        assert_eq!(before.mfa_at, None, "{}", h.backend);
        assert_eq!(before.amr, ["pwd"]);

        let enrollment = h.start_totp(&session.access_token).await.unwrap();
        assert_eq!(
            enrollment.otpauth_uri,
            format!(
                "otpauth://totp/padlock:alice?secret={}&issuer=padlock",
                enrollment.secret
            )
        );
        assert!(enrollment.qr_png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(enrollment.qr_svg.starts_with("<svg") || enrollment.qr_svg.starts_with("<?xml"));
        let secret = base32_decode(&enrollment.secret);
        assert_eq!(secret.len(), 20, "160-bit secret");

        // Pending until confirmed: no step-up yet.
        let factor = h
            .two_factor()
            .get_factor(bearer(&session.access_token, GetFactorRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(factor.state(), FactorState::Pending);
        assert_refused(
            h.verify(&session.access_token, &h.code(&secret, 0)).await,
            Code::FailedPrecondition,
            Reason::FactorNotEnrolled.as_str_name(),
        );

        h.clock.advance(Duration::from_secs(7));
        let step_up = h
            .confirm(
                &session.access_token,
                &enrollment.enrollment_id,
                &h.code(&secret, 0),
            )
            .await
            .unwrap();
        let now = START + 7;
        assert_eq!(step_up.mfa_at.as_ref().unwrap().seconds, now);
        assert_eq!(
            step_up.mfa_expires_at.as_ref().unwrap().seconds,
            now + 28_800
        );
        assert_eq!(step_up.method(), FactorMethod::Totp);
        let claims = h.claims(&step_up.access_token).await;
        assert_eq!(claims.mfa_at, Some(now));
        assert_eq!(claims.mfa_method.as_deref(), Some("totp"));
        assert_eq!(claims.amr, ["pwd", "otp", "mfa"]);
        assert_eq!(claims.acr, "aal2");
        assert_eq!(claims.sid, before.sid);
        assert_eq!(claims.auth_time, START);

        let factor = h
            .two_factor()
            .get_factor(bearer(&step_up.access_token, GetFactorRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(factor.state(), FactorState::Active);
        assert_eq!(factor.method(), FactorMethod::Totp);
        assert_eq!(factor.mfa_at.unwrap().seconds, now);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_accepted_at_most_once() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, secret, _) = h.enrolled_user("alice").await;
        let token = session.access_token;
        // The confirmation used the current step: it and the one before are spent.
        assert_refused(
            h.verify(&token, &h.code(&secret, 0)).await,
            Code::Unauthenticated,
            Reason::CodeReused.as_str_name(),
        );
        assert_refused(
            h.verify(&token, &h.code(&secret, -1)).await,
            Code::Unauthenticated,
            Reason::CodeReused.as_str_name(),
        );
        // RFC 6238 §5.2: the next step is accepted, once.
        h.verify(&token, &h.code(&secret, 1)).await.unwrap();
        assert_refused(
            h.verify(&token, &h.code(&secret, 1)).await,
            Code::Unauthenticated,
            Reason::CodeReused.as_str_name(),
        );
        // Two steps ahead is outside the window: a wrong code.
        let status = assert_refused(
            h.verify(&token, &h.code(&secret, 2)).await,
            Code::Unauthenticated,
            Reason::CodeInvalid.as_str_name(),
        );
        let details = tonic_types::StatusExt::get_error_details(&status);
        assert_eq!(details.error_info().unwrap().metadata["attempts_left"], "4");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_factor_cannot_be_replaced_by_its_user() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, secret, step_up) = h.enrolled_user("alice").await;
        for token in [&session.access_token, &step_up.access_token] {
            let status = assert_refused(
                h.start_totp(token).await,
                Code::FailedPrecondition,
                Reason::FactorLocked.as_str_name(),
            );
            assert!(status.message().contains("support"), "{}", status.message());
        }
        // The old secret still works: nothing was replaced.
        h.clock.advance(Duration::from_secs(30));
        h.verify(&session.access_token, &h.code(&secret, 1))
            .await
            .unwrap();
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_enrollment_expires_and_can_be_restarted() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        h.add_user("alice", &[]).await;
        let session = h.sign_in("alice").await;
        let first = h.start_totp(&session.access_token).await.unwrap();
        let secret = base32_decode(&first.secret);
        h.clock.advance(Duration::from_secs(10 * 60));
        assert_refused(
            h.confirm(
                &session.access_token,
                &first.enrollment_id,
                &h.code(&secret, 0),
            )
            .await,
            Code::FailedPrecondition,
            Reason::EnrollmentExpired.as_str_name(),
        );
        let second = h.start_totp(&session.access_token).await.unwrap();
        assert_ne!(second.secret, first.secret);
        assert_refused(
            h.confirm(
                &session.access_token,
                &first.enrollment_id,
                &h.code(&secret, 0),
            )
            .await,
            Code::NotFound,
            Reason::EnrollmentNotFound.as_str_name(),
        );
        let secret = base32_decode(&second.secret);
        h.confirm(
            &session.access_token,
            &second.enrollment_id,
            &h.code(&secret, 0),
        )
        .await
        .unwrap();
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_enrollment_is_not_found() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        h.add_user("alice", &[]).await;
        h.add_user("mallory", &[]).await;
        let alice = h.sign_in("alice").await;
        let mallory = h.sign_in("mallory").await;
        let enrollment = h.start_totp(&alice.access_token).await.unwrap();
        let code = h.code(&base32_decode(&enrollment.secret), 0);
        assert_refused(
            h.confirm(&mallory.access_token, &enrollment.enrollment_id, &code)
                .await,
            Code::NotFound,
            Reason::EnrollmentNotFound.as_str_name(),
        );
        // Alice's enrollment is untouched.
        h.confirm(&alice.access_token, &enrollment.enrollment_id, &code)
            .await
            .unwrap();
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_carries_mfa_at_over_without_extending_it() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, _, step_up) = h.enrolled_user("alice").await;
        let mfa_at = step_up.mfa_at.unwrap().seconds;
        h.clock.advance(Duration::from_secs(3 * 60 * 60));
        let refreshed = h
            .sessions()
            .refresh(RefreshRequest {
                session_token: session.session_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(refreshed.mfa_at.unwrap().seconds, mfa_at);
        assert_eq!(refreshed.mfa_expires_at.unwrap().seconds, mfa_at + 28_800);
        let claims = h.claims(&refreshed.access_token).await;
        assert_eq!(claims.mfa_at, Some(mfa_at));
        assert_eq!(claims.iat, START + 3 * 60 * 60);
        assert_eq!(claims.amr, ["pwd", "otp", "mfa"]);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_lock_the_factor_doubling_and_success_resets() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, secret, _) = h.enrolled_user("alice").await;
        let mut token = session.access_token;
        let wrong = |h: &Harness| {
            let right = h.code(&secret, 0);
            // Any six digits that are not the current, previous or next code.
            let mut n: u32 = right.parse().unwrap();
            loop {
                n = (n + 1) % 1_000_000;
                let c = format!("{n:06}");
                if ![h.code(&secret, -1), right.clone(), h.code(&secret, 1)].contains(&c) {
                    return c;
                }
            }
        };
        for expected_lock in [900u64, 1800, 3600] {
            for left in (1..=4).rev() {
                let status = assert_refused(
                    h.verify(&token, &wrong(&h)).await,
                    Code::Unauthenticated,
                    Reason::CodeInvalid.as_str_name(),
                );
                let info = tonic_types::StatusExt::get_error_details(&status);
                assert_eq!(
                    info.error_info().unwrap().metadata["attempts_left"],
                    left.to_string()
                );
            }
            let status = assert_refused(
                h.verify(&token, &wrong(&h)).await,
                Code::ResourceExhausted,
                Reason::TooManyAttempts.as_str_name(),
            );
            let retry = tonic_types::StatusExt::get_error_details(&status)
                .retry_info()
                .unwrap()
                .retry_delay;
            assert_eq!(
                retry,
                Some(Duration::from_secs(expected_lock)),
                "{}",
                h.backend
            );
            // While locked even the right code is refused, and nothing is counted.
            h.clock.advance(Duration::from_secs(60));
            assert_refused(
                h.verify(&token, &h.code(&secret, 0)).await,
                Code::ResourceExhausted,
                Reason::TooManyAttempts.as_str_name(),
            );
            h.clock.advance(Duration::from_secs(expected_lock));
            // Access tokens live ten minutes; the session goes on.
            token = h
                .sessions()
                .refresh(RefreshRequest {
                    session_token: session.session_token.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .access_token;
        }
        // After the third lock ends, a right code succeeds and resets the doubling.
        h.verify(&token, &h.code(&secret, 0)).await.unwrap();
        for _ in 0..4 {
            assert_refused(
                h.verify(&token, &wrong(&h)).await,
                Code::Unauthenticated,
                Reason::CodeInvalid.as_str_name(),
            );
        }
        let status = assert_refused(
            h.verify(&token, &wrong(&h)).await,
            Code::ResourceExhausted,
            Reason::TooManyAttempts.as_str_name(),
        );
        let retry = tonic_types::StatusExt::get_error_details(&status)
            .retry_info()
            .unwrap()
            .retry_delay;
        assert_eq!(retry, Some(Duration::from_secs(900)));
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        h.add_user("alice", &[]).await;
        let session = h.sign_in("alice").await;
        let token = session.access_token.clone();
        let enrollment = h.start_totp(&token).await.unwrap();
        let audit_before = h.app.store().audit_events(None, 1000).await.unwrap().len();

        for code in [
            "",
            "12345",
            "1234567",
            "12a456",
            "١٢٣٤٥٦",
            " 123456",
            "123456\n",
        ] {
            let status = assert_refused(
                h.confirm(&token, &enrollment.enrollment_id, code).await,
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            );
            assert_eq!(bad_fields(&status), ["code"], "{code:?}");
        }
        let status = assert_refused(
            h.confirm(&token, "not-an-id", "123456").await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(bad_fields(&status), ["enrollment_id"]);
        assert_refused(
            h.confirm(&token, &uuid::Uuid::new_v4().to_string(), "123456")
                .await,
            Code::NotFound,
            Reason::EnrollmentNotFound.as_str_name(),
        );
        // 9 KiB: past the verifier's 8 KiB bound, inside HTTP/2's header limit.
        for bad in ["", "garbage", "a.b.c", &"x".repeat(9 * 1024)] {
            assert_refused(
                h.start_totp(bad).await,
                Code::Unauthenticated,
                Reason::TokenInvalid.as_str_name(),
            );
        }
        let unauthenticated = h.two_factor().get_factor(GetFactorRequest {}).await;
        assert_refused(
            unauthenticated,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );

        let long_name = "a".repeat(65);
        for (username, password, field) in [
            ("", "x", "username"),
            (long_name.as_str(), "x", "username"),
            ("al ice", "x", "username"),
            ("alice", "", "password"),
        ] {
            let status = assert_refused(
                h.sessions()
                    .sign_in(padlock_proto::auth::v1::SignInRequest {
                        username: username.into(),
                        password: password.into(),
                    })
                    .await,
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            );
            assert!(bad_fields(&status).contains(&field.to_owned()));
        }
        assert_refused(
            h.sessions()
                .refresh(RefreshRequest {
                    session_token: "x".repeat(500),
                })
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );

        // Nothing was written: no audit record, the enrollment still pending and unlocked.
        assert_eq!(
            h.app.store().audit_events(None, 1000).await.unwrap().len(),
            audit_before
        );
        let factor = h
            .app
            .store()
            .factor(&h.claims(&token).await.sub)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(factor.failed_attempts, 0);
        assert_eq!(factor.enrollment_id, enrollment.enrollment_id);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_ended_sessions_are_refused() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        h.add_user("alice", &[]).await;
        for (username, password) in [
            ("alice", "wrong password"),
            ("nobody", "correct horse battery staple"),
        ] {
            assert_refused(
                h.sessions()
                    .sign_in(padlock_proto::auth::v1::SignInRequest {
                        username: username.into(),
                        password: password.into(),
                    })
                    .await,
                Code::Unauthenticated,
                Reason::CredentialsInvalid.as_str_name(),
            );
        }
        let session = h.sign_in("alice").await;
        h.sessions()
            .sign_out(SignOutRequest {
                session_token: session.session_token.clone(),
            })
            .await
            .unwrap();
        assert_refused(
            h.sessions()
                .refresh(RefreshRequest {
                    session_token: session.session_token.clone(),
                })
                .await,
            Code::Unauthenticated,
            Reason::SessionInvalid.as_str_name(),
        );
        // Its access token, though unexpired, no longer works at auth.
        assert_refused(
            h.start_totp(&session.access_token).await,
            Code::Unauthenticated,
            Reason::SessionInvalid.as_str_name(),
        );

        // An access token past its lifetime (10 min + 60 s leeway) is refused.
        let other = h.sign_in("alice").await;
        h.clock.advance(Duration::from_secs(10 * 60 + 61));
        assert_refused(
            h.start_totp(&other.access_token).await,
            Code::Unauthenticated,
            Reason::TokenInvalid.as_str_name(),
        );
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_stepped_up_support_creates_users_and_never_privileged_ones() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        h.add_user("alice", &[]).await;
        let alice = h.sign_in("alice").await;
        let request = |username: &str, roles: &[&str]| padlock_proto::auth::v1::CreateUserRequest {
            username: username.into(),
            password: "a long enough password".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ticket: "CHG0012345".into(),
        };
        assert_refused(
            h.support()
                .create_user(bearer(&alice.access_token, request("eve", &[])))
                .await,
            Code::PermissionDenied,
            Reason::RoleRequired.as_str_name(),
        );
        let sam = h.support_user("sam").await;
        // Support may not mint support, nor an operator (who names who
        // reaches an app's production): only the server's CLI grants them.
        for role in ["support", "operator"] {
            assert_refused(
                h.support()
                    .create_user(bearer(&sam, request("mallory", &["auditor", role])))
                    .await,
                Code::PermissionDenied,
                Reason::RoleNotGrantable.as_str_name(),
            );
        }
        assert!(
            h.app
                .store()
                .user_by_username("mallory")
                .await
                .unwrap()
                .is_none()
        );
        let mut no_ticket = request("bob", &[]);
        no_ticket.ticket.clear();
        let status = assert_refused(
            h.support().create_user(bearer(&sam, no_ticket)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(bad_fields(&status), ["ticket"]);
        let user = h
            .support()
            .create_user(bearer(&sam, request("bob", &["auditor"])))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(user.roles, ["auditor"]);
        let created = h
            .app
            .store()
            .audit_events(Some(&user.id), 10)
            .await
            .unwrap();
        assert_eq!(created[0].kind, "user_created");
        assert_eq!(created[0].detail, "ticket=CHG0012345 roles=auditor");
        assert_refused(
            h.support()
                .create_user(bearer(&sam, request("bob", &[])))
                .await,
            Code::AlreadyExists,
            Reason::UsernameTaken.as_str_name(),
        );
        let mut weak = request("carol", &[]);
        weak.password = "short".into();
        let status = assert_refused(
            h.support().create_user(bearer(&sam, weak)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(bad_fields(&status), ["password"]);
        h.sessions()
            .sign_in(padlock_proto::auth::v1::SignInRequest {
                username: "bob".into(),
                password: "a long enough password".into(),
            })
            .await
            .unwrap();
        h.stop().await;
    }
}
