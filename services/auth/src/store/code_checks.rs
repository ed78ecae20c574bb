//! Code checks: every `Verify` and `ConfirmEnrollment`, TOTP and SMS, in
//! batches, each batch one transaction that takes a try before it
//! compares a code (docs/design.md "Second factors", "Lockout"). Callers
//! see one call, [`CodeChecks::check`] (`crate::factor::check` makes it):
//! the batching below is this module's own.
//!
//! One task, [`CodeChecks`], takes every check waiting (`Batcher`), reads
//! their sessions, users and factors in one query, and then, in one
//! transaction ([`Store::check_codes`]):
//!
//! 1. takes a try of each factor in the database (`lockout`): in rounds of
//!    one check per user, in arrival order, so that a user's checks in one
//!    batch go as if they had come one after another;
//! 2. compares the code of each check that got a try, and only those, with
//!    the factor as its reservation returned it (`factor::compare`); a check
//!    that got no try is refused as locked, its code never compared;
//! 3. records each outcome: a right code as used, resetting the lockout,
//!    with the session's step-up (`accept`); a wrong one keeps its try (the
//!    fifth locks the factor); anything else gives its try back;
//! 4. appends the audit records and commits once, then answers each check.
//!
//! The lockout rule lives in `lockout`, the single-use rules in `accept`,
//! each written once; this module only orders them. The read before the
//! transaction spares a check that cannot succeed (no live session, not
//! the factor the check is for, locked, no SMS code) its try; the
//! statements in the transaction check everything again.
//!
//! Why batches: each statement is a hand-off to SQLite's connection thread
//! or a round trip to PostgreSQL, and each durable commit waits for the
//! disk, so one transaction for every check waiting (a group commit) is
//! what lets `Verify` go past the disk's commit rate (BENCHMARKS.md). The
//! task has a thread and a connection of its own (`Batcher::spawn`,
//! `Store::for_code_checks`), so its round trips do not wait behind the
//! requests' work. A caller learns its outcome only after the commit, so
//! an accepted code is durable before any token carrying it leaves auth.
//! On PostgreSQL two replicas' batches may lock the same users' factors in
//! different orders; the database then rolls one back, and it is tried
//! again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use padlock_runtime::secret::Secret;
use padlock_runtime::{audit, db};
use sea_orm::{DatabaseTransaction, DbErr};
use tokio::sync::OnceCell;

use super::accept::{self, Accept};
use super::batch::Batcher;
use super::lockout::{self, TryAt};
use super::{
    AuditEvent, Factor, FactorState, Method, Outcome, Result, Session, SessionContext, Store,
    StoreError, User, audit_chain,
};
use crate::config::LOCKOUT;
use crate::factor::{self, Compared, SingleUse};
use crate::sealing::DataKeys;

/// Which factor a code is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The active factor (`Verify`).
    Verify,
    /// The pending enrollment `enrollment_id`, which a right code activates
    /// (`ConfirmEnrollment`).
    Confirm { enrollment_id: String },
}

/// A code sent by the caller of session `session_id`, user `user_id`, at
/// `now`, checked with the data keys `keys`.
#[derive(Debug, Clone)]
pub struct CodeCheck {
    pub session_id: String,
    pub user_id: String,
    pub now: i64,
    pub code: Secret<String>,
    pub purpose: Purpose,
    pub keys: Arc<DataKeys>,
}

/// A check's answer: its outcome and, once the factor the check is for
/// was found (`Verify`: the active one; `ConfirmEnrollment`: the pending
/// enrollment named), that factor's method.
#[derive(Debug, Clone)]
pub struct Checked {
    pub method: Option<Method>,
    pub outcome: CodeOutcome,
}

/// What a check found, and what it recorded.
#[derive(Debug, Clone)]
pub enum CodeOutcome {
    /// Right and unused: recorded as used (an enrollment activated), the
    /// lockout reset, the session stepped up and audited, in one commit.
    SteppedUp { session: Session, user: User },
    /// Right, recorded and audited, but the session ended meanwhile.
    SessionGone,
    /// Wrong: its try stays counted; `tries_left` before the lock.
    Wrong { tries_left: u32 },
    /// Wrong, and its try was the last: the factor is locked until `until`
    /// (audited as a lockout).
    WrongAndLocked { until: i64 },
    /// Not compared: the factor is locked until `until`.
    Locked { until: i64 },
    /// Right, but for a step (or SMS code) used already; no try counted.
    Reused,
    /// Not compared, no try counted.
    Refused(Refusal),
}

