//! TOTP step-ups committed in groups.
//!
//! A verified TOTP code changes three things that must land together: the
//! factor's last accepted time step (so the code is never accepted again),
//! the session's `mfa_at`, and an audit record. Each durable commit waits
//! for the disk (one `fsync` on SQLite with `synchronous=FULL`), and only
//! one writer at a time may commit, so a commit per request caps Verify at
//! the disk's commit rate; requests competing for SQLite's write lock cap
//! it much lower, since a waiting writer sleeps and retries.
//!
//! So one task (`code_checks::CodeChecks`) does every TOTP step-up: it
//! takes the step-ups that are waiting, applies them in one transaction
//! and commits once, then answers each. While it commits, the next group gathers. A
//! group costs a handful of statements, not three per step-up: one UPDATE
//! accepts the steps of every user in it (the same conditions as for one
//! code: newer than the last accepted step, factor active and not locked),
//! one steps up the sessions whose codes were accepted (on PostgreSQL the
//! two are one statement), and the audit records go in together
//! (`audit::append`). A user with two step-ups in one group gets
//! them in two rounds, in arrival order, so of two requests with the same
//! code exactly one is accepted, whether they share a group or not, and a
//! replica's writer is only one more writer on the database. A caller
//! learns its outcome only after the commit, so an accepted code is
//! durable before any token carrying it leaves auth.
//!
//! On PostgreSQL two replicas' groups may lock rows of the same users in
//! different orders; the database then rolls one back, and it is tried
//! again.

use std::collections::HashSet;

use padlock_runtime::{audit, db};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement};

use super::{AuditEvent, Method, Result, Store, audit_chain};

/// One verified TOTP code, to be recorded.
#[derive(Debug, Clone)]
pub struct StepUp {
    pub user_id: String,
    pub session_id: String,
    /// The time step the code matched.
    pub step: i64,
    pub now: i64,
    /// Appended to the audit trail when the code is accepted.
    pub audit: AuditEvent,
}

/// What recording a step-up found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUpOutcome {
    /// The code was accepted, the session stepped up and audited.
    SteppedUp,
    /// Accepted and audited, but the session ended or expired meanwhile.
    SessionGone,
    /// Not accepted: this or a later step was accepted already, or the
    /// factor was locked or reset meanwhile. Nothing was written.
    NotAccepted,
}

impl Store {
    /// Records `group` in one transaction, each step-up as if alone and in
    /// order; the outcomes in the same order. On an error nothing is
    /// written. A group that lost a deadlock to another replica's group
    /// (PostgreSQL) is tried again.
    pub async fn record_step_ups(&self, group: &[StepUp]) -> Result<Vec<StepUpOutcome>> {
        let mut attempt = 1;
        loop {
            match self.try_record_step_ups(group).await {
                Err(e) if attempt < DEADLOCK_RETRIES && db::is_deadlock(&e) => attempt += 1,
                result => return Ok(result?),
            }
        }
    }

    async fn try_record_step_ups(
        &self,
        group: &[StepUp],
    ) -> std::result::Result<Vec<StepUpOutcome>, DbErr> {
        let mut outcomes = vec![StepUpOutcome::NotAccepted; group.len()];
        let mut accepted = Vec::with_capacity(group.len());
        let txn = audit::begin(&self.hot).await?;
        // Rounds of one step-up per user, so one statement can take each
        // round: a user's later step-up in the group waits for the round
        // after its earlier one, as it would have alone.
        let mut waiting: Vec<usize> = (0..group.len()).collect();
        while !waiting.is_empty() {
            let mut users = HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) = waiting
                .into_iter()
                .partition(|&i| users.insert(group[i].user_id.as_str()));
            waiting = later;

            let rows: Vec<&StepUp> = round.iter().map(|&i| &group[i]).collect();
            let (took, stepped) = accept_round(&txn, &rows).await?;
            let round: Vec<usize> = round
                .into_iter()
                .filter(|&i| took.contains(&group[i].user_id))
                .collect();
            for i in round {
                outcomes[i] = if stepped.contains(&group[i].session_id) {
                    StepUpOutcome::SteppedUp
                } else {
                    StepUpOutcome::SessionGone
                };
                accepted.push(i);
            }
        }
        accepted.sort_unstable();
        let events = accepted.iter().map(|&i| group[i].audit.clone());
        let records = events.map(audit_chain::values).collect();
        audit::append(&txn, &audit_chain::CHAIN, records).await?;
        txn.commit().await?;
        Ok(outcomes)
    }
}

