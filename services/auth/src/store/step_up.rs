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
//! So one task, the [`StepUpWriter`], does every TOTP step-up: it takes the
//! step-ups that are waiting, applies them one after another in one
//! transaction and commits once, then answers each. While it commits, the
//! next group gathers. Nothing about a single step-up changes: each is the
//! same conditional UPDATE as before, in arrival order within its group, so
//! of two requests with the same code exactly one is accepted, whether they
//! share a group or not, and a replica's writer is only one more writer on
//! the database. A caller learns its outcome only after the commit, so an
//! accepted code is durable before any token carrying it leaves auth.
//!
//! On PostgreSQL, where two replicas' groups may run at once, the rows are
//! locked in one order (factors by user id, then sessions by id, then the
//! audit chain's lock), so two groups never wait for each other in a cycle.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio::sync::{mpsc, oneshot};

use super::entity::{factor, session};
use super::{
    AuditEvent, FactorState, Method, Result, Store, StoreError, accept_step_update, insert_audit,
};
use padlock_runtime::audit;

/// Step-ups in one group at most: a bound on one transaction's length, far
/// above the requests a server runs at once (`--max-concurrent-requests`).
pub const MAX_GROUP: usize = 512;

/// Step-ups waiting for the writer at most; more wait to be queued, which
/// is back-pressure, not memory growth.
const QUEUE: usize = 1024;

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

struct Job {
    step_up: StepUp,
    reply: oneshot::Sender<Result<StepUpOutcome>>,
}

/// Hands step-ups to the writer task; cheap to clone. The task ends when
/// every handle is gone.
#[derive(Debug, Clone)]
pub struct StepUpWriter {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl StepUpWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(store: Store) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, queue));
        StepUpWriter { jobs }
    }

    /// Records `step_up` in the next group and waits for its commit.
    /// `Unavailable` when the writer is gone (the service is stopping).
    pub async fn record(&self, step_up: StepUp) -> Result<StepUpOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send(Job { step_up, reply })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        outcome.await.map_err(|_| StoreError::Unavailable)?
    }
}

/// The writer: one group at a time, as long as anyone can send.
async fn run(store: Store, mut queue: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (step_ups, replies): (Vec<_>, Vec<_>) =
            group.drain(..).map(|j| (j.step_up, j.reply)).unzip();
        match store.record_step_ups(&step_ups).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that gave up still had its code recorded.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

impl Store {
    /// Records `group` in one transaction, each step-up as if alone and in
    /// order; the outcomes in the same order. On an error nothing is
    /// written.
    pub async fn record_step_ups(&self, group: &[StepUp]) -> Result<Vec<StepUpOutcome>> {
        let mut outcomes = vec![StepUpOutcome::NotAccepted; group.len()];
        // Lock order: factors by user id (a stable sort keeps one user's
        // codes in arrival order), then sessions by id, then the chain.
        let mut by_user: Vec<usize> = (0..group.len()).collect();
        by_user.sort_by(|&a, &b| group[a].user_id.cmp(&group[b].user_id));
        let txn = audit::begin(&self.db).await?;
        let mut accepted = Vec::with_capacity(group.len());
        for i in by_user {
            let s = &group[i];
            let update = accept_step_update(&s.user_id, s.step, s.now)
                .filter(factor::Column::State.eq(FactorState::Active.as_str()));
            if update.exec(&txn).await?.rows_affected == 1 {
                accepted.push(i);
            }
        }
        accepted.sort_by(|&a, &b| group[a].session_id.cmp(&group[b].session_id));
        for &i in &accepted {
            let s = &group[i];
            let result = session::Entity::update_many()
                .col_expr(session::Column::MfaAt, Expr::value(s.now))
                .col_expr(
                    session::Column::MfaMethod,
                    Expr::value(Method::Totp.as_str()),
                )
                .filter(session::Column::Id.eq(s.session_id.as_str()))
                .filter(session::Column::EndedAt.is_null())
                .filter(session::Column::ExpiresAt.gt(s.now))
                .exec(&txn)
                .await?;
            outcomes[i] = if result.rows_affected == 1 {
                StepUpOutcome::SteppedUp
            } else {
                StepUpOutcome::SessionGone
            };
        }
        accepted.sort_unstable();
        let events = accepted.iter().map(|&i| group[i].audit.clone()).collect();
        insert_audit(&txn, events).await?;
        txn.commit().await?;
        Ok(outcomes)
    }
}
