//! The storage conformance suite: the same assertions on SQLite and on a
//! real PostgreSQL, straight against the repository functions. Codes are
//! checked through `Store::check_codes` with real TOTP codes and sealed
//! secrets; the lockout has its own suite (`lockout.rs`).

mod common;

use std::collections::HashSet;

use common::store::{
    NOW, T, code, confirm, created, enrolled, keys, live_session, one, pending, session_of, stores,
    summary, user, verify, with_session, wrong_code,
};
use padlock_auth::store::{
    AuditEvent, CodeChecks, CodeOutcome, FactorState, Method, Outcome, Store, StoreError,
};

#[tokio::test]
async fn users_are_unique_by_username_and_keep_their_roles() {
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1"))
            .await
            .unwrap();
        let err = store
            .create_user(&user("u2", "alice"), created("u2"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict),
            "{}: {err:?}",
            db.backend
        );
        let alice = store.user_by_username("alice").await.unwrap().unwrap();
        assert_eq!(alice.id, "u1");
        assert_eq!(alice.roles, ["operator", "support"]);
        assert!(store.user_by_username("bob").await.unwrap().is_none());
        assert!(store.user_by_id("u1").await.unwrap().is_some());
    }
}

#[tokio::test]
async fn migrations_run_twice_without_harm() {
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1"))
            .await
            .unwrap();
        let again = Store::connect(&db.url).await.expect("second start");
        assert!(
            again.user_by_username("alice").await.unwrap().is_some(),
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn sessions_end_and_ended_sessions_take_no_step_up() {
    let keys = keys();
    for (db, store) in stores().await {
        enrolled(&store, &keys, "u1").await;
        let found = store.session_by_token_hash("h-u1").await.unwrap().unwrap();
        assert_eq!(
            (found.mfa_at, found.mfa_method),
            (Some(NOW), Some(Method::Totp)),
            "{}: the confirmation stepped the session up",
            db.backend
        );
        assert!(
            store
                .end_session(&session_of("u1"), NOW + 10)
                .await
                .unwrap()
        );
        assert!(
            !store
                .end_session(&session_of("u1"), NOW + 11)
                .await
                .unwrap(),
            "ending twice"
        );
        let ended = one(&store, verify(&keys, "u1", &code(T + 1), NOW + 12)).await;
        assert_eq!(ended, "refused: SessionInvalid");
        let session = store.session(&session_of("u1")).await.unwrap().unwrap();
        assert!(!session.is_live(NOW + 12));
        assert_eq!(session.mfa_at, Some(NOW), "no step-up after the end");
        // Nothing was counted or used for the refused code.
        let factor = store.factor("u1").await.unwrap().unwrap();
        assert_eq!((factor.last_step, factor.failed_attempts), (Some(T), 0));
    }
}

#[tokio::test]
async fn one_factor_per_user_and_pending_enrollments_restart() {
    let keys = keys();
    for (db, store) in stores().await {
        with_session(&store, "u1").await;
        assert!(
            store
                .begin_enrollment(&pending(&keys, "u1", "e1", Method::Totp))
                .await
                .unwrap()
        );
        assert!(
            store
                .begin_enrollment(&pending(&keys, "u1", "e2", Method::Totp))
                .await
                .unwrap(),
            "restart while pending"
        );
        let replaced = one(&store, confirm(&keys, "u1", "e1", &code(T), NOW)).await;
        assert_eq!(replaced, "refused: EnrollmentNotFound", "{}", db.backend);
        let expired = one(&store, confirm(&keys, "u1", "e2", &code(T + 20), NOW + 600)).await;
        assert_eq!(expired, "refused: EnrollmentExpired");
        let confirmed = one(&store, confirm(&keys, "u1", "e2", &code(T), NOW)).await;
        assert_eq!(confirmed, "stepped up");
        let factor = store.factor("u1").await.unwrap().unwrap();
        assert_eq!(
            (factor.state, factor.last_step, factor.activated_at),
            (FactorState::Active, Some(T), Some(NOW)),
            "{}",
            db.backend
        );
        let again = one(&store, confirm(&keys, "u1", "e2", &code(T + 1), NOW)).await;
        assert_eq!(again, "refused: FactorActive");
        assert!(
            !store
                .begin_enrollment(&pending(&keys, "u1", "e3", Method::Totp))
                .await
                .unwrap(),
            "active factor stays"
        );
        assert_eq!(
            store.factor("u1").await.unwrap().unwrap().enrollment_id,
            "e2"
        );
    }
}

#[tokio::test]
async fn steps_are_accepted_once_and_in_order() {
    let keys = keys();
    for (db, store) in stores().await {
        enrolled(&store, &keys, "u1").await; // step T used
        let at = |step: i64| verify(&keys, "u1", &code(step), NOW + 15);
        assert_eq!(
            one(&store, at(T)).await,
            "reused",
            "{}: same step",
            db.backend
        );
        assert_eq!(one(&store, at(T - 1)).await, "reused", "earlier step");
        assert_eq!(one(&store, at(T + 1)).await, "stepped up");
        assert_eq!(one(&store, at(T + 1)).await, "reused");
        assert_eq!(one(&store, at(T)).await, "reused", "below the last");
        // Codes of used steps cost no try.
        let factor = store.factor("u1").await.unwrap().unwrap();
        assert_eq!((factor.last_step, factor.failed_attempts), (Some(T + 1), 0));
    }
}

#[tokio::test]
async fn a_group_of_checks_is_answered_in_arrival_order_in_one_commit() {
    let keys = keys();
    for (db, store) in stores().await {
        for id in ["u1", "u2", "u3"] {
            enrolled(&store, &keys, id).await;
        }
        assert!(store.end_session(&session_of("u2"), NOW).await.unwrap());
        // u3 is locked out: right codes are refused.
        for n in 0..5 {
            one(&store, verify(&keys, "u3", &wrong_code(n), NOW)).await;
        }
        let before = store.audit_events(None, 1000).await.unwrap().len();

        let mut nobody = verify(&keys, "u1", &code(T + 1), NOW + 1);
        nobody.session_id = "s9".into();
        let group = [
            verify(&keys, "u1", &code(T + 1), NOW + 1),
            verify(&keys, "u1", &code(T + 1), NOW + 1), // the same code again
            verify(&keys, "u2", &code(T + 1), NOW + 1), // session ended
            verify(&keys, "u1", &code(T), NOW + 1),     // an older step
            verify(&keys, "u3", &code(T + 1), NOW + 1), // locked
            verify(&keys, "u1", &code(T + 2), NOW + 31), // the next step
            verify(&keys, "u1", &wrong_code(0), NOW + 31),
            nobody,
        ];
        let answers = store.check_codes(&group).await.unwrap();
        let outcomes: Vec<String> = answers.iter().map(|a| summary(&a.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                "stepped up",
                "reused",
                "refused: SessionInvalid",
                "reused",
                &format!("locked until {}", NOW + 900),
                "stepped up",
                "wrong, 4 left",
                "refused: SessionInvalid",
            ],
            "{}",
            db.backend
        );
        let s1 = store.session(&session_of("u1")).await.unwrap().unwrap();
        assert_eq!(
            (s1.mfa_at, s1.mfa_method),
            (Some(NOW + 31), Some(Method::Totp))
        );
        let s3 = store.session(&session_of("u3")).await.unwrap().unwrap();
        assert_eq!(s3.mfa_at, Some(NOW), "the confirmation's step-up only");
        let last_steps = [
            store.factor("u1").await.unwrap().unwrap().last_step,
            store.factor("u2").await.unwrap().unwrap().last_step,
            store.factor("u3").await.unwrap().unwrap().last_step,
        ];
        assert_eq!(last_steps, [Some(T + 2), Some(T), Some(T)]);

        // Records in arrival order, chained.
        let records = store.audit_events(None, 1000).await.unwrap();
        let added: Vec<_> = records[..records.len() - before]
            .iter()
            .rev()
            .map(|r| {
                (
                    r.subject.as_deref().unwrap_or(""),
                    r.outcome.as_str(),
                    r.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            added,
            [
                ("u1", "ok", "method=totp"),
                ("u1", "refused", "code reused"),
                ("u1", "refused", "code reused"),
                ("u1", "ok", "method=totp"),
                ("u1", "refused", "wrong code, failure 1"),
            ]
        );
        let verdict = padlock_auth::store::verify_audit_chain(&db.url, None)
            .await
            .unwrap();
        assert!(
            matches!(verdict, padlock_runtime::audit::Verdict::Intact(_)),
            "{verdict:?}"
        );
    }
}

/// Statements are padded to a power of two by repeating their last row
/// (`db::padded_shape`), and on SQLite audit records are inserted in
/// power-of-two statements (`db::batch_shapes`): five codes are five,
/// not eight.
#[tokio::test]
async fn a_group_of_five_is_recorded_as_five() {
    let keys = keys();
    for (db, store) in stores().await {
        let users = ["u1", "u2", "u3", "u4", "u5"];
        for id in users {
            enrolled(&store, &keys, id).await;
        }
        let before = store.audit_events(None, 1000).await.unwrap().len();
        let group: Vec<_> = users
            .iter()
            .map(|id| verify(&keys, id, &code(T + 1), NOW + 1))
            .collect();
        let answers = store.check_codes(&group).await.unwrap();
        let outcomes: Vec<String> = answers.iter().map(|a| summary(&a.outcome)).collect();
        assert_eq!(outcomes, ["stepped up"; 5], "{}", db.backend);

        let ids: Vec<String> = ["u1", "u2", "u3", "u9", "u5"].map(session_of).into();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let found = store.sessions_with_users(&ids).await.unwrap();
        let mut found_ids: Vec<&str> = found.keys().map(String::as_str).collect();
        found_ids.sort_unstable();
        assert_eq!(found_ids, ["s-u1", "s-u2", "s-u3", "s-u5"]);
        for (session, (s, user, factor)) in &found {
            assert_eq!(s.id, *session);
            assert_eq!(s.mfa_at, Some(NOW + 1));
            assert_eq!(user.id, s.user_id);
            let factor = factor.as_ref().expect("a factor");
            assert_eq!((factor.last_step, factor.failed_attempts), (Some(T + 1), 0));
        }

        let records = store.audit_events(None, 1000).await.unwrap();
        let added: Vec<&str> = records[..records.len() - before]
            .iter()
            .rev()
            .map(|r| r.subject.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(added, users);
        let verdict = padlock_auth::store::verify_audit_chain(&db.url, None)
            .await
            .unwrap();
        assert!(
            matches!(verdict, padlock_runtime::audit::Verdict::Intact(_)),
            "{verdict:?}"
        );
    }
}

/// Audit records appended together reach PostgreSQL as one JSON value (as a
/// batch of code checks appends them): whatever
/// their texts hold (quotes, backslashes, JSON and SQL syntax, line breaks,
/// non-ASCII) and whichever fields are empty, they are stored as given
/// and the chain over them holds, on both databases.
#[tokio::test]
async fn audit_records_of_a_group_are_stored_as_given() {
    let details = [
        "quote ' and \"double\"",
        "back\\slash \\\" and \\u0041",
        "\"}, {\"seq\": 1}]; DROP TABLE audit_events; --",
        "line\nbreak\ttab",
        "héllo → 你好 🔒",
        "",
    ];
    for (db, store) in stores().await {
        let users: Vec<String> = (1..=details.len()).map(|n| format!("u{n}")).collect();
        let before = store.audit_events(None, 1000).await.unwrap().len();
        let group: Vec<AuditEvent> = users
            .iter()
            .zip(details)
            .enumerate()
            .map(|(n, (id, detail))| AuditEvent {
                at: NOW + 1,
                kind: "verify",
                outcome: Outcome::Ok,
                actor: (n % 2 == 0).then(|| id.clone()),
                subject: Some(id.clone()),
                session_id: (n % 2 == 0).then(|| session_of(id)),
                detail: detail.to_owned(),
            })
            .collect();
        store.audit_all(group).await.unwrap();

        let records = store.audit_events(None, 1000).await.unwrap();
        let added: Vec<(Option<&str>, Option<&str>, &str)> = records[..records.len() - before]
            .iter()
            .rev()
            .map(|r| (r.actor.as_deref(), r.subject.as_deref(), r.detail.as_str()))
            .collect();
        let expected: Vec<(Option<&str>, Option<&str>, &str)> = users
            .iter()
            .zip(details)
            .enumerate()
            .map(|(n, (id, detail))| {
                let actor = (n % 2 == 0).then_some(id.as_str());
                (actor, Some(id.as_str()), detail)
            })
            .collect();
        assert_eq!(added, expected, "{}", db.backend);
        let verdict = padlock_auth::store::verify_audit_chain(&db.url, None)
            .await
            .unwrap();
        assert!(
            matches!(verdict, padlock_runtime::audit::Verdict::Intact(_)),
            "{}: {verdict:?}",
            db.backend
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_sent_many_times_at_once_is_accepted_once_and_costs_no_try() {
    let keys = keys();
    for (db, store) in stores().await {
        enrolled(&store, &keys, "u1").await;
        let checks = CodeChecks::spawn(store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let checks = checks.clone();
            let check = verify(&keys, "u1", &code(T + 1), NOW + 1);
            tasks.spawn(async move { checks.check(check).await });
        }
        let mut outcomes = Vec::new();
        while let Some(answer) = tasks.join_next().await {
            outcomes.push(summary(&answer.unwrap().unwrap().outcome));
        }
        let stepped_up = outcomes.iter().filter(|o| *o == "stepped up").count();
        let reused = outcomes.iter().filter(|o| *o == "reused").count();
        assert_eq!(
            (stepped_up, reused),
            (1, 39),
            "{}: {outcomes:?}",
            db.backend
        );
        let factor = store.factor("u1").await.unwrap().unwrap();
        assert_eq!(
            (
                factor.failed_attempts,
                factor.locked_until,
                factor.last_step
            ),
            (0, None, Some(T + 1)),
            "{}: a reused code gives its try back",
            db.backend
        );
        let verify_ok = store
            .audit_events(Some("u1"), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "verify" && r.outcome == "ok")
            .count();
        assert_eq!(verify_ok, 1, "one audit record for the one accepted code");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_asked_together_are_answered_each_with_its_own_session() {
    let keys = keys();
    for (db, store) in stores().await {
        for id in ["u1", "u2", "u3"] {
            enrolled(&store, &keys, id).await;
        }
        let checks = CodeChecks::spawn(store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..60 {
            let checks = checks.clone();
            let id = ["u1", "u2", "u3", "none"][n % 4];
            let check = verify(&keys, id, &code(T + 1), NOW + 1);
            tasks.spawn(async move { (id, checks.check(check).await) });
        }
        let mut stepped_up = HashSet::new();
        while let Some(done) = tasks.join_next().await {
            let (id, answer) = done.unwrap();
            match answer.unwrap().outcome {
                CodeOutcome::SteppedUp { session, user } => {
                    assert_eq!((session.id, user.id.as_str()), (session_of(id), id));
                    assert_eq!(session.mfa_at, Some(NOW + 1));
                    assert!(stepped_up.insert(id), "{}: {id} twice", db.backend);
                }
                CodeOutcome::Reused => assert_ne!(id, "none"),
                other => {
                    assert_eq!(id, "none", "{}: {other:?}", db.backend);
                    assert_eq!(summary(&other), "refused: SessionInvalid");
                }
            }
        }
        assert_eq!(stepped_up, HashSet::from(["u1", "u2", "u3"]));
    }
}

#[tokio::test]
async fn audit_events_are_kept_newest_first_by_subject() {
    for (db, store) in stores().await {
        for (i, subject) in ["u1", "u2", "u1"].iter().enumerate() {
            store
                .audit(AuditEvent {
                    at: NOW + i as i64,
                    kind: "verify",
                    outcome: Outcome::Refused,
                    actor: Some((*subject).into()),
                    subject: Some((*subject).into()),
                    session_id: None,
                    detail: format!("event {i}"),
                })
                .await
                .unwrap();
        }
        let events = store.audit_events(Some("u1"), 10).await.unwrap();
        let details: Vec<_> = events.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, ["event 2", "event 0"], "{}", db.backend);
        assert_eq!(store.audit_events(None, 2).await.unwrap().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_fresh_database_all_migrate() {
    for db in padlock_test_support::databases().await {
        let starts = (0..4).map(|_| Store::connect(&db.url));
        let results = futures::future::join_all(starts).await;
        for result in &results {
            assert!(result.is_ok(), "{}: {result:?}", db.backend);
        }
    }
}

#[tokio::test]
async fn a_user_exists_only_with_its_audit_record() {
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1"))
            .await
            .unwrap();
        let events = store.audit_events(Some("u1"), 10).await.unwrap();
        assert_eq!(events.len(), 1, "{}", db.backend);
        // A conflicting create writes neither the user nor a record.
        assert!(
            store
                .create_user(&user("u2", "alice"), created("u2"))
                .await
                .is_err()
        );
        assert!(store.audit_events(Some("u2"), 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_session_is_read_with_its_user_and_factor_in_one_query() {
    let keys = keys();
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1"))
            .await
            .unwrap();
        store
            .create_session(&live_session("s1", "u1"), "h-s1", NOW)
            .await
            .unwrap();
        let (session, found, factor) = store.session_with_user("s1").await.unwrap().unwrap();
        assert_eq!(
            (
                session.id.as_str(),
                found.username.as_str(),
                factor.is_none()
            ),
            ("s1", "alice", true),
            "{}: before enrolling",
            db.backend
        );
        assert_eq!(found.roles, ["operator", "support"]);

        let factor = pending(&keys, "u1", "e1", Method::Totp);
        let ciphertext = factor.secret_ciphertext.clone();
        store.begin_enrollment(&factor).await.unwrap();
        let (_, _, factor) = store.session_with_user("s1").await.unwrap().unwrap();
        let factor = factor.expect("the pending factor");
        assert_eq!(
            (
                factor.state,
                factor.enrollment_id.as_str(),
                factor.secret_ciphertext
            ),
            (FactorState::Pending, "e1", ciphertext)
        );
        assert!(store.session_with_user("s2").await.unwrap().is_none());
    }
}
