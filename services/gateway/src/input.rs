//! Reading what the browser sends: JSON bodies, query strings and path
//! segments, checked field by field before anything is called. Every
//! problem becomes a field violation, so one 400 names them all; values
//! are never echoed back (a password in the wrong field stays private).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use padlock_proto::deploy::v1::{Action, Environment, NodePermission, TeamRole};
use padlock_runtime::status::Violations;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::names::{self, Named};

/// Largest JSON body accepted; every API body is a few small fields.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Named values from a JSON object or a query string, read by typed
/// accessors that record what is missing or malformed. Call
/// [`Fields::finish`] before using what they returned.
#[derive(Debug, Default)]
pub struct Fields {
    values: Map<String, Value>,
    violations: Violations,
    /// The body was no JSON object: that is the one violation to report.
    unreadable: bool,
}

impl Fields {
    /// Fields of a JSON object; anything else is one violation of `body`.
    pub fn from_json(bytes: &[u8]) -> Self {
        let mut fields = Fields::default();
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(values)) => fields.values = values,
            Ok(_) => {
                fields.violations.add("body", "must be a JSON object");
                fields.unreadable = true;
            }
            Err(e) => {
                fields.unreadable = true;
                fields.violations.add(
                    "body",
                    format!("not valid JSON (line {}, column {})", e.line(), e.column()),
                );
            }
        }
        fields
    }

    /// Fields of a query string (every value a string).
    pub fn from_query(query: HashMap<String, String>) -> Self {
        Fields {
            values: query
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            ..Fields::default()
        }
    }

    /// A required string (it may be empty; the backend judges its content).
    pub fn string(&mut self, field: &str) -> String {
        match self.values.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                self.flag(field, "must be a string");
                String::new()
            }
            None => {
                self.flag(field, "required");
                String::new()
            }
        }
    }

    /// An optional string; `null` counts as absent.
    pub fn optional_string(&mut self, field: &str) -> Option<String> {
        match self.values.get(field) {
            None | Some(Value::Null) => None,
            Some(_) => Some(self.string(field)),
        }
    }

    pub fn environment(&mut self, field: &str) -> Environment {
        let name = self.string(field);
        self.named(field, &name).unwrap_or(Environment::Unspecified)
    }

    /// Absent means "every environment".
    pub fn optional_environment(&mut self, field: &str) -> Environment {
        match self.optional_string(field) {
            None => Environment::Unspecified,
            Some(name) => self.named(field, &name).unwrap_or(Environment::Unspecified),
        }
    }

    pub fn role(&mut self, field: &str) -> TeamRole {
        let name = self.string(field);
        self.named(field, &name).unwrap_or(TeamRole::Unspecified)
    }

    pub fn action(&mut self, field: &str) -> Action {
        let name = self.string(field);
        self.named(field, &name).unwrap_or(Action::Unspecified)
    }

    /// A required array of permission names.
    pub fn permissions(&mut self, field: &str) -> Vec<NodePermission> {
        let Some(value) = self.values.get(field) else {
            self.flag(field, "required");
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            self.flag(field, "must be an array of permission names");
            return Vec::new();
        };
        let parsed: Vec<Option<NodePermission>> = items
            .iter()
            .map(|item| item.as_str().and_then(names::parse::<NodePermission>))
            .collect();
        if parsed.iter().any(Option::is_none) {
            self.flag(
                field,
                format!("each must be {}", names::one_of::<NodePermission>()),
            );
        }
        parsed.into_iter().flatten().collect()
    }

    /// The value a JSON name stands for; else a violation listing the names.
    fn named<T: Named>(&mut self, field: &str, name: &str) -> Option<T> {
        // A missing field was reported by `string` already.
        if !self.values.contains_key(field) || !self.values[field].is_string() {
            return None;
        }
        let parsed = names::parse::<T>(name);
        if parsed.is_none() {
            self.flag(field, format!("must be one of {}", names::one_of::<T>()));
        }
        parsed
    }

    fn flag(&mut self, field: &str, description: impl Into<String>) {
        if !self.unreadable {
            self.violations.add(field, description);
        }
    }

    /// `Ok` when every accessor was satisfied, else the 400 naming them.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.violations))
        }
    }
}

/// A JSON request body as [`Fields`]; too large or unreadable is a 400 or
/// 413 in the gateway's JSON error form.
#[derive(Debug)]
pub struct JsonBody(pub Fields);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let body: Body = req.into_body();
        match axum::body::to_bytes(body, MAX_JSON_BYTES).await {
            Ok(bytes) => Ok(JsonBody(Fields::from_json(&bytes))),
            Err(_) => Err(ApiError::payload_too_large(MAX_JSON_BYTES as u64)),
        }
    }
}

/// The query string as [`Fields`].
#[derive(Debug)]
pub struct QueryFields(pub Fields);

impl<S: Send + Sync> FromRequestParts<S> for QueryFields {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Query(query)) => Ok(QueryFields(Fields::from_query(query))),
            Err(_) => {
                let mut v = Violations::new();
                v.add("query", "not a valid query string");
                Err(ApiError::invalid(v))
            }
        }
    }
}

/// Path segments, e.g. `{app_id}`; a segment that does not decode is a 400.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            Err(_) => {
                let mut v = Violations::new();
                v.add("path", "a path segment is not valid UTF-8");
                Err(ApiError::invalid(v))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(error: ApiError) -> Vec<String> {
        error.body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_missing_or_malformed_field_is_named_once() {
        let mut f = Fields::from_json(br#"{"username": 7, "permissions": ["transport", "root"]}"#);
        let _ = f.string("username");
        let _ = f.environment("environment");
        let _ = f.permissions("permissions");
        assert_eq!(
            fields_of(f.finish().unwrap_err()),
            ["username", "environment", "permissions"]
        );
    }

    #[test]
    fn bad_json_is_one_violation_of_body_and_echoes_nothing() {
        let mut f = Fields::from_json(br#"{"password": "hunter2""#);
        let _ = f.string("username");
        let _ = f.string("password");
        let e = f.finish().unwrap_err();
        assert_eq!(fields_of(e.clone()), ["body"]);
        assert!(!serde_json::to_string(&e.body).unwrap().contains("hunter2"));
        let f = Fields::from_json(b"[1]");
        assert_eq!(fields_of(f.finish().unwrap_err()), ["body"]);
    }

    #[test]
    fn names_are_parsed_and_checked() {
        let mut f = Fields::from_json(
            br#"{"environment": "production", "role": "deploy", "action": "transport_package",
                 "permissions": ["transport", "logs"]}"#,
        );
        assert_eq!(f.environment("environment"), Environment::Production);
        assert_eq!(f.role("role"), TeamRole::Deploy);
        assert_eq!(f.action("action"), Action::TransportPackage);
        assert_eq!(
            f.permissions("permissions"),
            [NodePermission::Transport, NodePermission::Logs]
        );
        assert_eq!(f.optional_environment("missing"), Environment::Unspecified);
        assert!(f.finish().is_ok());

        let mut f = Fields::from_json(br#"{"environment": "PRODUCTION"}"#);
        assert_eq!(
            f.optional_environment("environment"),
            Environment::Unspecified
        );
        assert_eq!(fields_of(f.finish().unwrap_err()), ["environment"]);
    }
}
