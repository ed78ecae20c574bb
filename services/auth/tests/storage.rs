//! The storage conformance suite: the same assertions on SQLite and on a
//! real PostgreSQL, straight against the repository functions.

use std::time::Duration;

use padlock_auth::store::{
    AuditEvent, CodeChecks, FactorState, FailureOutcome, LockoutPolicy, Method, NewFactor, Outcome,
    Session, StepUp, StepUpOutcome, Store, StoreError, User,
};

const NOW: i64 = 1_800_000_000;
const POLICY: LockoutPolicy = LockoutPolicy {
    max_failures: 5,
    first_lock: Duration::from_secs(900),
    max_lock: Duration::from_secs(86_400),
};

fn user(id: &str, username: &str) -> User {
    User {
        id: id.into(),
        username: username.into(),
        password_hash: "$argon2id$stub".into(),
        roles: vec!["operator".into(), "support".into()],
        created_at: NOW,
    }
}

/// The audit record a user is created with.
fn created(id: &str, _username: &str) -> AuditEvent {
    AuditEvent {
        at: NOW,
        kind: "user_created",
        outcome: Outcome::Ok,
        actor: None,
        subject: Some(id.into()),
        session_id: None,
        detail: String::new(),
    }
}

fn pending(user_id: &str, enrollment_id: &str) -> NewFactor {
    NewFactor {
        masked_phone: None,
        phone_mac: None,
        user_id: user_id.into(),
        method: Method::Totp,
        enrollment_id: enrollment_id.into(),
        secret_key_id: "k1".into(),
        secret_ciphertext: vec![1, 2, 3],
        created_at: NOW,
        enrollment_expires_at: NOW + 600,
    }
}

/// A verified code of `step` for `user_id`'s session `session_id`.
fn step_up(user_id: &str, session_id: &str, step: i64, now: i64) -> StepUp {
    StepUp {
        user_id: user_id.into(),
        session_id: session_id.into(),
        step,
        now,
        audit: AuditEvent {
            at: now,
            kind: "verify",
            outcome: Outcome::Ok,
            actor: Some(user_id.into()),
            subject: Some(user_id.into()),
            session_id: Some(session_id.into()),
            detail: format!("step {step}"),
        },
    }
}

/// Whether a code of `step` is accepted for `user_id` (who has no session,
/// so an accepted code finds it gone).
async fn accept(store: &Store, user_id: &str, step: i64, now: i64) -> bool {
    let outcomes = store
        .record_step_ups(&[step_up(user_id, "no-session", step, now)])
        .await
        .expect("record");
    outcomes == [StepUpOutcome::SessionGone]
}

fn live_session(id: &str, user_id: &str) -> Session {
    Session {
        id: id.into(),
        user_id: user_id.into(),
        auth_time: NOW,
        mfa_at: None,
        mfa_method: None,
        expires_at: NOW + 3600,
        ended_at: None,
    }
}

/// `id` with an active TOTP factor whose last accepted step is 100.
async fn enrolled(store: &Store, id: &str) {
    store
        .create_user(&user(id, &format!("user-{id}")), created(id, id))
        .await
        .expect("create user");
    let enrollment = format!("e-{id}");
    store
        .begin_enrollment(&pending(id, &enrollment))
        .await
        .expect("begin enrollment");
    assert!(
        store
            .activate_enrollment(id, &enrollment, 100, NOW)
            .await
            .expect("activate")
    );
}

async fn stores() -> Vec<(padlock_test_support::TestDatabase, Store)> {
    let mut all = Vec::new();
    for db in padlock_test_support::databases().await {
        let store = Store::connect(&db.url).await.expect("connect and migrate");
        all.push((db, store));
    }
    all
}

#[tokio::test]
async fn users_are_unique_by_username_and_keep_their_roles() {
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1", "alice"))
            .await
            .unwrap();
        let err = store
            .create_user(&user("u2", "alice"), created("u2", "alice"))
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
            .create_user(&user("u1", "alice"), created("u1", "alice"))
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
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1", "alice"))
            .await
            .unwrap();
        let session = Session {
            id: "s1".into(),
            user_id: "u1".into(),
            auth_time: NOW,
            mfa_at: None,
            mfa_method: None,
            expires_at: NOW + 3600,
            ended_at: None,
        };
        store.create_session(&session, "hash1", NOW).await.unwrap();
        assert!(
            store
                .set_session_mfa("s1", NOW + 5, Method::Totp)
                .await
                .unwrap()
        );
        let found = store.session_by_token_hash("hash1").await.unwrap().unwrap();
        assert_eq!(
            (found.mfa_at, found.mfa_method),
            (Some(NOW + 5), Some(Method::Totp)),
            "{}",
            db.backend
        );
        assert!(store.end_session("s1", NOW + 10).await.unwrap());
        assert!(
            !store.end_session("s1", NOW + 11).await.unwrap(),
            "ending twice"
        );
        assert!(
            !store
                .set_session_mfa("s1", NOW + 12, Method::Totp)
                .await
                .unwrap()
        );
        assert!(
            !store
                .session("s1")
                .await
                .unwrap()
                .unwrap()
                .is_live(NOW + 12)
        );
    }
}

