//! The lockout (docs/design.md "Lockout"), on SQLite and PostgreSQL, straight
//! against the store's code checks: a try is taken in the database before
//! a code is compared, so at most five wrong codes are compared per lock
//! period however the codes arrive (one after another, in one batch, in
//! parallel through two "replicas": two stores on one database, each with
//! its own code-check task), for TOTP `Verify`, SMS `Verify` and
//! `ConfirmEnrollment` of either. Time moves by the checks' `now`.

mod common;

use std::sync::Arc;

use common::store::{
    NOW, T, code, confirm, enrolled, enrollment_of, keys, one, pending, send_sms_code,
    sms_enrolled, sms_pending, stores, summary, verify, wrong_code,
};
use padlock_auth::sealing::DataKeys;
use padlock_auth::store::{CodeCheck, CodeChecks, Method, Store};
use padlock_test_support::TestDatabase;

/// docs/design.md "Lockout": five tries, then 15 minutes, doubling up to 24 h.
const TRIES: usize = 5;
const FIRST_LOCK: i64 = 15 * 60;
const MAX_LOCK: i64 = 24 * 3600;

/// The answers to `n` wrong codes from `first` on, one after another.
async fn wrong_codes(
    store: &Store,
    keys: &Arc<DataKeys>,
    id: &str,
    first: usize,
    n: usize,
    now: i64,
) -> Vec<String> {
    let mut answers = Vec::new();
    for k in first..first + n {
        answers.push(one(store, verify(keys, id, &wrong_code(k), now)).await);
    }
    answers
}

/// `(failed_attempts, locked_until)` of `id`'s factor.
async fn tries(store: &Store, id: &str) -> (u32, Option<i64>) {
    let f = store.factor(id).await.expect("read").expect("a factor");
    (f.failed_attempts, f.locked_until)
}

/// How many audit records about `id` are of `kind` and say `detail_prefix`.
async fn audited(store: &Store, id: &str, kind: &str, detail_prefix: &str) -> usize {
    store
        .audit_events(Some(id), 10_000)
        .await
        .expect("read the audit trail")
        .iter()
        .filter(|e| e.kind == kind && e.detail.starts_with(detail_prefix))
        .count()
}

#[tokio::test]
async fn the_fifth_wrong_code_locks_and_then_even_the_right_code_is_not_compared() {
    let keys = keys();
    for (db, store) in stores().await {
        enrolled(&store, &keys, "u1").await;
        let answers = wrong_codes(&store, &keys, "u1", 0, TRIES, NOW + 1).await;
        let until = NOW + 1 + FIRST_LOCK;
        assert_eq!(
            answers,
            [
                "wrong, 4 left",
                "wrong, 3 left",
                "wrong, 2 left",
                "wrong, 1 left",
                &format!("wrong, locked until {until}")
            ],
            "{}",
            db.backend
        );
        let right = one(&store, verify(&keys, "u1", &code(T + 1), NOW + 2)).await;
        assert_eq!(right, format!("locked until {until}"));
        assert_eq!(tries(&store, "u1").await, (5, Some(until)));
        assert_eq!(audited(&store, "u1", "verify", "wrong code").await, 5);
        assert_eq!(
            audited(&store, "u1", "lockout", "locked for 900 s").await,
            1
        );
        // The right code was never compared, so it is still unused.
        let later = one(&store, verify(&keys, "u1", &code(T + 31), until)).await;
        assert_eq!(later, "stepped up");
    }
}

#[tokio::test]
async fn a_right_fifth_code_is_accepted_and_a_success_resets_the_count() {
    let keys = keys();
    for (db, store) in stores().await {
        enrolled(&store, &keys, "u1").await;
        wrong_codes(&store, &keys, "u1", 0, TRIES - 1, NOW + 1).await;
        // The fifth try sets the lock as it is taken; the right code clears it.
        let right = one(&store, verify(&keys, "u1", &code(T + 1), NOW + 2)).await;
        assert_eq!(right, "stepped up", "{}", db.backend);
        assert_eq!(tries(&store, "u1").await, (0, None));
        let factor = store.factor("u1").await.unwrap().unwrap();
        assert_eq!(factor.last_step, Some(T + 1));
        // Five fresh tries.
        let answers = wrong_codes(&store, &keys, "u1", 10, TRIES, NOW + 3).await;
        assert_eq!(answers[3], "wrong, 1 left");
        assert_eq!(
            answers[4],
            format!("wrong, locked until {}", NOW + 3 + FIRST_LOCK)
        );
    }
}

