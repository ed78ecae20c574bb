//! Who may call which deploy RPC: one entry per method of every service
//! this binary serves, saying what the caller needs. The service layer
//! enforces it (padlocked use cases through `App::authorize`, inside the
//! change that carries the action out); this table is what a reviewer and
//! an operator read, and its tests fail when a method has no entry, so a
//! new RPC cannot ship without its rule (`docs/rules.md` is rendered from
//! it).

use std::fmt;

use super::{Action, Env, MaxAge, Policy, Requirement};

/// Roles (from auth's token) that may create apps.
pub const APP_CREATOR_ROLES: [&str; 2] = ["operator", "support"];

/// What one RPC needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodRule {
    /// `package.Service/Method`.
    pub method: &'static str,
    pub caller: Caller,
    pub scope: Scope,
    pub second_factor: SecondFactor,
}

/// Who may call at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anyone,
    /// A valid access token from auth.
    Token,
    /// A valid access token carrying one of these roles.
    Role(&'static [&'static str]),
}

/// What the caller must be or hold in the app the request names, checked
/// in the same transaction as the change it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    None,
    /// The caller's own apps only.
    OwnApps,
    Member,
    /// A member with the Deploy role (or the Technical Contact).
    DeployRole,
    /// The node permission or Technical Contact the policy names for this
    /// action ([`Action::requirement`]).
    Action(Action),
}

/// Whether a fresh second factor is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    No,
    /// As the policy says for this action on the request's environment: by
    /// default on production, within 8 hours (`--max-age` changes it).
    Policy(Action),
    /// Always, within this max age.
    Always {
        max_age: MaxAge,
    },
}

const TOKEN: Caller = Caller::Token;
const APP_CREATORS: Caller = Caller::Role(&APP_CREATOR_ROLES);

const fn rule(
    method: &'static str,
    caller: Caller,
    scope: Scope,
    second_factor: SecondFactor,
) -> MethodRule {
    MethodRule {
        method,
        caller,
        scope,
        second_factor,
    }
}

/// The table, in contract order.
pub const RULES: &[MethodRule] = &[
    rule(
        "padlock.deploy.v1.AppService/CreateApp",
        APP_CREATORS,
        Scope::None,
        SecondFactor::Always {
            max_age: MaxAge::DEFAULT,
        },
    ),
    rule(
        "padlock.deploy.v1.AppService/GetApp",
        TOKEN,
        Scope::Member,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.AppService/ListApps",
        TOKEN,
        Scope::OwnApps,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.AppService/AddTeamMember",
        TOKEN,
        Scope::Action(Action::ChangeTeam),
        SecondFactor::Policy(Action::ChangeTeam),
    ),
    rule(
        "padlock.deploy.v1.AppService/RemoveTeamMember",
        TOKEN,
        Scope::Action(Action::ChangeTeam),
        SecondFactor::Policy(Action::ChangeTeam),
    ),
    rule(
        "padlock.deploy.v1.AppService/ListTeamMembers",
        TOKEN,
        Scope::Member,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.AppService/ListEnvironments",
        TOKEN,
        Scope::Member,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.PackageService/UploadPackage",
        TOKEN,
        Scope::DeployRole,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.PackageService/ListPackages",
        TOKEN,
        Scope::Member,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.PackageService/DeployPackage",
        TOKEN,
        Scope::Action(Action::DeployPackage),
        SecondFactor::Policy(Action::DeployPackage),
    ),
    rule(
        "padlock.deploy.v1.PackageService/TransportPackage",
        TOKEN,
        Scope::Action(Action::TransportPackage),
        SecondFactor::Policy(Action::TransportPackage),
    ),
    rule(
        "padlock.deploy.v1.PackageService/ListDeployments",
        TOKEN,
        Scope::Member,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.NodeService/GetNodeDetails",
        TOKEN,
        Scope::Action(Action::GetNodeDetails),
        SecondFactor::Policy(Action::GetNodeDetails),
    ),
    rule(
        "padlock.deploy.v1.NodeService/DownloadBackup",
        TOKEN,
        Scope::Action(Action::DownloadBackup),
        SecondFactor::Policy(Action::DownloadBackup),
    ),
    rule(
        "padlock.deploy.v1.PermissionService/GrantNodePermissions",
        TOKEN,
        Scope::Action(Action::ChangeNodePermissions),
        SecondFactor::Policy(Action::ChangeNodePermissions),
    ),
    rule(
        "padlock.deploy.v1.PermissionService/RevokeNodePermissions",
        TOKEN,
        Scope::Action(Action::ChangeNodePermissions),
        SecondFactor::Policy(Action::ChangeNodePermissions),
    ),
    rule(
        "padlock.deploy.v1.PermissionService/ListNodePermissions",
        TOKEN,
        Scope::Member,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.PolicyService/ListActions",
        TOKEN,
        Scope::None,
        SecondFactor::No,
    ),
    rule(
        "padlock.deploy.v1.PolicyService/CheckAccess",
        TOKEN,
        Scope::None,
        SecondFactor::No,
    ),
    rule(
        "grpc.health.v1.Health/Check",
        Caller::Anyone,
        Scope::None,
        SecondFactor::No,
    ),
    rule(
        "grpc.health.v1.Health/Watch",
        Caller::Anyone,
        Scope::None,
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
            Caller::Token => f.write_str("access token"),
            Caller::Role(roles) => write!(f, "access token with role {}", roles.join(" or ")),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::None => f.write_str("-"),
            Scope::OwnApps => f.write_str("own apps only"),
            Scope::Member => f.write_str("team member"),
            Scope::DeployRole => f.write_str("Deploy role or Technical Contact"),
            Scope::Action(action) => match action.requirement() {
                Requirement::TechnicalContact => f.write_str("Technical Contact"),
                Requirement::Permission(p) => write!(
                    f,
                    "{} on the environment (or Technical Contact)",
                    p.as_str().to_uppercase()
                ),
            },
        }
    }
}

