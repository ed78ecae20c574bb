//! Single use and lockout under concurrent requests: the guarantees live in
//! one conditional UPDATE each, so they hold however requests interleave,
//! on SQLite and on PostgreSQL.

mod common;

use common::Harness;
use futures::future::join_all;
use padlock_proto::Reason;
use tonic::Code;

const CONCURRENT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_code_sent_64_times_at_once_succeeds_once() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, secret, _) = h.enrolled_user("alice").await;
        let code = h.code(&secret, 1); // the confirmation spent the current step
        let results =
            join_all((0..CONCURRENT).map(|_| h.verify(&session.access_token, &code))).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{}: exactly one of {CONCURRENT} wins", h.backend);
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
            assert_eq!(common::reason(refused), Reason::CodeReused.as_str_name());
        }
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_codes_sent_64_at_once_are_counted_at_most_five_times() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, secret, _) = h.enrolled_user("alice").await;
        let spent = [h.code(&secret, -1), h.code(&secret, 0), h.code(&secret, 1)];
        let wrong: Vec<String> = (0..1_000_000u32)
            .map(|n| format!("{n:06}"))
            .filter(|c| !spent.contains(c))
            .take(CONCURRENT)
            .collect();
        let audit_before = h
            .app
            .store()
            .audit_events(None, 10_000)
            .await
            .unwrap()
            .len();
        let results = join_all(
            wrong
                .iter()
                .map(|code| h.verify(&session.access_token, code)),
        )
        .await;

        let reasons: Vec<String> = results
            .iter()
            .map(|r| common::reason(r.as_ref().expect_err("every code is wrong")))
            .collect();
        let invalid = reasons
            .iter()
            .filter(|r| *r == Reason::CodeInvalid.as_str_name())
            .count();
        let locked = reasons
            .iter()
            .filter(|r| *r == Reason::TooManyAttempts.as_str_name())
            .count();
        assert_eq!(invalid + locked, CONCURRENT, "{}: {reasons:?}", h.backend);
        // The 5th counted failure answers with the lockout itself.
        assert_eq!(invalid, 4, "{}", h.backend);

        // Exactly five failures were counted and audited, then the lock held.
        let factor = h
            .app
            .store()
            .factor(&h.claims(&session.access_token).await.sub)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(factor.failed_attempts, 5, "{}", h.backend);
        assert!(
            factor
                .locked_until(padlock_runtime::Clock::unix(&h.clock))
                .is_some()
        );
        let events = h.app.store().audit_events(None, 10_000).await.unwrap();
        let new_events = &events[..events.len() - audit_before];
        let counted = new_events
            .iter()
            .filter(|e| e.kind == "verify" && e.outcome == "refused")
            .count();
        let lockouts = new_events.iter().filter(|e| e.kind == "lockout").count();
        assert_eq!((counted, lockouts), (5, 1), "{}", h.backend);
        h.stop().await;
    }
}