#[tokio::test]
async fn an_ended_lock_restarts_the_count_and_locks_double_up_to_a_day() {
    let keys = keys();
    for (db, store) in stores().await {
        enrolled(&store, &keys, "u1").await;
        let mut now = NOW + 1;
        let mut lock = FIRST_LOCK;
        for round in 0..9 {
            let answers = wrong_codes(&store, &keys, "u1", round * TRIES, TRIES, now).await;
            assert_eq!(
                answers[0], "wrong, 4 left",
                "{}: an ended lock restarts the count",
                db.backend
            );
            assert_eq!(answers[4], format!("wrong, locked until {}", now + lock));
            let meanwhile = one(&store, verify(&keys, "u1", &wrong_code(99), now + lock - 1)).await;
            assert_eq!(meanwhile, format!("locked until {}", now + lock));
            now += lock;
            lock = (lock * 2).min(MAX_LOCK);
        }
        assert_eq!(lock, MAX_LOCK, "the doubling reached its cap");
        // A success clears the count and the doubling.
        let right = one(&store, verify(&keys, "u1", &code(now / 30), now)).await;
        assert_eq!(right, "stepped up");
        let answers = wrong_codes(&store, &keys, "u1", 200, TRIES, now + 1).await;
        assert_eq!(
            answers[4],
            format!("wrong, locked until {}", now + 1 + FIRST_LOCK)
        );
    }
}

#[tokio::test]
async fn a_reused_code_or_one_that_cannot_be_compared_gives_its_try_back() {
    let keys = keys();
    for (db, store) in stores().await {
        enrolled(&store, &keys, "u1").await;
        wrong_codes(&store, &keys, "u1", 0, TRIES - 1, NOW + 1).await;
        // The confirmation's code again: right but used, so not a fifth try.
        let reused = one(&store, verify(&keys, "u1", &code(T), NOW + 2)).await;
        assert_eq!(reused, "reused", "{}", db.backend);
        assert_eq!(tries(&store, "u1").await, (4, None));
        // Data keys that cannot open the factor's secret: nothing compared.
        let strange = keys_unknown_to_the_factor();
        let unreadable = one(&store, verify(&strange, "u1", &code(T + 1), NOW + 2)).await;
        assert_eq!(unreadable, "refused: Unreadable");
        assert_eq!(tries(&store, "u1").await, (4, None));
        let fifth = one(&store, verify(&keys, "u1", &wrong_code(9), NOW + 3)).await;
        assert_eq!(
            fifth,
            format!("wrong, locked until {}", NOW + 3 + FIRST_LOCK)
        );
    }
}

/// Keys with the same id as the factor's but another key: its sealed
/// secret does not open under them.
fn keys_unknown_to_the_factor() -> Arc<DataKeys> {
    keys()
}

/// One batch of 100 checks, the right code at `position`, the others wrong:
/// tries go in arrival order, so the right code is compared only among the
/// first five; after a success the count starts again.
#[tokio::test]
async fn in_one_batch_only_the_first_five_codes_are_compared() {
    let keys = keys();
    for (db, store) in stores().await {
        for (n, position) in [0usize, 4, 5, 99].into_iter().enumerate() {
            let id = format!("u{n}");
            enrolled(&store, &keys, &id).await;
            let batch: Vec<CodeCheck> = (0..100)
                .map(|k| {
                    let code = if k == position {
                        code(T + 1)
                    } else {
                        wrong_code(k)
                    };
                    verify(&keys, &id, &code, NOW + 1)
                })
                .collect();
            let answers: Vec<String> = store
                .check_codes(&batch)
                .await
                .unwrap()
                .iter()
                .map(|a| summary(&a.outcome))
                .collect();
            let locked = format!("locked until {}", NOW + 1 + FIRST_LOCK);
            let locking = format!("wrong, {locked}");
            let mut expected: Vec<String> = Vec::new();
            let first_period = position.min(TRIES - 1);
            for left in (1..=4).rev().take(first_period) {
                expected.push(format!("wrong, {left} left"));
            }
            if position < TRIES {
                expected.push("stepped up".into());
            }
            // The period after a success, or the only one.
            let second = if position < TRIES { 0 } else { first_period };
            for left in (1..=4).rev().skip(second) {
                expected.push(format!("wrong, {left} left"));
            }
            expected.push(locking);
            expected.resize(100, locked);
            assert_eq!(
                answers, expected,
                "{}: right code at {position}",
                db.backend
            );
            let compared = answers.iter().filter(|a| !a.starts_with("locked")).count();
            assert!(compared <= 2 * TRIES);
        }
    }
}

