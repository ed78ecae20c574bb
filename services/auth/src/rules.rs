//! Who may call which auth RPC: one entry per method of every service this
//! binary serves. The handlers enforce it (support's through
//! `Support::support_caller`); this table is what a reviewer and an
//! operator read, and its tests fail when a served method has no entry, so
//! a new RPC cannot ship without its rule (`docs/rules.md` is rendered
//! from it).

use std::fmt;

use crate::grpc::support::{SUPPORT_MAX_AGE_SECS, SUPPORT_ROLE};

/// What one RPC needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodRule {
    /// `package.Service/Method`.
    pub method: &'static str,
    pub caller: Caller,
    pub subject: Subject,
    pub second_factor: SecondFactor,
}

/// Who may call at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anyone,
    /// The opaque session token the request carries (not an access token).
    SessionToken,
    /// An access token of a live session.
    AccessToken,
    /// An access token of a live session whose user holds this role now.
    Role(&'static str),
}

/// Whose account the call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    None,
    /// The caller's own account or session.
    Own,
    /// Another user's account, never the caller's own
    /// (`SELF_SERVICE_FORBIDDEN`).
    Other,
    /// Any user's account, read only.
    Any,
}

/// Whether a second factor verified in this session is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    No,
    /// Verified within this many seconds.
    Within {
        max_age_secs: i64,
    },
}

const fn rule(
    method: &'static str,
    caller: Caller,
    subject: Subject,
    second_factor: SecondFactor,
) -> MethodRule {
    MethodRule {
        method,
        caller,
        subject,
        second_factor,
    }
}

const SUPPORT: Caller = Caller::Role(SUPPORT_ROLE);
const SUPPORT_STEP_UP: SecondFactor = SecondFactor::Within {
    max_age_secs: SUPPORT_MAX_AGE_SECS,
};
const OWN_FACTOR: Caller = Caller::AccessToken;

/// The table, in contract order.
pub const RULES: &[MethodRule] = &[
    rule(
        "padlock.auth.v1.SessionService/SignIn",
        Caller::Anyone,
        Subject::None,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.SessionService/Refresh",
        Caller::SessionToken,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.SessionService/SignOut",
        Caller::SessionToken,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.SessionService/WhoAmI",
        Caller::AccessToken,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.TwoFactorService/GetFactor",
        OWN_FACTOR,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.TwoFactorService/StartTotpEnrollment",
        OWN_FACTOR,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.TwoFactorService/StartSmsEnrollment",
        OWN_FACTOR,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.TwoFactorService/ConfirmEnrollment",
        OWN_FACTOR,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.TwoFactorService/SendSmsCode",
        OWN_FACTOR,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.TwoFactorService/Verify",
        OWN_FACTOR,
        Subject::Own,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.KeyService/GetJwks",
        Caller::Anyone,
        Subject::None,
        SecondFactor::No,
    ),
    rule(
        "padlock.auth.v1.SupportService/CreateUser",
        SUPPORT,
        Subject::None,
        SUPPORT_STEP_UP,
    ),
    rule(
        "padlock.auth.v1.SupportService/ResetFactor",
        SUPPORT,
        Subject::Other,
        SUPPORT_STEP_UP,
    ),
    rule(
        "padlock.auth.v1.SupportService/Unlock",
        SUPPORT,
        Subject::Other,
        SUPPORT_STEP_UP,
    ),
    rule(
        "padlock.auth.v1.SupportService/GetUserFactor",
        SUPPORT,
        Subject::Any,
        SUPPORT_STEP_UP,
    ),
    rule(
        "padlock.auth.v1.SupportService/ListAuditEvents",
        SUPPORT,
        Subject::Any,
        SUPPORT_STEP_UP,
    ),
    rule(
        "grpc.health.v1.Health/Check",
        Caller::Anyone,
        Subject::None,
        SecondFactor::No,
    ),
    rule(
        "grpc.health.v1.Health/Watch",
        Caller::Anyone,
        Subject::None,
        SecondFactor::No,
    ),
];

/// The rule for `method` (`package.Service/Method`), if it has one.
pub fn rule_for(method: &str) -> Option<&'static MethodRule> {
    RULES.iter().find(|r| r.method == method)
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Anyone => f.write_str("anyone"),
            Caller::SessionToken => f.write_str("session token"),
            Caller::AccessToken => f.write_str("access token, live session"),
            Caller::Role(role) => write!(f, "access token, live session, role {role}"),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::None => "-",
            Subject::Own => "own account",
            Subject::Other => "another user, never oneself",
            Subject::Any => "any user (read)",
        })
    }
}

impl fmt::Display for SecondFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecondFactor::No => f.write_str("-"),
            SecondFactor::Within { max_age_secs } => {
                write!(f, "within {} min, in this session", max_age_secs / 60)
            }
        }
    }
}

/// The table as Markdown rows, for `docs/rules.md`.
pub fn markdown() -> String {
    let mut out =
        String::from("| method | caller | acts on | fresh second factor |\n|---|---|---|---|\n");
    for r in RULES {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            r.method, r.caller, r.subject, r.second_factor
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_has_exactly_one_rule() {
        let served = [
            padlock_proto::AUTH_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ];
        let listed = RULES.iter().map(|r| r.method);
        if let Err(faults) = padlock_proto::check_rule_table(&served, listed) {
            panic!("the rule table does not match what is served: {faults}");
        }
    }

    #[test]
    fn every_support_method_needs_a_fresh_second_factor() {
        let support: Vec<_> = RULES
            .iter()
            .filter(|r| r.method.contains(".SupportService/"))
            .collect();
        assert_eq!(support.len(), 5);
        for r in support {
            assert_eq!(r.caller, Caller::Role(SUPPORT_ROLE), "{}", r.method);
            assert_eq!(r.second_factor, SUPPORT_STEP_UP, "{}", r.method);
        }
    }

    #[test]
    fn the_documented_table_is_current() {
        let doc = include_str!("../../../docs/rules.md");
        assert!(
            doc.contains(&markdown()),
            "docs/rules.md is out of date; paste this under \"auth\":\n{}",
            markdown()
        );
    }
}