/// Accepts the steps of `round` (users that appear once) and steps up the
/// sessions of the users whose step was accepted: returns those users'
/// ids and the ids of the sessions stepped up. On PostgreSQL both UPDATEs
/// are one statement (`accept_steps_and_sessions`); on SQLite, which has
/// no data-modifying `WITH`, two.
async fn accept_round(
    txn: &impl ConnectionTrait,
    round: &[&StepUp],
) -> std::result::Result<(HashSet<String>, HashSet<String>), DbErr> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Postgres {
        let rows = txn.query_all_raw(accept_steps_and_sessions(round)).await?;
        let (mut took, mut stepped) = (HashSet::new(), HashSet::new());
        for row in &rows {
            let id: String = row.try_get("", "id")?;
            match row.try_get::<String>("", "kind")?.as_str() {
                "factor" => took.insert(id),
                _ => stepped.insert(id),
            };
        }
        return Ok((took, stepped));
    }
    let took = returned(
        &txn.query_all_raw(accept_steps(backend, round)).await?,
        "user_id",
    )?;
    let accepted: Vec<&StepUp> = round
        .iter()
        .copied()
        .filter(|s| took.contains(&s.user_id))
        .collect();
    if accepted.is_empty() {
        return Ok((took, HashSet::new()));
    }
    let sessions = txn
        .query_all_raw(step_up_sessions(backend, &accepted))
        .await?;
    Ok((took, returned(&sessions, "id")?))
}

/// How often a group that lost a deadlock is tried in all.
const DEADLOCK_RETRIES: u32 = 3;

/// Accepts each step-up's time step on its user's active factor, as
/// `accept_step_update` does for one (newer than the last accepted step,
/// not locked; clearing the failure count and lockouts), for users that
/// appear once: returns the `user_id`s whose code was accepted.
fn accept_steps(backend: DbBackend, round: &[&StepUp]) -> Statement {
    let mut sql = Sql::new(backend);
    sql.push(
        "UPDATE factors SET last_step = v.column2, failed_attempts = 0, \
         locked_until = NULL, lockouts = 0 FROM (VALUES ",
    );
    sql.rows(round, |sql, s| {
        sql.bind(s.user_id.as_str());
        sql.push(", ");
        sql.bind_bigint(s.step);
        sql.push(", ");
        sql.bind_bigint(s.now);
    });
    sql.push(
        ") AS v WHERE factors.user_id = v.column1 AND factors.state = 'active' \
         AND (factors.last_step IS NULL OR factors.last_step < v.column2) \
         AND (factors.locked_until IS NULL OR factors.locked_until <= v.column3) \
         RETURNING user_id",
    );
    sql.into_statement()
}

/// Sets `mfa_at` on each step-up's session if it is live then: returns the
/// session `id`s stepped up.
fn step_up_sessions(backend: DbBackend, round: &[&StepUp]) -> Statement {
    let mut sql = Sql::new(backend);
    sql.push("UPDATE sessions SET mfa_at = v.column2, mfa_method = ");
    sql.bind(Method::Totp.as_str());
    sql.push(" FROM (VALUES ");
    sql.rows(round, |sql, s| {
        sql.bind(s.session_id.as_str());
        sql.push(", ");
        sql.bind_bigint(s.now);
    });
    sql.push(
        ") AS v WHERE sessions.id = v.column1 AND sessions.ended_at IS NULL \
         AND sessions.expires_at > v.column2 RETURNING id",
    );
    sql.into_statement()
}

