//! Password guessing on `SignIn` is throttled per username and per client
//! address, the counters live in the database (both backends, shared by
//! replicas), a throttled attempt checks no password and writes nothing,
//! and none of it touches the second-factor lockout. The client address
//! comes from `padlock-client-ip`, which these servers believe from
//! 127.0.0.1 (`--trusted-proxies`), as auth believes the gateway.

mod common;

use padlock_proto::Reason;
use std::time::Duration;

use common::{Harness, PASSWORD, assert_refused, bearer, reason};
use padlock_auth::Options;
use padlock_auth::throttle::{PER_ADDRESS, PER_USER, TrustedProxies};
use padlock_proto::auth::v1::{GetFactorRequest, SignInRequest, SignInResponse};
use padlock_runtime::metadata::CLIENT_IP;
use padlock_test_support::{TestDatabase, databases};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const WRONG: &str = "not the password at all";

fn behind_gateway(mut options: Options) -> Options {
    options.settings.trusted_proxies = TrustedProxies::parse("127.0.0.1").expect("an address");
    options
}

async fn start(db: &TestDatabase) -> Harness {
    Harness::start_with(db, behind_gateway).await
}

/// `SignIn` as the gateway relays it for a browser at `from`.
async fn sign_in_from(
    h: &Harness,
    from: &str,
    username: &str,
    password: &str,
) -> Result<SignInResponse, Status> {
    let mut request = tonic::Request::new(SignInRequest {
        username: username.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert(CLIENT_IP, from.parse().expect("ASCII"));
    h.sessions().sign_in(request).await.map(|r| r.into_inner())
}

#[track_caller]
fn assert_wrong(result: Result<SignInResponse, Status>) {
    assert_refused(
        result,
        Code::Unauthenticated,
        Reason::CredentialsInvalid.as_str_name(),
    );
}

/// Throttled, with `RetryInfo` saying how long to wait.
#[track_caller]
fn assert_throttled(result: Result<SignInResponse, Status>, wait_secs: u64) {
    let status = assert_refused(
        result,
        Code::ResourceExhausted,
        Reason::SignInThrottled.as_str_name(),
    );
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"));
    assert_eq!(delay, Duration::from_secs(wait_secs), "{status:?}");
}

/// How many audit records about sign-ins the database holds.
async fn sign_in_records(h: &Harness) -> usize {
    h.app
        .store()
        .audit_events(None, 10_000)
        .await
        .expect("the audit trail")
        .iter()
        .filter(|r| r.kind == "sign_in")
        .count()
}

#[tokio::test]
async fn five_wrong_passwords_then_each_attempt_waits_twice_as_long() {
    assert_eq!((PER_USER.free, PER_USER.first_delay.as_secs()), (5, 1));
    for db in databases().await {
        let h = start(&db).await;
        h.add_user("alice", &[]).await;
        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await);
        }
        // Even the right password waits now, from any new address.
        assert_throttled(sign_in_from(&h, "198.51.100.1", "alice", PASSWORD).await, 1);
        assert_throttled(sign_in_from(&h, "203.0.113.50", "alice", PASSWORD).await, 1);
        for wait in [1, 2, 4, 8] {
            h.clock.advance(Duration::from_secs(wait));
            assert_wrong(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await);
            assert_throttled(
                sign_in_from(&h, "198.51.100.1", "alice", PASSWORD).await,
                wait * 2,
            );
        }
        // Waiting out the last delay lets the right password in.
        h.clock.advance(Duration::from_secs(16));
        sign_in_from(&h, "198.51.100.2", "alice", PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", db.backend));
        h.stop().await;
    }
}

#[tokio::test]
async fn unknown_usernames_are_throttled_exactly_like_real_ones() {
    for db in databases().await {
        let h = start(&db).await;
        h.add_user("alice", &[]).await;
        for username in ["alice", "nobody"] {
            for _ in 0..5 {
                assert_wrong(sign_in_from(&h, "198.51.100.1", username, WRONG).await);
            }
            assert_throttled(sign_in_from(&h, "198.51.100.1", username, WRONG).await, 1);
        }
        h.stop().await;
    }
}

#[tokio::test]
async fn a_throttled_attempt_checks_no_password_and_writes_nothing() {
    for db in databases().await {
        let h = start(&db).await;
        h.add_user("alice", &[]).await;
        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await);
        }
        // Every password check leaves an audit record, right or wrong.
        assert_eq!(sign_in_records(&h).await, 5, "{}", db.backend);
        for password in [WRONG, PASSWORD, WRONG] {
            assert_throttled(sign_in_from(&h, "198.51.100.1", "alice", password).await, 1);
        }
        assert_eq!(sign_in_records(&h).await, 5, "{}", db.backend);
        // Nor did they count: one second on, one attempt passes, as after
        // the fifth failure.
        h.clock.advance(Duration::from_secs(1));
        assert_wrong(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await);
        assert_throttled(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await, 2);
        h.stop().await;
    }
}