/// Why a code was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No live session of the caller.
    SessionInvalid,
    /// `Verify` without an active factor.
    NotEnrolled,
    /// `ConfirmEnrollment` of a factor that is active already.
    FactorActive,
    /// `ConfirmEnrollment` of an enrollment that is not the caller's.
    EnrollmentNotFound,
    EnrollmentExpired,
    /// No SMS code waiting, or it is older than its five minutes.
    CodeExpired,
    /// The SMS code's tries are used up.
    CodeExhausted,
    /// The factor's secret could not be read (`factor::Unreadable`).
    Unreadable,
}

/// Hands checks to the task; cheap to clone.
#[derive(Clone)]
pub struct CodeChecks(Batcher<CodeCheck, Checked>);

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
            move |checks: Vec<CodeCheck>| {
                let store = store.clone();
                let opened = opened.clone();
                async move {
                    // The first batch opens the task's own connection, on
                    // the task's thread; if that fails, the batch gets the
                    // error and the next batch tries again.
                    let store = opened.get_or_try_init(|| store.for_code_checks()).await?;
                    store.check_codes(&checks).await
                }
            },
        ))
    }

    /// Checks `check` in the next batch.
    pub async fn check(&self, check: CodeCheck) -> Result<Checked> {
        self.0.call(check).await
    }
}

impl Store {
    /// Checks `checks` (see the module doc): one read, then one
    /// transaction; the answers in the checks' order. On an error nothing
    /// is written and no code was compared under a try that stays.
    pub async fn check_codes(&self, checks: &[CodeCheck]) -> Result<Vec<Checked>> {
        let ids: Vec<&str> = checks.iter().map(|c| c.session_id.as_str()).collect();
        let found = self.sessions_with_users(&ids).await?;
        let mut answers: Vec<Option<Checked>> = vec![None; checks.len()];
        let mut ready = Vec::with_capacity(checks.len());
        for (index, check) in checks.iter().enumerate() {
            match as_read(check, found.get(&check.session_id)) {
                Ok((session, user, factor)) => ready.push(Ready {
                    index,
                    check,
                    session,
                    user,
                    method: factor.method,
                }),
                Err(refused) => answers[index] = Some(*refused),
            }
        }
        if !ready.is_empty() {
            let mut attempt = 1;
            let decided = loop {
                match self.take_tries_and_compare(&ready).await {
                    Err(e) if attempt < DEADLOCK_RETRIES && db::is_deadlock(&e) => attempt += 1,
                    result => break result?,
                };
            };
            for (index, checked) in decided {
                answers[index] = Some(checked);
            }
        }
        answers
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or(StoreError::Internal)
    }

    /// Steps 1 to 4 of the module doc for `ready`, in one transaction.
    async fn take_tries_and_compare(
        &self,
        ready: &[Ready<'_>],
    ) -> std::result::Result<Vec<(usize, Checked)>, DbErr> {
        let txn = audit::begin(&self.hot).await?;
        let mut batch = Batch::default();
        let mut waiting: Vec<&Ready> = ready.iter().collect();
        while !waiting.is_empty() {
            // One check per user per round; a user's later checks wait for
            // the next round, as they would have waited alone.
            let mut users = HashSet::new();
            let (round, later): (Vec<&Ready>, Vec<&Ready>) = waiting
                .into_iter()
                .partition(|r| users.insert(r.check.user_id.as_str()));
            waiting = later;
            let round = batch.answer_refused_users(round);
            if !round.is_empty() {
                batch.round(&txn, &round).await?;
            }
        }
        // Records in the checks' order; a check's own in the order made.
        batch.records.sort_by_key(|(index, _)| *index);
        let records = batch.records.into_iter();
        let values = records.map(|(_, e)| audit_chain::values(e)).collect();
        audit::append(&txn, &audit_chain::CHAIN, values).await?;
        txn.commit().await?;
        Ok(batch.answers)
    }
}

/// How often a batch that lost a deadlock is tried in all.
const DEADLOCK_RETRIES: u32 = 3;

/// A check that may take a try: its session is the caller's and live, and
/// its factor as read is the one it is for and not locked.
struct Ready<'a> {
    index: usize,
    check: &'a CodeCheck,
    session: &'a Session,
    user: &'a User,
    /// The method of the factor as read.
    method: Method,
}

/// What one transaction has decided so far.
#[derive(Default)]
struct Batch {
    answers: Vec<(usize, Checked)>,
    /// Audit records, by the index of the check they are about.
    records: Vec<(usize, AuditEvent)>,
    /// Users whose factor granted no try: their later checks get the same
    /// answer, without asking again.
    refused: HashMap<String, CodeOutcome>,
}