/// `accept_steps` and then `step_up_sessions` for the users whose step was
/// accepted, as one PostgreSQL statement: the sessions UPDATE reads what
/// the factors UPDATE returned (a data-modifying `WITH`; both see the same
/// snapshot, and neither reads the other's table). Returns rows of `kind`
/// `factor` (`id`: a user whose step was accepted) and `session` (`id`: a
/// session stepped up).
fn accept_steps_and_sessions(round: &[&StepUp]) -> Statement {
    let mut sql = Sql::new(DbBackend::Postgres);
    sql.push("WITH v (user_id, session_id, step, now) AS (VALUES ");
    sql.rows(round, |sql, s| {
        sql.bind(s.user_id.as_str());
        sql.push(", ");
        sql.bind(s.session_id.as_str());
        sql.push(", ");
        sql.bind_bigint(s.step);
        sql.push(", ");
        sql.bind_bigint(s.now);
    });
    sql.push(
        "), f AS (UPDATE factors SET last_step = v.step, failed_attempts = 0, \
         locked_until = NULL, lockouts = 0 FROM v WHERE factors.user_id = v.user_id \
         AND factors.state = 'active' \
         AND (factors.last_step IS NULL OR factors.last_step < v.step) \
         AND (factors.locked_until IS NULL OR factors.locked_until <= v.now) \
         RETURNING factors.user_id), \
         s AS (UPDATE sessions SET mfa_at = v.now, mfa_method = ",
    );
    sql.bind(Method::Totp.as_str());
    sql.push(
        " FROM v WHERE sessions.id = v.session_id \
         AND v.user_id IN (SELECT user_id FROM f) \
         AND sessions.ended_at IS NULL AND sessions.expires_at > v.now \
         RETURNING sessions.id) \
         SELECT 'factor' AS kind, user_id AS id FROM f \
         UNION ALL SELECT 'session', id FROM s",
    );
    sql.into_statement()
}

/// The rows of `round`, the last repeated up to one of a few statement
/// shapes (`db::padded_shape`). A repeated row of `VALUES` joins the same
/// target row again with the same values; SQLite and PostgreSQL update a
/// row once, from one of the rows it joins, so the repeat changes nothing,
/// and RETURNING names the row once.
fn padded<'a>(round: &'a [&'a StepUp]) -> impl Iterator<Item = &'a StepUp> {
    let extra = db::padded_shape(round.len()) - round.len();
    let last = round.last().copied();
    round.iter().copied().chain(
        last.into_iter()
            .flat_map(move |s| std::iter::repeat_n(s, extra)),
    )
}

/// The text column `name` of every row.
fn returned(rows: &[QueryResult], name: &str) -> std::result::Result<HashSet<String>, DbErr> {
    rows.iter().map(|r| r.try_get::<String>("", name)).collect()
}

/// SQL text with its values, numbered the way `backend` numbers them.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<sea_orm::Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Self {
        Sql {
            backend,
            text: String::with_capacity(1024),
            values: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn bind(&mut self, value: impl Into<sea_orm::Value>) {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
            _ => self.text.push('?'),
        }
    }

    /// `value` bound as a BIGINT (a bound value in `VALUES` has no type of
    /// its own).
    fn bind_bigint(&mut self, value: i64) {
        self.push("CAST(");
        self.bind(value);
        self.push(" AS BIGINT)");
    }

    /// One parenthesised row of `VALUES` per step-up of `round`, padded
    /// (`padded`), comma-separated; `row` writes a row's values.
    fn rows(&mut self, round: &[&StepUp], row: impl Fn(&mut Sql, &StepUp)) {
        for (n, s) in padded(round).enumerate() {
            self.push(if n == 0 { "(" } else { ", (" });
            row(self, s);
            self.push(")");
        }
    }

    fn into_statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}
