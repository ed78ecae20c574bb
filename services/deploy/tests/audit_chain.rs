//! The deploy audit trail is a hash chain, on SQLite and PostgreSQL: a
//! trail of real actions verifies; an edited or deleted record is found
//! and named by id; two replicas appending at once on one database never
//! fork the chain.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use padlock_deploy::inspect::{AuditEvent, Outcome, verify_audit_chain};
use padlock_proto::Reason;
use padlock_proto::deploy::v1::{self as pb, Environment::*, NodePermission::*};
use padlock_runtime::audit::{Break, Intact, Verdict};
use padlock_test_support::TestDatabase;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// Several real actions: an app, a member, grants, an upload, deploys, a
/// refused and an accepted transport to production.
async fn some_history(h: &Harness) {
    let app = h.shop().await;
    h.add_member(&app, "dev", pb::TeamRole::Deploy).await;
    let tina = h.token("tina", &[], None);
    h.grant(&tina, &app, Test, "dev", &[Transport])
        .await
        .unwrap();
    let package = h.upload(&tina, &app, "1.0.0", &mda(1, 2000)).await.unwrap();
    h.deploy(&tina, &package.id, Test).await.unwrap();
    h.transport(&tina, &package.id, Test, Acceptance)
        .await
        .unwrap();
    let refused = h
        .transport(&tina, &package.id, Acceptance, Production)
        .await;
    assert!(refused.is_err(), "production needs a second factor");
    h.transport(&h.stepped_up("tina"), &package.id, Acceptance, Production)
        .await
        .unwrap();
}

async fn connect(db: &TestDatabase) -> DatabaseConnection {
    Database::connect(db.url.as_str()).await.unwrap()
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

async fn ids(conn: &DatabaseConnection) -> Vec<i64> {
    query_ints(conn, "SELECT id FROM audit_events ORDER BY id").await
}

async fn verdict(db: &TestDatabase) -> Verdict {
    verify_audit_chain(&db.url, None).await.unwrap()
}

async fn intact(db: &TestDatabase) -> Intact {
    match verdict(db).await {
        Verdict::Intact(intact) => intact,
        broken => panic!("{}: {broken:?}", db.backend),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_of_real_actions_verifies() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        some_history(&h).await;
        let rows = ids(&connect(&db).await).await.len();
        assert!(rows >= 6, "{}: only {rows} audit records", db.backend);
        assert_eq!(intact(&db).await.head.seq, rows as i64, "{}", db.backend);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_record_is_reported_at_its_id() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        some_history(&h).await;
        let conn = connect(&db).await;
        // Make the refused transport look as if it went through.
        let refusal = query_ints(
            &conn,
            "SELECT id FROM audit_events WHERE outcome = 'refused' ORDER BY id",
        )
        .await[0];
        conn.execute_unprepared(&format!(
            "UPDATE audit_events SET outcome = 'ok', reason = NULL WHERE id = {refusal}"
        ))
        .await
        .unwrap();
        match verdict(&db).await {
            Verdict::Broken(Break::Edited { id, .. }) => assert_eq!(id, refusal, "{}", db.backend),
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
        match verdict(&db).await {
            Verdict::Broken(Break::Missing { id, seq, prev_seq }) => {
                assert_eq!(id, ids[middle + 1], "{}", db.backend);
                assert_eq!((seq, prev_seq), (middle as i64 + 2, middle as i64));
            }
            other => panic!("{}: {other:?}", db.backend),
        }
        h.stop().await;
    }
}

/// Two replicas on one database append at once: one chain, no two records
/// claiming the same predecessor, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_two_replicas_form_one_chain() {
    const PER_REPLICA: usize = 40;
    for db in padlock_test_support::databases().await {
        let a = Harness::start(&db).await;
        let b = Harness::start(&db).await;
        let appends = [&a, &b].into_iter().flat_map(|h| {
            (0..PER_REPLICA).map(move |i| {
                let store = h.app.store().clone();
                tokio::spawn(async move {
                    store
                        .audit(AuditEvent {
                            at: START,
                            actor: "dev".into(),
                            action: "transport_package",
                            app_id: None,
                            env: None,
                            outcome: Outcome::Refused,
                            reason: Some(Reason::MfaRequired.as_str_name()),
                            mfa_at: None,
                            mfa_method: None,
                            detail: format!("attempt {i}"),
                        })
                        .await
                })
            })
        });
        for append in futures::future::join_all(appends.collect::<Vec<_>>()).await {
            append.unwrap().unwrap();
        }
        assert_eq!(
            intact(&db).await.head.seq,
            2 * PER_REPLICA as i64,
            "{}: every append is in the chain",
            db.backend
        );
        let forks = query_ints(
            &connect(&db).await,
            "SELECT COUNT(*) FROM audit_events GROUP BY prev_hash HAVING COUNT(*) > 1",
        )
        .await;
        assert!(forks.is_empty(), "{}: forks {forks:?}", db.backend);
        a.stop().await;
        b.stop().await;
    }
}
