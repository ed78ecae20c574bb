//! The step-up rule applied where it counts: inside the change that carries
//! a padlocked action out, so what it read cannot change before the write
//! it allowed commits (docs/design.md, "The step-up rule"). A refusal rolls
//! the change back, is audited for a known caller, and is returned as
//! [`DeployError::Refused`].

use padlock_token::{Claims, TokenError};

use super::{App, Authorized, Verified, caller::holdings_of};
use crate::error::{DeployError, Result};
use crate::policy::{self, Action, Env, Holdings, Refusal};
use crate::store::{AppChange, AuditEvent, Outcome};

impl App {
    /// Opens the change to `app_id` (`AppNotFound` without the app), reads
    /// what the caller holds there under the app's lock and decides
    /// `action` on `env`. Allowed: the caller and the open change, whose
    /// commit writes the action's audit record with it.
    pub(crate) async fn authorize(
        &self,
        verified: &Verified,
        action: Action,
        app_id: &str,
        env: Env,
    ) -> Result<(Authorized, AppChange)> {
        let change = self
            .store()
            .change(app_id)
            .await?
            .ok_or(DeployError::AppNotFound)?;
        let holdings = match verified.claims() {
            Some(claims) => {
                let username = claims.preferred_username.as_str();
                let member = change.member(username).await?;
                let grants = change.grants(Some(username)).await?;
                holdings_of(app_id, member, grants)
            }
            None => Holdings::default(),
        };
        let now = self.now();
        let token = match verified {
            Verified::Claims(claims) => Ok(&**claims),
            Verified::MfaInFuture => Err(&TokenError::MfaInFuture),
        };
        let decision = policy::decide(token, self.policy(), action, app_id, env, &holdings, now);
        let refusal = match (decision.outcome, verified) {
            (Ok(()), Verified::Claims(claims)) => {
                let who = Authorized {
                    claims: Claims::clone(claims),
                };
                return Ok((who, change));
            }
            (Ok(()), Verified::MfaInFuture) => Refusal::TokenInvalid,
            (Err(refusal), _) => refusal,
        };
        // Release the app (and on SQLite the write lock) before writing the
        // refusal's record in a transaction of its own.
        change.rollback().await?;
        let reason = refusal.reason_under(&decision.rule);
        self.0.metrics.step_up_refused(reason, action, env);
        if let Some(claims) = verified.claims() {
            self.store()
                .audit(AuditEvent {
                    at: now,
                    actor: claims.preferred_username.clone(),
                    action: action.as_str(),
                    app_id: Some(app_id.to_owned()),
                    env: Some(env),
                    outcome: Outcome::Refused,
                    reason: Some(reason.as_str_name()),
                    mfa_at: claims.mfa_at,
                    mfa_method: claims.mfa_method.clone(),
                    detail: String::new(),
                })
                .await?;
        }
        tracing::info!(
            action = action.as_str(),
            environment = env.as_str(),
            reason = reason.as_str_name(),
            "padlocked action refused"
        );
        Err(DeployError::Refused {
            refusal,
            action,
            env,
            rule: decision.rule,
        })
    }

    /// The audit record of an action `who` did on `app_id`, relying on the
    /// second factor their token carries.
    pub(crate) fn audit_ok(
        &self,
        who: &Authorized,
        action: &'static str,
        app_id: &str,
        env: Option<Env>,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            at: self.now(),
            actor: who.username().to_owned(),
            action,
            app_id: Some(app_id.to_owned()),
            env,
            outcome: Outcome::Ok,
            reason: None,
            mfa_at: who.claims.mfa_at,
            mfa_method: who.claims.mfa_method.clone(),
            detail,
        }
    }
}