/// Checkers on `db` standing in for two replicas: two stores, each with
/// its own connection and code-check task.
async fn two_replicas(db: &TestDatabase) -> [CodeChecks; 2] {
    let a = Store::connect(&db.url).await.expect("replica a");
    let b = Store::connect(&db.url).await.expect("replica b");
    [CodeChecks::spawn(a), CodeChecks::spawn(b)]
}

/// Sends `checks` at once, alternating between the two replicas; the
/// answers in short.
async fn at_once(replicas: &[CodeChecks; 2], checks: Vec<CodeCheck>) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for (n, check) in checks.into_iter().enumerate() {
        let replica = replicas[n % 2].clone();
        tasks.spawn(async move { replica.check(check).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("a check task").expect("a check");
        answers.push(summary(&answer.outcome));
    }
    answers
}

/// 60 wrong codes at once: exactly five are compared (four `wrong`, one
/// that locks), every other is refused as locked without being compared;
/// the database holds five tries and one lockout, the audit trail five
/// wrong codes and one lockout.
async fn assert_five_compared(
    store: &Store,
    id: &str,
    answers: &[String],
    backend: &str,
    path: &str,
) {
    let wrong: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("wrong, ") && a.ends_with(" left"))
        .collect();
    let locking = answers
        .iter()
        .filter(|a| a.starts_with("wrong, locked until"))
        .count();
    let locked = answers
        .iter()
        .filter(|a| a.starts_with("locked until"))
        .count();
    assert_eq!(
        (wrong.len(), locking, locked),
        (TRIES - 1, 1, answers.len() - TRIES),
        "{backend}, {path}: {answers:?}"
    );
    let mut left: Vec<&str> = wrong.iter().map(|a| a.as_str()).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "wrong, 1 left",
            "wrong, 2 left",
            "wrong, 3 left",
            "wrong, 4 left"
        ]
    );
    let f = store.factor(id).await.expect("read").expect("a factor");
    assert_eq!(
        (f.failed_attempts, f.locked_until.is_some()),
        (5, true),
        "{backend}, {path}"
    );
    assert_eq!(
        audited(store, id, "verify", "wrong code").await,
        TRIES,
        "{backend}, {path}"
    );
    assert_eq!(
        audited(store, id, "lockout", "").await,
        1,
        "{backend}, {path}"
    );
}

