//! The JSON names of the contracts' enums (docs/http.md "Names in JSON"),
//! both ways, and timestamps as RFC 3339 strings. A name is derived from
//! the generated enum, never written by hand: the proto name without its
//! prefix, lower-cased (`ENVIRONMENT_PRODUCTION` is `"production"`). `None`
//! means an unspecified (`*_UNSPECIFIED`) or unknown value: `null` in a
//! response, a field violation in a request.

use chrono::{DateTime, SecondsFormat};
use padlock_proto::auth::v1::{FactorMethod, FactorState};
use padlock_proto::deploy::v1::{Action, Environment, NodePermission, TeamRole};
use prost_types::Timestamp;
use serde_json::Value;

/// A proto enum with JSON names: what prost generates for every enum, plus
/// the prefix its value names share.
pub(crate) trait Named: Sized + Copy + TryFrom<i32> {
    /// `ENVIRONMENT_` for `Environment`.
    const PREFIX: &'static str;
    fn proto_name(self) -> &'static str;
    fn from_proto_name(name: &str) -> Option<Self>;
}

macro_rules! named {
    ($($enum:ty => $prefix:literal),* $(,)?) => {$(
        impl Named for $enum {
            const PREFIX: &'static str = $prefix;
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        }
    )*};
}

named! {
    Environment => "ENVIRONMENT_",
    TeamRole => "TEAM_ROLE_",
    NodePermission => "NODE_PERMISSION_",
    Action => "ACTION_",
    FactorMethod => "FACTOR_METHOD_",
    FactorState => "FACTOR_STATE_",
}

/// The suffix of the zero value that means "not given"; `FACTOR_METHOD_NONE`
/// is no such value: `none` is a real answer (the user has no factor).
const UNSPECIFIED: &str = "UNSPECIFIED";

/// The JSON name of `value`, e.g. `"production"`.
pub(crate) fn name_of<T: Named>(value: T) -> Option<String> {
    let suffix = value.proto_name().strip_prefix(T::PREFIX)?;
    (suffix != UNSPECIFIED).then(|| suffix.to_ascii_lowercase())
}

/// The JSON name of a wire value, or `None`.
pub(crate) fn name<T: Named>(value: i32) -> Option<String> {
    name_of(T::try_from(value).ok()?)
}

/// The JSON name of a wire value, or `null`.
pub(crate) fn json<T: Named>(value: i32) -> Value {
    name::<T>(value).map_or(Value::Null, Value::from)
}

/// The value a JSON name stands for; only the exact lower-case name.
pub(crate) fn parse<T: Named>(name: &str) -> Option<T> {
    if name.is_empty()
        || name
            .bytes()
            .any(|b| !matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
    {
        return None;
    }
    let upper = name.to_ascii_uppercase();
    if upper == UNSPECIFIED {
        return None;
    }
    T::from_proto_name(&format!("{}{upper}", T::PREFIX))
}

/// Every JSON name of `T`, in wire order (the values are numbered from 0
/// without gaps).
pub(crate) fn all<T: Named>() -> Vec<String> {
    (0..)
        .map_while(|v| T::try_from(v).ok())
        .filter_map(name_of)
        .collect()
}

/// `"test, acceptance or production"`: the names of `T` for a message.
pub(crate) fn one_of<T: Named>() -> String {
    let mut names = all::<T>();
    let last = names.pop().unwrap_or_default();
    if names.is_empty() {
        last
    } else {
        format!("{} or {last}", names.join(", "))
    }
}

/// A timestamp as RFC 3339 in UTC (`2025-01-31T12:00:00Z`), or `null`.
pub(crate) fn time(ts: Option<&Timestamp>) -> Value {
    ts.and_then(|ts| {
        let nanos = u32::try_from(ts.nanos).ok()?;
        DateTime::from_timestamp(ts.seconds, nanos)
    })
    .map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    })
}

/// A string, or `null` when it is empty (proto3's "unset").
pub(crate) fn text_or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::from(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTTP API's names (docs/http.md "Names in JSON",
    /// tests/e2e/test_gateway_http.py): deriving them must not change one.
    #[test]
    fn the_derived_names_are_the_apis() {
        assert_eq!(all::<Environment>(), ["test", "acceptance", "production"]);
        assert_eq!(
            all::<NodePermission>(),
            ["transport", "operate", "backups", "logs"]
        );
        assert_eq!(all::<TeamRole>(), ["technical_contact", "deploy", "member"]);
        assert_eq!(
            all::<Action>(),
            [
                "deploy_package",
                "transport_package",
                "get_node_details",
                "download_backup",
                "change_node_permissions",
                "change_team",
            ]
        );
        assert_eq!(all::<FactorMethod>(), ["none", "totp", "sms"]);
        assert_eq!(all::<FactorState>(), ["none", "pending", "active"]);
        assert_eq!(one_of::<Environment>(), "test, acceptance or production");
    }

    fn round_trip<T: Named + PartialEq + std::fmt::Debug>() {
        for name in all::<T>() {
            let value = parse::<T>(&name).expect(&name);
            assert_eq!(name_of(value).as_deref(), Some(name.as_str()));
        }
    }

    #[test]
    fn names_round_trip() {
        round_trip::<Environment>();
        round_trip::<NodePermission>();
        round_trip::<TeamRole>();
        round_trip::<Action>();
        round_trip::<FactorMethod>();
        round_trip::<FactorState>();
    }

    #[test]
    fn unspecified_and_unknown_values_have_no_name() {
        assert_eq!(name::<Environment>(0), None);
        assert_eq!(name::<Environment>(99), None);
        assert_eq!(name::<NodePermission>(0), None);
        assert_eq!(name::<TeamRole>(0), None);
        assert_eq!(name::<Action>(0), None);
        assert_eq!(json::<Action>(0), Value::Null);
        assert_eq!(json::<Environment>(3), Value::from("production"));
        for bad in [
            "PRODUCTION",
            "Production",
            "ENVIRONMENT_PRODUCTION",
            "environment_production",
            "unspecified",
            "UNSPECIFIED",
            "",
            " production",
            "production ",
        ] {
            assert_eq!(parse::<Environment>(bad), None, "{bad:?}");
        }
        assert_eq!(name::<FactorMethod>(0).as_deref(), Some("none"));
        assert_eq!(name::<FactorState>(1).as_deref(), Some("pending"));
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
