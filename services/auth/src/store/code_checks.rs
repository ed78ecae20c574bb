//! Code checks read and recorded in batches.
//!
//! Every code check reads its session, user and factor, and a right TOTP
//! code is then recorded (`step_up`). On SQLite each statement is handed to
//! the connection's own thread and its rows handed back, thread switches
//! that cost more than the statement; on PostgreSQL each is a round trip.
//! So one task, [`CodeChecks`], takes every check waiting ([`Batcher`]),
//! reads their sessions in one query (`WHERE id IN (...)`), asks each
//! check what to record given what was read, records those step-ups as
//! one group commit (`Store::record_step_ups`) and answers each, while
//! the next batch gathers. A `Verify` with a right code is thus one
//! hand-off, not a read and then a write each waiting for the connection.
//! The task has a thread and a connection of its own (`Batcher::spawn`,
//! `Store::for_code_checks`), so its round trips do not wait behind the
//! requests' work.
//!
//! A check sees the database as of its batch's read, which starts after
//! it was asked for, as a read of its own would; the step-up's conditions
//! (newer step, factor active and not locked, session live) are checked
//! again by the writing statements, so a change between the read and the
//! write is never overwritten.

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::batch::Batcher;
use super::{Result, SessionContext, StepUp, StepUpOutcome, Store};

/// What to record, given the check's session as read (`None`: no such
/// session): a step-up, or nothing.
pub type Decide = Box<dyn FnOnce(Option<&SessionContext>) -> Option<StepUp> + Send>;

struct Check {
    session_id: String,
    decide: Decide,
}

/// What a check found and, if it recorded a step-up, the outcome.
#[derive(Debug, Clone)]
pub struct Checked {
    pub context: Option<SessionContext>,
    pub recorded: Option<StepUpOutcome>,
}

/// Hands checks to the task; cheap to clone.
#[derive(Clone)]
pub struct CodeChecks(Batcher<Check, Checked>);

impl std::fmt::Debug for CodeChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeChecks").finish_non_exhaustive()
    }
}

impl CodeChecks {
    /// Starts the task on a thread of its own (`Batcher::spawn`).
    pub fn spawn(store: Store) -> Self {
        let opened = Arc::new(OnceCell::new());
        CodeChecks(Batcher::spawn(
            "auth-code-checks",
            move |checks: Vec<Check>| {
                let store = store.clone();
                let opened = opened.clone();
                async move {
                    // The first batch opens the task's own connection, on
                    // the task's thread; if that fails, the batch gets the
                    // error and the next batch tries again.
                    let store = opened.get_or_try_init(|| store.for_code_checks()).await?;
                    store.serve_checks(checks).await
                }
            },
        ))
    }

    /// Reads `session_id`'s session, user and factor in the next batch,
    /// and records the step-up `decide` asks for, if any.
    pub async fn check(&self, session_id: &str, decide: Decide) -> Result<Checked> {
        let session_id = session_id.to_owned();
        self.0.call(Check { session_id, decide }).await
    }

    /// [`Store::session_with_user`], in the next batch.
    pub async fn session_with_user(&self, session_id: &str) -> Result<Option<SessionContext>> {
        Ok(self.check(session_id, Box::new(|_| None)).await?.context)
    }

    /// Records `step_up` in the next group and waits for its commit.
    pub async fn record(&self, step_up: StepUp) -> Result<StepUpOutcome> {
        let session_id = step_up.session_id.clone();
        let checked = self
            .check(&session_id, Box::new(move |_| Some(step_up)))
            .await?;
        Ok(checked.recorded.unwrap_or(StepUpOutcome::NotAccepted))
    }
}

impl Store {
    /// One batch: one read for every check, one group commit for every
    /// step-up they ask for; the answers in the checks' order.
    async fn serve_checks(&self, checks: Vec<Check>) -> Result<Vec<Checked>> {
        let ids: Vec<&str> = checks.iter().map(|c| c.session_id.as_str()).collect();
        let found = self.sessions_with_users(&ids).await?;
        let mut answers = Vec::with_capacity(checks.len());
        let mut step_ups = Vec::new();
        let mut recorders = Vec::new();
        for (i, check) in checks.into_iter().enumerate() {
            // The same session may be checked twice in one batch.
            let context = found.get(&check.session_id).cloned();
            if let Some(step_up) = (check.decide)(context.as_ref()) {
                step_ups.push(step_up);
                recorders.push(i);
            }
            answers.push(Checked {
                context,
                recorded: None,
            });
        }
        if !step_ups.is_empty() {
            let outcomes = self.record_step_ups(&step_ups).await?;
            for (i, outcome) in recorders.into_iter().zip(outcomes) {
                answers[i].recorded = Some(outcome);
            }
        }
        Ok(answers)
    }
}