#[tokio::test]
async fn a_success_resets_the_username_and_neither_counts_nor_clears_the_address() {
    for db in databases().await {
        let h = start(&db).await;
        h.add_user("alice", &[]).await;
        h.add_user("bob", &[]).await;
        let from = "198.51.100.9";
        for _ in 0..4 {
            assert_wrong(sign_in_from(&h, from, "alice", WRONG).await);
        }
        sign_in_from(&h, from, "alice", PASSWORD).await.unwrap();
        // Her count starts over: five more before any wait.
        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, from, "alice", WRONG).await);
        }
        assert_throttled(sign_in_from(&h, from, "alice", WRONG).await, 1);

        // The address counts wrong passwords only (9 so far): a success
        // neither clears them nor counts as one.
        for i in 9..PER_ADDRESS.free - 1 {
            assert_wrong(sign_in_from(&h, from, &format!("user{i}"), WRONG).await);
        }
        sign_in_from(&h, from, "bob", PASSWORD).await.unwrap();
        assert_wrong(sign_in_from(&h, from, "carol", WRONG).await);
        assert_throttled(sign_in_from(&h, from, "bob", PASSWORD).await, 1);
        h.stop().await;
    }
}

#[tokio::test]
async fn one_address_guessing_over_many_usernames_is_throttled() {
    for db in databases().await {
        let h = start(&db).await;
        h.add_user("alice", &[]).await;
        let spray = "203.0.113.7";
        for i in 0..PER_ADDRESS.free {
            assert_wrong(sign_in_from(&h, spray, &format!("user{i}"), WRONG).await);
        }
        assert_throttled(sign_in_from(&h, spray, "alice", PASSWORD).await, 1);
        // IPv6 counts by /64: another address in it is the same client.
        for i in 0..PER_ADDRESS.free {
            let from = format!("2001:db8:7:7::{:x}", i + 1);
            assert_wrong(sign_in_from(&h, &from, &format!("v6user{i}"), WRONG).await);
        }
        assert_throttled(
            sign_in_from(&h, "2001:db8:7:7:ffff::1", "alice", PASSWORD).await,
            1,
        );
        // Alice, elsewhere, is not slowed at all.
        sign_in_from(&h, "198.51.100.1", "alice", PASSWORD)
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", db.backend));
        h.stop().await;
    }
}

#[tokio::test]
async fn many_people_behind_one_address_sign_in_at_once() {
    for db in databases().await {
        let h = start(&db).await;
        let people: Vec<String> = (0..PER_ADDRESS.free + 10)
            .map(|i| format!("colleague{i}"))
            .collect();
        for name in &people {
            h.add_user(name, &[]).await;
        }
        let office = "198.51.100.200";
        let calls = people
            .iter()
            .map(|name| sign_in_from(&h, office, name, PASSWORD));
        let results = futures::future::join_all(calls).await;
        let refused: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(reason))
            .collect();
        assert!(refused.is_empty(), "{}: {refused:?}", db.backend);
        h.stop().await;
    }
}

#[tokio::test]
async fn an_address_the_user_signed_in_from_is_not_slowed_by_guesses_from_elsewhere() {
    for db in databases().await {
        let h = start(&db).await;
        h.add_user("dave", &[]).await;
        let home = "198.51.100.20";
        sign_in_from(&h, home, "dave", PASSWORD).await.unwrap();
        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, "203.0.113.66", "dave", WRONG).await);
        }
        assert_throttled(sign_in_from(&h, "203.0.113.66", "dave", PASSWORD).await, 1);
        // From a new address he waits like the guesser ...
        assert_throttled(sign_in_from(&h, "192.0.2.1", "dave", PASSWORD).await, 1);
        // ... from home he gets in at once, every time.
        for _ in 0..3 {
            sign_in_from(&h, home, "dave", PASSWORD)
                .await
                .unwrap_or_else(|s| panic!("{}: {s:?}", db.backend));
        }
        // His home bucket is his own: his typos there are throttled too.
        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, home, "dave", WRONG).await);
        }
        assert_throttled(sign_in_from(&h, home, "dave", PASSWORD).await, 1);
        h.stop().await;
    }
}