const AT_ONCE: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_totp_codes_at_once_through_two_replicas_get_five_tries() {
    let keys = keys();
    for (db, store) in stores().await {
        let replicas = two_replicas(&db).await;
        enrolled(&store, &keys, "u1").await;
        let checks = (0..AT_ONCE)
            .map(|k| verify(&keys, "u1", &wrong_code(k), NOW + 1))
            .collect();
        let answers = at_once(&replicas, checks).await;
        assert_five_compared(&store, "u1", &answers, db.backend, "TOTP Verify").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_sms_codes_at_once_through_two_replicas_get_five_tries() {
    let keys = keys();
    for (db, store) in stores().await {
        let replicas = two_replicas(&db).await;
        let right = sms_enrolled(&store, &keys, "u1").await;
        let checks = (0..AT_ONCE)
            .map(|k| format!("{:06}", 100_000 + k))
            .filter(|c| *c != right)
            .take(AT_ONCE - 1)
            .map(|c| verify(&keys, "u1", &c, NOW + 61))
            .collect();
        let answers = at_once(&replicas, checks).await;
        assert_five_compared(&store, "u1", &answers, db.backend, "SMS Verify").await;
        // The code's own tries are used up too (docs/design.md "SMS": five per code).
        let f = store.factor("u1").await.unwrap().unwrap();
        assert_eq!(f.code.map(|c| c.tries), Some(5));
        assert!(store.unlock("u1").await.unwrap());
        let after_unlock = one(&store, verify(&keys, "u1", &right, NOW + 62)).await;
        assert_eq!(after_unlock, "refused: CodeExhausted", "{}", db.backend);
        let next = send_sms_code(&store, &keys, "u1", NOW + 63).await;
        assert_eq!(
            one(&store, verify(&keys, "u1", &next, NOW + 64)).await,
            "stepped up"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_confirmations_at_once_through_two_replicas_get_five_tries() {
    let keys = keys();
    for (db, store) in stores().await {
        let replicas = two_replicas(&db).await;
        // TOTP: a pending enrollment.
        common::store::with_session(&store, "t1").await;
        let enrollment = enrollment_of("t1");
        store
            .begin_enrollment(&pending(&keys, "t1", &enrollment, Method::Totp))
            .await
            .unwrap();
        let checks = (0..AT_ONCE)
            .map(|k| confirm(&keys, "t1", &enrollment, &wrong_code(k), NOW + 1))
            .collect();
        let answers = at_once(&replicas, checks).await;
        assert_five_compared(&store, "t1", &answers, db.backend, "TOTP ConfirmEnrollment").await;
        // Locked: the right code is not compared, and a restarted
        // enrollment keeps the lock.
        let right = one(&store, confirm(&keys, "t1", &enrollment, &code(T), NOW + 2)).await;
        assert!(right.starts_with("locked until"), "{right}");
        store
            .begin_enrollment(&pending(&keys, "t1", "e-t1-again", Method::Totp))
            .await
            .unwrap();
        let again = one(
            &store,
            confirm(&keys, "t1", "e-t1-again", &code(T), NOW + 3),
        )
        .await;
        assert!(again.starts_with("locked until"), "{again}");

        // SMS: a pending enrollment with its code.
        let sms = sms_pending(&store, &keys, "s1").await;
        let enrollment = enrollment_of("s1");
        let checks = (0..AT_ONCE)
            .map(|k| format!("{:06}", 200_000 + k))
            .filter(|c| *c != sms)
            .take(AT_ONCE - 1)
            .map(|c| confirm(&keys, "s1", &enrollment, &c, NOW + 1))
            .collect();
        let answers = at_once(&replicas, checks).await;
        assert_five_compared(&store, "s1", &answers, db.backend, "SMS ConfirmEnrollment").await;
    }
}

/// 100 codes at once through two replicas, the right one among them: the
/// right code is compared only if it is among the first five tries, and
/// wrong codes compared before a success never exceed four (the audit
/// trail numbers each wrong code's try).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_with_the_right_code_compares_at_most_five_before_a_success() {
    let keys = keys();
    for (db, store) in stores().await {
        let replicas = two_replicas(&db).await;
        for (n, position) in [0usize, 37, 99].into_iter().enumerate() {
            let id = format!("u{n}");
            enrolled(&store, &keys, &id).await;
            let checks = (0..100)
                .map(|k| {
                    let code = if k == position {
                        code(T + 1)
                    } else {
                        wrong_code(k)
                    };
                    verify(&keys, &id, &code, NOW + 1)
                })
                .collect();
            let answers = at_once(&replicas, checks).await;
            let accepted = answers.iter().filter(|a| *a == "stepped up").count();
            let wrong = answers.iter().filter(|a| a.starts_with("wrong")).count();
            // Without a success one period of five tries; with one, the
            // tries before it and at most five after.
            assert!(accepted <= 1, "{}: {answers:?}", db.backend);
            if accepted == 0 {
                assert_eq!(wrong, TRIES, "{}: {answers:?}", db.backend);
            } else {
                assert!(wrong < 2 * TRIES, "{}: {answers:?}", db.backend);
            }
            let mut records = store.audit_events(Some(&id), 1000).await.unwrap();
            records.reverse();
            let mut since_success = 0;
            for r in records.iter().filter(|r| r.kind == "verify") {
                if r.outcome == "ok" {
                    since_success = 0;
                } else {
                    since_success += 1;
                    assert_eq!(r.detail, format!("wrong code, failure {since_success}"));
                    assert!(since_success <= TRIES, "{}: {records:?}", db.backend);
                }
            }
        }
    }
}
