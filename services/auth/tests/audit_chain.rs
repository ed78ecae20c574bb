//! The auth audit trail is a hash chain, on SQLite and PostgreSQL: a trail
//! of real actions verifies; an edited, deleted, inserted or cut-off record
//! is found and named by id; two replicas appending at once on one
//! database never fork the chain; records from before the chain existed
//! are linked by its migration.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use padlock_auth::store::{AuditEvent, Outcome, Store, migration::Migrator, verify_audit_chain};
use padlock_runtime::audit::{Break, Intact, Link, Verdict, record_hash};
use padlock_test_support::TestDatabase;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

/// Several real actions: provisioning, sign-ins (one refused), a TOTP
/// enrollment and a step-up.
async fn some_history(h: &Harness) {
    h.add_user("sam", &["support"]).await;
    let (session, secret, _) = h.enrolled_user("alice").await;
    h.clock.advance(Duration::from_secs(60));
    h.verify(&session.access_token, &h.code(&secret, 0))
        .await
        .unwrap();
    let refused = h
        .sessions()
        .sign_in(padlock_proto::auth::v1::SignInRequest {
            username: "alice".into(),
            password: "not the password".into(),
        })
        .await;
    assert!(refused.is_err());
    h.sign_in("sam").await;
}

async fn connect(db: &TestDatabase) -> DatabaseConnection {
    Database::connect(db.url.as_str()).await.unwrap()
}

async fn ids(conn: &DatabaseConnection) -> Vec<i64> {
    query_ints(conn, "SELECT id FROM audit_events ORDER BY id").await
}

async fn query_ints(conn: &DatabaseConnection, sql: &str) -> Vec<i64> {
    conn.query_all_raw(sea_orm::Statement::from_string(
        conn.get_database_backend(),
        sql,
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get_by_index::<i64>(0).unwrap())
    .collect()
}

async fn verdict(db: &TestDatabase, expect: Option<Link>) -> Verdict {
    verify_audit_chain(&db.url, expect).await.unwrap()
}

async fn intact(db: &TestDatabase) -> Intact {
    match verdict(db, None).await {
        Verdict::Intact(intact) => intact,
        broken => panic!("{}: {broken:?}", db.backend),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_of_real_actions_verifies() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        some_history(&h).await;
        let conn = connect(&db).await;
        let rows = ids(&conn).await.len();
        assert!(rows >= 6, "{}: only {rows} audit records", db.backend);
        let head = intact(&db).await.head;
        assert_eq!(head.seq, rows as i64, "{}", db.backend);
        let stored = conn
            .query_one_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<String>(0)
            .unwrap();
        assert_eq!(hex::encode(head.hash), stored, "{}", db.backend);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_record_is_reported_at_its_id() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        some_history(&h).await;
        let conn = connect(&db).await;
        let ids = ids(&conn).await;
        let edited = ids[ids.len() / 2];
        conn.execute_unprepared(&format!(
            "UPDATE audit_events SET detail = 'nothing happened' WHERE id = {edited}"
        ))
        .await
        .unwrap();
        match verdict(&db, None).await {
            Verdict::Broken(Break::Edited { id, .. }) => assert_eq!(id, edited, "{}", db.backend),
            other => panic!("{}: {other:?}", db.backend),
        }
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_record_is_reported_as_missing_at_the_next_id() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        some_history(&h).await;
        let conn = connect(&db).await;
        let ids = ids(&conn).await;
        let middle = ids.len() / 2;
        conn.execute_unprepared(&format!(
            "DELETE FROM audit_events WHERE id = {}",
            ids[middle]
        ))
        .await
        .unwrap();
        match verdict(&db, None).await {
            Verdict::Broken(Break::Missing { id, seq, prev_seq }) => {
                assert_eq!(id, ids[middle + 1], "{}", db.backend);
                assert_eq!((seq, prev_seq), (middle as i64 + 2, middle as i64));
            }
            other => panic!("{}: {other:?}", db.backend),
        }
        h.stop().await;
    }
}

/// Someone who knows the encoding rewrites a record and recomputes its
/// hash: the record itself checks out, the next one no longer links to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        h.add_user("sam", &["support"]).await;
        h.add_user("alice", &[]).await;
        h.add_user("bob", &[]).await;
        let conn = connect(&db).await;
        let ids = ids(&conn).await;
        // Record 2 (bob's creation is record 3) now claims to be about sam.
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                format!(
                    "SELECT at, kind, outcome, actor, session_id, detail, prev_hash \
                     FROM audit_events WHERE id = {}",
                    ids[1]
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        let text = |i| row.try_get_by_index::<Option<String>>(i).unwrap();
        let sam_id = query_text(&conn, "SELECT id FROM users WHERE username = 'sam'").await;
        let mut prev = [0; 32];
        hex::decode_to_slice(text(6).unwrap(), &mut prev).unwrap();
        use padlock_runtime::audit::Value::{Int, Text};
        // The documented domain and column order (store/audit_chain.rs).
        let forged = record_hash(
            "padlock-auth audit_events v1",
            2,
            &prev,
            &[
                Int(Some(row.try_get_by_index::<i64>(0).unwrap())),
                Text(text(1)),
                Text(text(2)),
                Text(text(3)),
                Text(Some(sam_id.clone())),
                Text(text(4)),
                Text(text(5)),
            ],
        );
        conn.execute_unprepared(&format!(
            "UPDATE audit_events SET subject = '{sam_id}', hash = '{}' WHERE id = {}",
            hex::encode(forged),
            ids[1]
        ))
        .await
        .unwrap();
        match verdict(&db, None).await {
            Verdict::Broken(Break::Unlinked { id, seq }) => {
                assert_eq!((id, seq), (ids[2], 3), "{}", db.backend)
            }
            other => panic!("{}: {other:?}", db.backend),
        }
        h.stop().await;
    }
}

