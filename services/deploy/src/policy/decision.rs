//! The step-up decision (docs/design.md, "The step-up rule"): may this
//! caller do this action on this environment now? A pure function of the
//! verified token, the policy, what the caller holds and the time; a
//! refusal is a domain value ([`Refusal`]), which `crate::error` renders.

use padlock_proto::Reason;
use padlock_token::{Claims, TokenError};

use super::{Action, Env, MaxAge, Permission, Policy, Requirement, Rule};

/// How far `mfa_at` may lie in the future: the clock skew tolerated between
/// auth and deploy, the same 60 s the token verifier allows (docs/design.md,
/// "Identity, sessions and tokens").
pub const MFA_LEEWAY_SECS: i64 = padlock_token::LEEWAY_SECS;

/// What the caller holds, as the store knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Ids of the apps the caller is the Technical Contact of.
    pub technical_contact_of: Vec<String>,
    pub grants: Vec<Grant>,
}

/// One node permission held on one environment of one app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub app_id: String,
    pub env: Env,
    pub permission: Permission,
}

impl Holdings {
    pub fn is_technical_contact(&self, app_id: &str) -> bool {
        self.technical_contact_of.iter().any(|a| a == app_id)
    }

    /// Whether `requirement` holds on `env` of `app_id`. The app's Technical
    /// Contact holds every node permission of that app implicitly.
    pub fn satisfies(&self, requirement: Requirement, app_id: &str, env: Env) -> bool {
        if self.is_technical_contact(app_id) {
            return true;
        }
        match requirement {
            Requirement::TechnicalContact => false,
            Requirement::Permission(permission) => self
                .grants
                .iter()
                .any(|g| g.app_id == app_id && g.env == env && g.permission == permission),
        }
    }
}

/// Why an action was refused, in the order the step-up rule checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    TokenInvalid,
    MfaRequired,
    MfaExpired,
    NodePermissionMissing,
}

impl Refusal {
    /// The `google.rpc.ErrorInfo` reason clients branch on.
    pub fn reason(self) -> Reason {
        match self {
            Refusal::TokenInvalid => Reason::TokenInvalid,
            Refusal::MfaRequired => Reason::MfaRequired,
            Refusal::MfaExpired => Reason::MfaExpired,
            Refusal::NodePermissionMissing => Reason::NodePermissionMissing,
        }
    }

    /// The `ErrorInfo.reason` for this refusal under `rule`: as
    /// [`Refusal::reason`], except that a missing requirement that is "be
    /// the Technical Contact" says so (`TECHNICAL_CONTACT_REQUIRED`, as the
    /// team RPCs do), since no node permission would help.
    pub fn reason_under(self, rule: &Rule) -> Reason {
        match (self, rule.requirement) {
            (Refusal::NodePermissionMissing, Requirement::TechnicalContact) => {
                Reason::TechnicalContactRequired
            }
            _ => self.reason(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason().as_str_name())
    }
}

/// The outcome of [`decide`] with what a client needs to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Result<(), Refusal>,
    /// The rule that applied.
    pub rule: Rule,
    /// `mfa_at + max_age`: when the caller's second factor stops counting
    /// for this action; `None` without `mfa_at` (or without valid claims).
    pub mfa_expires_at: Option<i64>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The refusal's `ErrorInfo.reason` ([`Refusal::reason_under`]); `None`
    /// when allowed.
    pub fn reason(&self) -> Option<Reason> {
        self.outcome.err().map(|r| r.reason_under(&self.rule))
    }
}

/// May the bearer of `token` do `action` on `env` of `app_id` at `now`?
///
/// Checks in docs/design.md's order and stops at the first failure:
/// 1. a valid token, else `TOKEN_INVALID`;
/// 2. with a padlock, `mfa_at` present, else `MFA_REQUIRED`;
/// 3. with a padlock, `now - mfa_at <= max_age` and `mfa_at` no further than
///    [`MFA_LEEWAY_SECS`] in the future, else `MFA_EXPIRED`;
/// 4. the rule's requirement held on `(app_id, env)`, else
///    `NODE_PERMISSION_MISSING`.
///
/// `Err(TokenError::MfaInFuture)` is the verifier's step-3 finding on an
/// otherwise valid token, so on a padlocked action it is `MFA_EXPIRED`.
/// Without a padlock it is `TOKEN_INVALID`: the verifier returns no claims
/// then, so step 4 cannot run, and a token claiming a second factor from the
/// future is not one to act on.
pub fn decide(
    token: Result<&Claims, &TokenError>,
    policy: &Policy,
    action: Action,
    app_id: &str,
    env: Env,
    holdings: &Holdings,
    now: i64,
) -> Decision {
    let rule = policy.rule(action, env);
    let decision = |outcome, mfa_expires_at| Decision {
        outcome,
        rule,
        mfa_expires_at,
    };
    let claims = match token {
        Ok(claims) => claims,
        Err(TokenError::MfaInFuture) if rule.padlock => {
            return decision(Err(Refusal::MfaExpired), None);
        }
        Err(_) => return decision(Err(Refusal::TokenInvalid), None),
    };
    let mfa_expires_at = claims
        .mfa_at
        .map(|at| at.saturating_add(rule.max_age.secs()));
    if rule.padlock
        && let Err(refusal) = second_factor(claims, rule.max_age, now)
    {
        return decision(Err(refusal), mfa_expires_at);
    }
    if !holdings.satisfies(rule.requirement, app_id, env) {
        return decision(Err(Refusal::NodePermissionMissing), mfa_expires_at);
    }
    decision(Ok(()), mfa_expires_at)
}

/// Steps 2 and 3 of the rule: a second factor verified at most `max_age`
/// before `now`, and not further than [`MFA_LEEWAY_SECS`] after it.
pub fn second_factor(claims: &Claims, max_age: MaxAge, now: i64) -> Result<(), Refusal> {
    let Some(mfa_at) = claims.mfa_at else {
        return Err(Refusal::MfaRequired);
    };
    let too_old = now.saturating_sub(mfa_at) > max_age.secs();
    let from_the_future = mfa_at > now.saturating_add(MFA_LEEWAY_SECS);
    if too_old || from_the_future {
        return Err(Refusal::MfaExpired);
    }
    Ok(())
}
