//! Recording a right code, written once: the single-use rules and the
//! step-up of the session that sent it.
//!
//! A TOTP code is accepted only for a time step above the last accepted
//! one (RFC 6238 §5.2: a code is valid once; `last_step`), an SMS code
//! only while it is the code waiting and within its five minutes (it is
//! then used up). Either way the factor must still be what the code was
//! for: active for `Verify`, the pending enrollment named for
//! `ConfirmEnrollment`, which it activates. A success resets the lockout
//! (`failed_attempts`, `locked_until`, `lockouts`): it does not look at
//! the lock, since the code was compared under a try (`lockout`), and the
//! try that brought a right fifth code has just set one. The session is
//! stepped up (`mfa_at`) in the same transaction if it is still live.
//!
//! Each statement takes a round of users that appear once (a row of
//! `VALUES` each); on PostgreSQL the factors and sessions UPDATEs are one
//! statement (a data-modifying `WITH`), on SQLite, which has none, two.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DbBackend, DbErr};

use super::Method;
use super::sql::{Sql, texts};

/// A right code to record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Accept<'a> {
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub method: Method,
    /// TOTP: the time step the code matched.
    pub step: Option<i64>,
    /// SMS: the MAC of the code waiting, which the code matched.
    pub code_hash: Option<&'a str>,
    /// `ConfirmEnrollment`: the pending enrollment to activate.
    pub enrollment_id: Option<&'a str>,
    pub now: i64,
}

/// What recording a round of right codes did.
#[derive(Debug, Default)]
pub(super) struct Accepted {
    /// Users whose code was accepted.
    pub users: HashSet<String>,
    /// Sessions stepped up (of those users).
    pub sessions: HashSet<String>,
}

/// Records `round` (users appear once): see the module doc.
pub(super) async fn accept(
    txn: &impl ConnectionTrait,
    round: &[Accept<'_>],
) -> Result<Accepted, DbErr> {
    if round.is_empty() {
        return Ok(Accepted::default());
    }
    let backend = txn.get_database_backend();
    if backend == DbBackend::Postgres {
        let mut sql = values(backend, round);
        sql.push(", f AS (");
        sql.push(ACCEPT_CODES);
        sql.push(" RETURNING user_id), s AS (");
        sql.push(STEP_UP_SESSIONS);
        sql.push(
            " AND v_user_id IN (SELECT user_id FROM f) RETURNING id) \
             SELECT 'factor' AS kind, user_id AS id FROM f \
             UNION ALL SELECT 'session', id FROM s",
        );
        let mut accepted = Accepted::default();
        for row in &txn.query_all_raw(sql.into_statement()).await? {
            let id: String = row.try_get("", "id")?;
            match row.try_get::<String>("", "kind")?.as_str() {
                "factor" => accepted.users.insert(id),
                _ => accepted.sessions.insert(id),
            };
        }
        return Ok(accepted);
    }

    let mut sql = values(backend, round);
    sql.push(" ");
    sql.push(ACCEPT_CODES);
    sql.push(" RETURNING user_id");
    let rows = txn.query_all_raw(sql.into_statement()).await?;
    let users: HashSet<String> = texts(&rows, "user_id")?.into_iter().collect();
    let taken: Vec<Accept> = round
        .iter()
        .copied()
        .filter(|a| users.contains(a.user_id))
        .collect();
    if taken.is_empty() {
        return Ok(Accepted::default());
    }
    let mut sql = values(backend, &taken);
    sql.push(" ");
    sql.push(STEP_UP_SESSIONS);
    sql.push(" RETURNING id");
    let rows = txn.query_all_raw(sql.into_statement()).await?;
    let sessions = texts(&rows, "id")?.into_iter().collect();
    Ok(Accepted { users, sessions })
}

/// The rules of the module doc, over the rows of `v` (`values`).
const ACCEPT_CODES: &str = "UPDATE factors SET \
     last_step = COALESCE(v_step, last_step), \
     code_hash = NULL, code_expires_at = NULL, \
     failed_attempts = 0, locked_until = NULL, lockouts = 0, \
     state = 'active', activated_at = COALESCE(activated_at, v_now) \
     FROM v WHERE user_id = v_user_id \
     AND (v_step IS NULL OR last_step IS NULL OR last_step < v_step) \
     AND (v_code_hash IS NULL OR (code_hash = v_code_hash AND code_expires_at > v_now)) \
     AND ((v_enrollment_id IS NULL AND state = 'active') \
       OR (state = 'pending' AND enrollment_id = v_enrollment_id \
           AND enrollment_expires_at > v_now))";

/// `mfa_at` on each row's session, if it is live then.
const STEP_UP_SESSIONS: &str = "UPDATE sessions SET mfa_at = v_now, mfa_method = v_method \
     FROM v WHERE id = v_session_id AND ended_at IS NULL AND expires_at > v_now";

/// `WITH v (...) AS (VALUES ...)`: one row per right code.
fn values(backend: DbBackend, round: &[Accept<'_>]) -> Sql {
    let mut sql = Sql::new(backend);
    sql.values(
        "v_user_id, v_session_id, v_method, v_step, v_code_hash, v_enrollment_id, v_now",
        round,
        |sql, a| {
            sql.bind(a.user_id);
            sql.push(", ");
            sql.bind(a.session_id);
            sql.push(", ");
            sql.bind(a.method.as_str());
            sql.push(", ");
            sql.bind_bigint(a.step);
            sql.push(", ");
            sql.bind_text(a.code_hash);
            sql.push(", ");
            sql.bind_text(a.enrollment_id);
            sql.push(", ");
            sql.bind_bigint(Some(a.now));
        },
    );
    sql
}