async fn query_text(conn: &DatabaseConnection, sql: &str) -> String {
    conn.query_one_raw(sea_orm::Statement::from_string(
        conn.get_database_backend(),
        sql,
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<String>(0)
    .unwrap()
}

/// The limit of an unkeyed chain, and its remedy: cutting records off the
/// end leaves a shorter intact chain, which only a head recorded earlier
/// exposes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_cut_off_the_end_are_found_against_a_recorded_head() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        some_history(&h).await;
        let recorded = intact(&db).await.head;
        assert!(matches!(
            verdict(&db, Some(recorded)).await,
            Verdict::Intact(_)
        ));
        let conn = connect(&db).await;
        conn.execute_unprepared(&format!(
            "DELETE FROM audit_events WHERE seq = {}",
            recorded.seq
        ))
        .await
        .unwrap();
        assert_eq!(intact(&db).await.head.seq, recorded.seq - 1);
        assert_eq!(
            verdict(&db, Some(recorded)).await,
            Verdict::Broken(Break::Truncated {
                end: recorded.seq - 1,
                expected: recorded.seq,
            }),
            "{}",
            db.backend
        );
        // New records take the freed position with another hash.
        h.sign_in("sam").await;
        match verdict(&db, Some(recorded)).await {
            Verdict::Broken(Break::Rewritten { seq, .. }) => assert_eq!(seq, recorded.seq),
            other => panic!("{}: {other:?}", db.backend),
        }
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_inserted_outside_the_chain_is_found() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        some_history(&h).await;
        let conn = connect(&db).await;
        conn.execute_unprepared(
            "INSERT INTO audit_events (at, kind, outcome, detail) \
             VALUES (1800000000, 'factor_reset', 'ok', 'ticket INC-1')",
        )
        .await
        .unwrap();
        let forged = *ids(&conn).await.last().unwrap();
        assert_eq!(
            verdict(&db, None).await,
            Verdict::Broken(Break::Inserted { id: forged }),
            "{}",
            db.backend
        );
        h.stop().await;
    }
}

/// Two replicas on one database append at once: the records form one chain,
/// no two claim the same predecessor, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_two_replicas_form_one_chain() {
    const PER_REPLICA: usize = 40;
    for db in padlock_test_support::databases().await {
        let a = Harness::start(&db).await;
        let b = Harness::start(&db).await;
        let before = intact(&db).await.head.seq;
        let appends = [&a, &b].into_iter().flat_map(|h| {
            (0..PER_REPLICA).map(move |i| {
                let store = h.app.store().clone();
                tokio::spawn(async move {
                    store
                        .audit(AuditEvent {
                            at: START,
                            kind: "sign_in",
                            outcome: Outcome::Refused,
                            actor: None,
                            subject: None,
                            session_id: None,
                            detail: format!("attempt {i}"),
                        })
                        .await
                })
            })
        });
        for append in futures::future::join_all(appends.collect::<Vec<_>>()).await {
            append.unwrap().unwrap();
        }
        let head = intact(&db).await.head;
        assert_eq!(
            head.seq,
            before + 2 * PER_REPLICA as i64,
            "{}: every append is in the chain",
            db.backend
        );
        let conn = connect(&db).await;
        let forks = query_ints(
            &conn,
            "SELECT COUNT(*) FROM audit_events GROUP BY prev_hash HAVING COUNT(*) > 1",
        )
        .await;
        assert!(forks.is_empty(), "{}: forks {forks:?}", db.backend);
        a.stop().await;
        b.stop().await;
    }
}

/// A database from before the chain: its migration links the records
/// already there, in id order, and new ones follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_before_the_chain_are_linked_by_its_migration() {
    for db in padlock_test_support::databases().await {
        let conn = connect(&db).await;
        // Init and SmsCodes: the schema the chain was added to.
        Migrator::up(&conn, Some(2)).await.unwrap();
        for detail in ["one", "two", "three"] {
            conn.execute_unprepared(&format!(
                "INSERT INTO audit_events (at, kind, outcome, detail) \
                 VALUES (1800000000, 'user_created', 'ok', '{detail}')"
            ))
            .await
            .unwrap();
        }
        let store = Store::connect(&db.url).await.unwrap();
        assert_eq!(intact(&db).await.head.seq, 3, "{}", db.backend);
        store
            .audit(AuditEvent {
                at: START,
                kind: "sign_in",
                outcome: Outcome::Ok,
                actor: None,
                subject: None,
                session_id: None,
                detail: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(intact(&db).await.head.seq, 4, "{}", db.backend);
    }
}