#[tokio::test]
async fn one_factor_per_user_and_pending_enrollments_restart() {
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1", "alice"))
            .await
            .unwrap();
        assert!(store.begin_enrollment(&pending("u1", "e1")).await.unwrap());
        assert!(
            store.begin_enrollment(&pending("u1", "e2")).await.unwrap(),
            "restart while pending"
        );
        assert!(
            !store
                .activate_enrollment("u1", "e1", 100, NOW)
                .await
                .unwrap(),
            "replaced id"
        );
        assert!(
            !store
                .activate_enrollment("u1", "e2", 100, NOW + 600)
                .await
                .unwrap(),
            "expired"
        );
        assert!(
            store
                .activate_enrollment("u1", "e2", 100, NOW)
                .await
                .unwrap()
        );
        let factor = store.factor("u1").await.unwrap().unwrap();
        assert_eq!(
            (factor.state, factor.last_step),
            (FactorState::Active, Some(100)),
            "{}",
            db.backend
        );
        assert!(
            !store.begin_enrollment(&pending("u1", "e3")).await.unwrap(),
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
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1", "alice"))
            .await
            .unwrap();
        store.begin_enrollment(&pending("u1", "e1")).await.unwrap();
        store
            .activate_enrollment("u1", "e1", 100, NOW)
            .await
            .unwrap();
        assert!(
            !accept(&store, "u1", 100, NOW).await,
            "{}: same step",
            db.backend
        );
        assert!(!accept(&store, "u1", 99, NOW).await, "earlier step");
        assert!(accept(&store, "u1", 101, NOW).await);
        assert!(!accept(&store, "u1", 101, NOW).await);
    }
}

#[tokio::test]
async fn a_group_of_step_ups_is_applied_in_arrival_order_in_one_commit() {
    for (db, store) in stores().await {
        for id in ["u1", "u2", "u3"] {
            enrolled(&store, id).await;
        }
        for (session, user) in [("s1", "u1"), ("s2", "u2"), ("s3", "u3")] {
            store
                .create_session(&live_session(session, user), &format!("h-{session}"), NOW)
                .await
                .unwrap();
        }
        assert!(store.end_session("s2", NOW).await.unwrap());
        // u3 is locked out: right codes are refused.
        for _ in 0..5 {
            store.count_failure("u3", NOW, POLICY).await.unwrap();
        }
        let before = store.audit_events(None, 1000).await.unwrap().len();

        let group = [
            step_up("u1", "s1", 101, NOW + 1),
            step_up("u1", "s1", 101, NOW + 1), // the same code again
            step_up("u2", "s2", 101, NOW + 1), // session ended
            step_up("u1", "s1", 100, NOW + 1), // an older step
            step_up("u3", "s3", 101, NOW + 1), // locked
            step_up("u1", "s1", 102, NOW + 2), // the next step
            step_up("nobody", "s9", 101, NOW + 1),
        ];
        let outcomes = store.record_step_ups(&group).await.unwrap();
        use StepUpOutcome::{NotAccepted, SessionGone, SteppedUp};
        assert_eq!(
            outcomes,
            [
                SteppedUp,
                NotAccepted,
                SessionGone,
                NotAccepted,
                NotAccepted,
                SteppedUp,
                NotAccepted
            ],
            "{}",
            db.backend
        );
        let s1 = store.session("s1").await.unwrap().unwrap();
        assert_eq!(
            (s1.mfa_at, s1.mfa_method),
            (Some(NOW + 2), Some(Method::Totp))
        );
        assert_eq!(store.session("s2").await.unwrap().unwrap().mfa_at, None);
        assert_eq!(store.session("s3").await.unwrap().unwrap().mfa_at, None);
        assert_eq!(
            store.factor("u1").await.unwrap().unwrap().last_step,
            Some(102)
        );
        assert_eq!(
            store.factor("u2").await.unwrap().unwrap().last_step,
            Some(101)
        );
        assert_eq!(
            store.factor("u3").await.unwrap().unwrap().last_step,
            Some(100)
        );

        // One record per accepted code, in arrival order, chained.
        let records = store.audit_events(None, 1000).await.unwrap();
        let added: Vec<_> = records[..records.len() - before]
            .iter()
            .rev()
            .map(|r| (r.subject.as_deref().unwrap_or(""), r.detail.as_str()))
            .collect();
        assert_eq!(
            added,
            [("u1", "step 101"), ("u2", "step 101"), ("u1", "step 102")]
        );
        let url = db.url.clone();
        let verdict = padlock_auth::store::verify_audit_chain(&url, None)
            .await
            .unwrap();
        assert!(
            matches!(verdict, padlock_runtime::audit::Verdict::Intact(_)),
            "{verdict:?}"
        );
    }
}

