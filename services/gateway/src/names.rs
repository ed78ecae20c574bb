//! The friendly JSON names of the contracts' enums (API.md "Names in
//! JSON"), both ways, and timestamps as RFC 3339 strings. `None` means an
//! unspecified or unknown value: `null` in a response, a field violation in
//! a request.

use chrono::{DateTime, SecondsFormat};
use padlock_proto::auth::v1::{FactorMethod, FactorState};
use padlock_proto::deploy::v1::{Action, Environment, NodePermission, TeamRole};
use prost_types::Timestamp;
use serde_json::Value;

pub fn environment(value: i32) -> Option<&'static str> {
    match Environment::try_from(value).ok()? {
        Environment::Test => Some("test"),
        Environment::Acceptance => Some("acceptance"),
        Environment::Production => Some("production"),
        Environment::Unspecified => None,
    }
}

pub fn parse_environment(name: &str) -> Option<Environment> {
    match name {
        "test" => Some(Environment::Test),
        "acceptance" => Some(Environment::Acceptance),
        "production" => Some(Environment::Production),
        _ => None,
    }
}

pub fn permission(value: i32) -> Option<&'static str> {
    match NodePermission::try_from(value).ok()? {
        NodePermission::Transport => Some("transport"),
        NodePermission::Operate => Some("operate"),
        NodePermission::Backups => Some("backups"),
        NodePermission::Logs => Some("logs"),
        NodePermission::Unspecified => None,
    }
}

pub fn parse_permission(name: &str) -> Option<NodePermission> {
    match name {
        "transport" => Some(NodePermission::Transport),
        "operate" => Some(NodePermission::Operate),
        "backups" => Some(NodePermission::Backups),
        "logs" => Some(NodePermission::Logs),
        _ => None,
    }
}

pub fn role(value: i32) -> Option<&'static str> {
    match TeamRole::try_from(value).ok()? {
        TeamRole::TechnicalContact => Some("technical_contact"),
        TeamRole::Deploy => Some("deploy"),
        TeamRole::Member => Some("member"),
        TeamRole::Unspecified => None,
    }
}

pub fn parse_role(name: &str) -> Option<TeamRole> {
    match name {
        "technical_contact" => Some(TeamRole::TechnicalContact),
        "deploy" => Some(TeamRole::Deploy),
        "member" => Some(TeamRole::Member),
        _ => None,
    }
}

pub fn action(value: i32) -> Option<&'static str> {
    match Action::try_from(value).ok()? {
        Action::DeployPackage => Some("deploy_package"),
        Action::TransportPackage => Some("transport_package"),
        Action::GetNodeDetails => Some("get_node_details"),
        Action::DownloadBackup => Some("download_backup"),
        Action::ChangeNodePermissions => Some("change_node_permissions"),
        Action::ChangeTeam => Some("change_team"),
        Action::Unspecified => None,
    }
}

pub fn parse_action(name: &str) -> Option<Action> {
    match name {
        "deploy_package" => Some(Action::DeployPackage),
        "transport_package" => Some(Action::TransportPackage),
        "get_node_details" => Some(Action::GetNodeDetails),
        "download_backup" => Some(Action::DownloadBackup),
        "change_node_permissions" => Some(Action::ChangeNodePermissions),
        "change_team" => Some(Action::ChangeTeam),
        _ => None,
    }
}

/// `none` is a real answer here: the user has no factor.
pub fn factor_method(value: i32) -> Option<&'static str> {
    match FactorMethod::try_from(value).ok()? {
        FactorMethod::None => Some("none"),
        FactorMethod::Totp => Some("totp"),
        FactorMethod::Sms => Some("sms"),
    }
}

pub fn factor_state(value: i32) -> Option<&'static str> {
    match FactorState::try_from(value).ok()? {
        FactorState::None => Some("none"),
        FactorState::Pending => Some("pending"),
        FactorState::Active => Some("active"),
    }
}

/// A timestamp as RFC 3339 in UTC (`2025-01-31T12:00:00Z`), or `null`.
pub fn time(ts: Option<&Timestamp>) -> Value {
    ts.and_then(|ts| {
        let nanos = u32::try_from(ts.nanos).ok()?;
        DateTime::from_timestamp(ts.seconds, nanos)
    })
    .map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    })
}

/// A name, or `null` when the value is unspecified.
pub fn or_null(name: Option<&'static str>) -> Value {
    name.map_or(Value::Null, Value::from)
}

/// A string, or `null` when it is empty (proto3's "unset").
pub fn text_or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::from(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in [
            Environment::Test,
            Environment::Acceptance,
            Environment::Production,
        ] {
            assert_eq!(parse_environment(environment(e as i32).unwrap()), Some(e));
        }
        for p in [
            NodePermission::Transport,
            NodePermission::Operate,
            NodePermission::Backups,
            NodePermission::Logs,
        ] {
            assert_eq!(parse_permission(permission(p as i32).unwrap()), Some(p));
        }
        for r in [
            TeamRole::TechnicalContact,
            TeamRole::Deploy,
            TeamRole::Member,
        ] {
            assert_eq!(parse_role(role(r as i32).unwrap()), Some(r));
        }
        for a in [
            Action::DeployPackage,
            Action::TransportPackage,
            Action::GetNodeDetails,
            Action::DownloadBackup,
            Action::ChangeNodePermissions,
            Action::ChangeTeam,
        ] {
            assert_eq!(parse_action(action(a as i32).unwrap()), Some(a));
        }
    }

    #[test]
    fn unspecified_and_unknown_values_have_no_name() {
        assert_eq!(environment(0), None);
        assert_eq!(environment(99), None);
        assert_eq!(permission(0), None);
        assert_eq!(role(0), None);
        assert_eq!(action(0), None);
        assert_eq!(parse_environment("PRODUCTION"), None);
        assert_eq!(parse_environment("ENVIRONMENT_PRODUCTION"), None);
        assert_eq!(parse_environment(""), None);
        assert_eq!(factor_method(0), Some("none"));
        assert_eq!(factor_state(1), Some("pending"));
    }

    #[test]
    fn times_are_rfc_3339_utc() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(time(Some(&ts)), Value::from("2023-11-14T22:13:20Z"));
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        };
        assert_eq!(time(Some(&ts)), Value::from("2023-11-14T22:13:20.500Z"));
        assert_eq!(time(None), Value::Null);
    }
}