#[tokio::test]
async fn guessing_passwords_leaves_the_second_factor_alone() {
    for db in databases().await {
        let h = start(&db).await;
        let (session, secret, step_up) = h.enrolled_user("erin").await;
        // One wrong code of her own: four left.
        let valid = [h.code(&secret, -1), h.code(&secret, 0), h.code(&secret, 1)];
        let wrong_code = ["000000", "111111", "222222", "333333"]
            .into_iter()
            .find(|c| !valid.iter().any(|v| v == c))
            .unwrap();
        let err = h.verify(&step_up.access_token, wrong_code).await;
        assert_refused(
            err,
            Code::Unauthenticated,
            Reason::CodeInvalid.as_str_name(),
        );

        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, "203.0.113.66", "erin", WRONG).await);
        }
        for _ in 0..20 {
            assert_throttled(sign_in_from(&h, "203.0.113.66", "erin", WRONG).await, 1);
        }
        let factor = h
            .two_factor()
            .get_factor(bearer(&session.access_token, GetFactorRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert!(!factor.locked, "{}: {factor:?}", db.backend);
        assert_eq!(factor.attempts_left, 4, "{}", db.backend);
        // Her session steps up as before; the next step's code is unused.
        h.verify(&step_up.access_token, &h.code(&secret, 1))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", db.backend));
        h.stop().await;
    }
}

#[tokio::test]
async fn the_client_address_is_believed_only_from_trusted_proxies() {
    for db in databases().await {
        // No --trusted-proxies: every attempt counts against 127.0.0.1,
        // whatever address it names.
        let h = Harness::start(&db).await;
        for i in 0..PER_ADDRESS.free {
            let named = format!("198.51.100.{}", i + 1);
            assert_wrong(sign_in_from(&h, &named, &format!("user{i}"), WRONG).await);
        }
        assert_throttled(sign_in_from(&h, "192.0.2.200", "user0", WRONG).await, 1);
        h.stop().await;
    }
}

#[tokio::test]
async fn the_limits_hold_across_two_replicas_on_one_database() {
    for db in databases().await {
        let a = start(&db).await;
        let b = start(&db).await;
        a.add_user("frank", &[]).await;
        // One after another, alternating: five in total, then both wait.
        for i in 0..5 {
            let h = if i % 2 == 0 { &a } else { &b };
            assert_wrong(sign_in_from(h, "203.0.113.1", "frank", WRONG).await);
        }
        for h in [&a, &b] {
            assert_throttled(sign_in_from(h, "203.0.113.1", "frank", PASSWORD).await, 1);
        }

        // All at once, from many addresses, on both replicas: exactly five
        // reach the password check.
        a.add_user("grace", &[]).await;
        let calls = (0..12).map(|i| {
            let h = if i % 2 == 0 { &a } else { &b };
            let from = format!("192.0.2.{}", i + 1);
            async move { sign_in_from(h, &from, "grace", WRONG).await }
        });
        let results = futures::future::join_all(calls).await;
        let reasons: Vec<String> = results
            .iter()
            .map(|r| reason(r.as_ref().expect_err("a wrong password went through")))
            .collect();
        let checked = reasons
            .iter()
            .filter(|r| *r == Reason::CredentialsInvalid.as_str_name())
            .count();
        let throttled = reasons
            .iter()
            .filter(|r| *r == Reason::SignInThrottled.as_str_name())
            .count();
        assert_eq!((checked, throttled), (5, 7), "{}: {reasons:?}", db.backend);
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn counts_are_forgotten_a_window_after_the_last_wait() {
    for db in databases().await {
        let h = start(&db).await;
        h.add_user("alice", &[]).await;
        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await);
        }
        // The wait ends after 1 s; the count is forgotten 15 minutes later.
        h.clock
            .advance(PER_USER.first_delay + PER_USER.forget_after - Duration::from_secs(1));
        assert_wrong(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await);
        assert_throttled(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await, 2);
        h.clock
            .advance(Duration::from_secs(2) + PER_USER.forget_after);
        for _ in 0..5 {
            assert_wrong(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await);
        }
        assert_throttled(sign_in_from(&h, "198.51.100.1", "alice", WRONG).await, 1);
        h.stop().await;
    }
}