/// Enrolls each of `users` and gives the n-th (from 1) a live session `sn`.
async fn enrolled_with_sessions(store: &Store, users: &[&str]) {
    for (n, id) in users.iter().enumerate() {
        enrolled(store, id).await;
        let session = format!("s{}", n + 1);
        store
            .create_session(&live_session(&session, id), &format!("h-{session}"), NOW)
            .await
            .expect("create a session");
    }
}

/// Groups and reads are padded to a power of two by repeating their last
/// row (`db::padded_shape`), and on SQLite audit records are inserted in
/// power-of-two statements (`db::batch_shapes`): five step-ups are five,
/// not eight.
#[tokio::test]
async fn a_group_of_five_is_recorded_as_five() {
    for (db, store) in stores().await {
        let users = ["u1", "u2", "u3", "u4", "u5"];
        enrolled_with_sessions(&store, &users).await;
        let before = store.audit_events(None, 1000).await.unwrap().len();
        let group: Vec<StepUp> = users
            .iter()
            .enumerate()
            .map(|(n, id)| step_up(id, &format!("s{}", n + 1), 101, NOW + 1))
            .collect();
        let outcomes = store.record_step_ups(&group).await.unwrap();
        assert_eq!(outcomes, [StepUpOutcome::SteppedUp; 5], "{}", db.backend);

        let found = store
            .sessions_with_users(&["s1", "s2", "s3", "s9", "s5"])
            .await
            .unwrap();
        let mut ids: Vec<&str> = found.keys().map(String::as_str).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["s1", "s2", "s3", "s5"]);
        for (session, (s, user, factor)) in &found {
            assert_eq!(s.id, *session);
            assert_eq!(s.mfa_at, Some(NOW + 1));
            assert_eq!(user.id, s.user_id);
            assert_eq!(factor.as_ref().and_then(|f| f.last_step), Some(101));
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

/// A group's audit records reach PostgreSQL as one JSON value: whatever
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
        let ids: Vec<&str> = users.iter().map(String::as_str).collect();
        enrolled_with_sessions(&store, &ids).await;
        let before = store.audit_events(None, 1000).await.unwrap().len();
        let group: Vec<StepUp> = users
            .iter()
            .zip(details)
            .enumerate()
            .map(|(n, (id, detail))| {
                let mut s = step_up(id, &format!("s{}", n + 1), 101, NOW + 1);
                s.audit.detail = detail.to_owned();
                if n % 2 == 1 {
                    s.audit.actor = None;
                    s.audit.session_id = None;
                }
                s
            })
            .collect();
        let outcomes = store.record_step_ups(&group).await.unwrap();
        assert!(
            outcomes.iter().all(|o| *o == StepUpOutcome::SteppedUp),
            "{}: {outcomes:?}",
            db.backend
        );

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
async fn the_writer_accepts_a_code_sent_many_times_at_once_exactly_once() {
    for (db, store) in stores().await {
        enrolled(&store, "u1").await;
        store
            .create_session(&live_session("s1", "u1"), "h-s1", NOW)
            .await
            .unwrap();
        let checks = CodeChecks::spawn(store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        let mut lookups = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let writer = checks.clone();
            tasks.spawn(async move { writer.record(step_up("u1", "s1", 101, NOW + 1)).await });
            // Reads of the same session share the batches.
            let reader = checks.clone();
            lookups.spawn(async move { reader.session_with_user("s1").await });
        }
        let mut stepped_up = 0;
        while let Some(outcome) = tasks.join_next().await {
            match outcome.unwrap().unwrap() {
                StepUpOutcome::SteppedUp => stepped_up += 1,
                StepUpOutcome::NotAccepted => {}
                other => panic!("{}: {other:?}", db.backend),
            }
        }
        assert_eq!(stepped_up, 1, "{}", db.backend);
        while let Some(found) = lookups.join_next().await {
            let (session, _, _) = found.unwrap().unwrap().expect("the session");
            assert_eq!(session.id, "s1", "{}", db.backend);
        }
        let verify = store
            .audit_events(Some("u1"), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "verify")
            .count();
        assert_eq!(verify, 1, "one audit record for the one accepted code");
    }
}

#[tokio::test]
async fn lockouts_double_up_to_a_day_and_restart_the_count_when_they_end() {
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1", "alice"))
            .await
            .unwrap();
        store.begin_enrollment(&pending("u1", "e1")).await.unwrap();
        store
            .activate_enrollment("u1", "e1", 100, NOW)
            .await
            .unwrap();
        let mut now = NOW;
        for expected in [
            900, 1800, 3600, 7200, 14_400, 28_800, 57_600, 86_400, 86_400,
        ] {
            for n in 1..=4 {
                let outcome = store.count_failure("u1", now, POLICY).await.unwrap();
                assert_eq!(
                    outcome,
                    FailureOutcome::Counted {
                        failed_attempts: n,
                        locked_until: None
                    },
                    "{}",
                    db.backend
                );
            }
            let outcome = store.count_failure("u1", now, POLICY).await.unwrap();
            assert_eq!(
                outcome,
                FailureOutcome::Counted {
                    failed_attempts: 5,
                    locked_until: Some(now + expected)
                }
            );
            let locked = store.count_failure("u1", now + 1, POLICY).await.unwrap();
            assert_eq!(
                locked,
                FailureOutcome::AlreadyLocked {
                    until: now + expected
                }
            );
            assert!(
                !accept(&store, "u1", 200, now + 1).await,
                "locked refuses right codes"
            );
            now += expected;
        }
        // A success clears both the count and the doubling.
        assert!(accept(&store, "u1", 200, now).await);
        for _ in 1..=4 {
            store.count_failure("u1", now, POLICY).await.unwrap();
        }
        let outcome = store.count_failure("u1", now, POLICY).await.unwrap();
        assert_eq!(
            outcome,
            FailureOutcome::Counted {
                failed_attempts: 5,
                locked_until: Some(now + 900)
            }
        );
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
            .create_user(&user("u1", "alice"), created("u1", "alice"))
            .await
            .unwrap();
        let events = store.audit_events(Some("u1"), 10).await.unwrap();
        assert_eq!(events.len(), 1, "{}", db.backend);
        // A conflicting create writes neither the user nor a record.
        assert!(
            store
                .create_user(&user("u2", "alice"), created("u2", "alice"))
                .await
                .is_err()
        );
        assert!(store.audit_events(Some("u2"), 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_session_is_read_with_its_user_and_factor_in_one_query() {
    for (db, store) in stores().await {
        store
            .create_user(&user("u1", "alice"), created("u1", "alice"))
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

        store.begin_enrollment(&pending("u1", "e1")).await.unwrap();
        let (_, _, factor) = store.session_with_user("s1").await.unwrap().unwrap();
        let factor = factor.expect("the pending factor");
        assert_eq!(
            (
                factor.state,
                factor.enrollment_id.as_str(),
                factor.secret_ciphertext
            ),
            (FactorState::Pending, "e1", vec![1, 2, 3])
        );
        assert!(store.session_with_user("s2").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_asked_together_are_answered_each_with_its_own_session() {
    for (db, store) in stores().await {
        for id in ["u1", "u2", "u3"] {
            enrolled(&store, id).await;
            store
                .create_session(
                    &live_session(&format!("s-{id}"), id),
                    &format!("h-{id}"),
                    NOW,
                )
                .await
                .unwrap();
        }
        let reader = CodeChecks::spawn(store.clone());
        let mut lookups = tokio::task::JoinSet::new();
        for n in 0..60 {
            let reader = reader.clone();
            let session = ["s-u1", "s-u2", "s-u3", "s-none"][n % 4];
            lookups.spawn(async move { (session, reader.session_with_user(session).await) });
        }
        while let Some(done) = lookups.join_next().await {
            let (session, found) = done.unwrap();
            match found.unwrap() {
                Some((s, user, factor)) => {
                    assert_eq!(s.id, session, "{}", db.backend);
                    assert_eq!(format!("s-{}", user.id), session);
                    assert_eq!(factor.map(|f| f.user_id), Some(user.id));
                }
                None => assert_eq!(session, "s-none"),
            }
        }
    }
}