impl Batch {
    /// Answers the checks of users refused a try in an earlier round;
    /// returns the others.
    fn answer_refused_users<'r, 'a>(&mut self, round: Vec<&'r Ready<'a>>) -> Vec<&'r Ready<'a>> {
        let mut others = Vec::with_capacity(round.len());
        for r in round {
            match self.refused.get(&r.check.user_id) {
                Some(outcome) => {
                    let outcome = outcome.clone();
                    self.answer(r, Some(r.method), outcome);
                }
                None => others.push(r),
            }
        }
        others
    }

    /// One round (users appear once): take a try each, compare, record.
    async fn round(
        &mut self,
        txn: &DatabaseTransaction,
        round: &[&Ready<'_>],
    ) -> std::result::Result<(), DbErr> {
        let asked: Vec<TryAt> = round
            .iter()
            .map(|r| TryAt {
                user_id: &r.check.user_id,
                now: r.check.now,
            })
            .collect();
        let mut granted = lockout::reserve_tries(txn, &asked).await?;

        let mut right: Vec<Right> = Vec::new();
        let mut give_back: Vec<&str> = Vec::new();
        let mut wrong_sms: Vec<(&str, String)> = Vec::new();
        let mut not_granted: Vec<&Ready> = Vec::new();
        for &r in round {
            let check = r.check;
            let Some(factor) = granted.remove(&check.user_id) else {
                not_granted.push(r);
                continue;
            };
            // The factor may have changed since it was read.
            if let Err(refusal) = fits(&check.purpose, Some(&factor), check.now) {
                give_back.push(&check.user_id);
                self.answer(r, None, CodeOutcome::Refused(refusal));
                continue;
            }
            match compare(check, &factor) {
                Err(refusal) => {
                    give_back.push(&check.user_id);
                    self.answer(r, Some(factor.method), CodeOutcome::Refused(refusal));
                }
                Ok(Compared::Wrong) => {
                    if let Some(code) = &factor.code {
                        wrong_sms.push((&check.user_id, code.hash.clone()));
                    }
                    self.wrong(r, &factor);
                }
                Ok(Compared::Right(used)) => right.push(Right {
                    ready: r,
                    method: factor.method,
                    used,
                }),
            }
        }

        let accepts: Vec<Accept> = right.iter().map(Right::accept).collect();
        let accepted = accept::accept(txn, &accepts).await?;
        for &Right {
            ready: r, method, ..
        } in &right
        {
            if !accepted.users.contains(&r.check.user_id) {
                // Right, but the step was used already (the factor is held
                // since the reservation, so nothing else can have changed).
                give_back.push(&r.check.user_id);
                self.record(r, "verify", Outcome::Refused, "code reused".into());
                self.answer(r, Some(method), CodeOutcome::Reused);
                continue;
            }
            let kind = match r.check.purpose {
                Purpose::Verify => "verify",
                Purpose::Confirm { .. } => "enrollment_confirmed",
            };
            self.record(r, kind, Outcome::Ok, format!("method={}", method.as_str()));
            let outcome = if accepted.sessions.contains(&r.check.session_id) {
                let mut session = r.session.clone();
                session.mfa_at = Some(r.check.now);
                session.mfa_method = Some(method);
                CodeOutcome::SteppedUp {
                    session,
                    user: r.user.clone(),
                }
            } else {
                CodeOutcome::SessionGone
            };
            self.answer(r, Some(method), outcome);
        }

        lockout::give_back_tries(txn, &give_back).await?;
        let wrong_sms: Vec<(&str, &str)> =
            wrong_sms.iter().map(|(u, h)| (*u, h.as_str())).collect();
        lockout::count_sms_code_tries(txn, &wrong_sms).await?;

        if !not_granted.is_empty() {
            let users: Vec<&str> = not_granted
                .iter()
                .map(|r| r.check.user_id.as_str())
                .collect();
            let locks = lockout::locks(txn, &users).await?;
            for r in not_granted {
                let now = r.check.now;
                let outcome = match locks.get(&r.check.user_id) {
                    Some(Some(until)) if *until > now => CodeOutcome::Locked { until: *until },
                    // Reset meanwhile (a factor that exists and is not
                    // locked grants a try).
                    _ => CodeOutcome::Refused(missing(&r.check.purpose)),
                };
                self.refused
                    .insert(r.check.user_id.clone(), outcome.clone());
                self.answer(r, Some(r.method), outcome);
            }
        }
        Ok(())
    }

    /// A wrong code under try number `factor.failed_attempts`.
    fn wrong(&mut self, r: &Ready<'_>, factor: &Factor) {
        let tries = factor.failed_attempts;
        self.record(
            r,
            "verify",
            Outcome::Refused,
            format!("wrong code, failure {tries}"),
        );
        let outcome = match factor.locked_until(r.check.now) {
            Some(until) => {
                let secs = until - r.check.now;
                self.record(r, "lockout", Outcome::Ok, format!("locked for {secs} s"));
                CodeOutcome::WrongAndLocked { until }
            }
            None => CodeOutcome::Wrong {
                tries_left: LOCKOUT.max_failures.saturating_sub(tries),
            },
        };
        self.answer(r, Some(factor.method), outcome);
    }

    fn answer(&mut self, r: &Ready<'_>, method: Option<Method>, outcome: CodeOutcome) {
        self.answers.push((r.index, Checked { method, outcome }));
    }

    /// An audit record of the caller acting on their own factor.
    fn record(&mut self, r: &Ready<'_>, kind: &'static str, outcome: Outcome, detail: String) {
        let check = r.check;
        let event = AuditEvent {
            at: check.now,
            kind,
            outcome,
            actor: Some(check.user_id.clone()),
            subject: Some(check.user_id.clone()),
            session_id: Some(check.session_id.clone()),
            detail,
        };
        self.records.push((r.index, event));
    }
}

/// The session, user and factor of `check` as read, if it may take a try;
/// else its answer. Nothing is counted for these refusals.
fn as_read<'a>(
    check: &CodeCheck,
    found: Option<&'a SessionContext>,
) -> std::result::Result<(&'a Session, &'a User, &'a Factor), Box<Checked>> {
    let refused = |method, refusal| {
        Box::new(Checked {
            method,
            outcome: CodeOutcome::Refused(refusal),
        })
    };
    let found = found.filter(|(s, _, _)| s.user_id == check.user_id && s.is_live(check.now));
    let Some((session, user, factor)) = found else {
        return Err(refused(None, Refusal::SessionInvalid));
    };
    let factor = fits(&check.purpose, factor.as_ref(), check.now).map_err(|r| refused(None, r))?;
    let method = Some(factor.method);
    if let Some(until) = factor.locked_until(check.now) {
        let outcome = CodeOutcome::Locked { until };
        return Err(Box::new(Checked { method, outcome }));
    }
    factor::comparable(factor, check.now).map_err(|r| refused(method, r))?;
    Ok((session, user, factor))
}