impl fmt::Display for SecondFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecondFactor::No => f.write_str("-"),
            SecondFactor::Policy(action) => {
                let default = Policy::default();
                let padlocked: Vec<&str> = Env::ALL
                    .into_iter()
                    .filter(|env| default.rule(*action, *env).padlock)
                    .map(|env| env.as_str())
                    .collect();
                write!(
                    f,
                    "on {} (policy `{action}`), within {} h by default",
                    padlocked.join(", "),
                    MaxAge::DEFAULT.secs() / 3600
                )
            }
            SecondFactor::Always { max_age } => {
                write!(f, "always, within {} h", max_age.secs() / 3600)
            }
        }
    }
}

/// The table as Markdown rows, for `docs/rules.md`.
pub fn markdown() -> String {
    let mut out =
        String::from("| method | caller | in the app | fresh second factor |\n|---|---|---|---|\n");
    for r in RULES {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            r.method, r.caller, r.scope, r.second_factor
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
            padlock_proto::DEPLOY_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ];
        let listed = RULES.iter().map(|r| r.method);
        if let Err(faults) = padlock_proto::check_rule_table(&served, listed) {
            panic!("the rule table does not match what is served: {faults}");
        }
    }

    #[test]
    fn everything_that_changes_who_reaches_production_is_padlocked() {
        for method in [
            "padlock.deploy.v1.AppService/CreateApp",
            "padlock.deploy.v1.AppService/AddTeamMember",
            "padlock.deploy.v1.AppService/RemoveTeamMember",
            "padlock.deploy.v1.PermissionService/GrantNodePermissions",
            "padlock.deploy.v1.PermissionService/RevokeNodePermissions",
        ] {
            let rule = rule_for(method).unwrap_or_else(|| panic!("{method} has a rule"));
            assert_ne!(rule.second_factor, SecondFactor::No, "{method}");
        }
    }

    #[test]
    fn the_documented_table_is_current() {
        let doc = include_str!("../../../../docs/rules.md");
        assert!(
            doc.contains(&markdown()),
            "docs/rules.md is out of date; paste this under \"deploy\":\n{}",
            markdown()
        );
    }
}