/// What `check`'s code is for `factor`, the one the check is for, as its
/// try left it.
fn compare(check: &CodeCheck, factor: &Factor) -> std::result::Result<Compared, Refusal> {
    factor::comparable(factor, check.now)?;
    factor::compare(&check.keys, factor, check.code.expose(), check.now)
        .map_err(|_| Refusal::Unreadable)
}

/// `factor` if it is the one `purpose` is about: the active factor for
/// `Verify`, the pending enrollment named, not expired, for `Confirm`.
fn fits<'f>(
    purpose: &Purpose,
    factor: Option<&'f Factor>,
    now: i64,
) -> std::result::Result<&'f Factor, Refusal> {
    match (purpose, factor) {
        (Purpose::Confirm { enrollment_id }, Some(f)) if f.enrollment_id == *enrollment_id => {
            if f.state == FactorState::Active {
                Err(Refusal::FactorActive)
            } else if f.enrollment_expires_at <= now {
                Err(Refusal::EnrollmentExpired)
            } else {
                Ok(f)
            }
        }
        (Purpose::Verify, Some(f)) if f.state == FactorState::Active => Ok(f),
        (purpose, _) => Err(missing(purpose)),
    }
}

/// The refusal when the factor `purpose` is about does not exist.
fn missing(purpose: &Purpose) -> Refusal {
    match purpose {
        Purpose::Verify => Refusal::NotEnrolled,
        Purpose::Confirm { .. } => Refusal::EnrollmentNotFound,
    }
}

/// A right code, to record.
struct Right<'r> {
    ready: &'r Ready<'r>,
    method: Method,
    /// What the code uses up.
    used: SingleUse,
}

impl Right<'_> {
    fn accept(&self) -> Accept<'_> {
        let check = self.ready.check;
        Accept {
            user_id: &check.user_id,
            session_id: &check.session_id,
            method: self.method,
            step: match self.used {
                SingleUse::Step(step) => Some(step),
                SingleUse::Code(_) => None,
            },
            code_hash: match &self.used {
                SingleUse::Step(_) => None,
                SingleUse::Code(hash) => Some(hash),
            },
            enrollment_id: match &check.purpose {
                Purpose::Verify => None,
                Purpose::Confirm { enrollment_id } => Some(enrollment_id),
            },
            now: check.now,
        }
    }
}
