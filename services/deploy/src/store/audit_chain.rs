//! deploy's audit trail as a hash chain (`padlock_runtime::audit`): which
//! columns are hashed in which order, the migration that adds the chain,
//! and its check for `padlock-deploy audit verify`.

use padlock_runtime::audit::{self, Chain, Kind, Value};

use super::{AuditEvent, Outcome, Result};

/// `audit_events`, hashed as `at, actor, action, app_id, environment,
/// outcome, reason, mfa_at, mfa_method, detail` (every column but `id`).
pub(super) const CHAIN: Chain = Chain {
    domain: "padlock-deploy audit_events v1",
    table: "audit_events",
    columns: &[
        ("at", Kind::Int),
        ("actor", Kind::Text),
        ("action", Kind::Text),
        ("app_id", Kind::Text),
        ("environment", Kind::Text),
        ("outcome", Kind::Text),
        ("reason", Kind::Text),
        ("mfa_at", Kind::Int),
        ("mfa_method", Kind::Text),
        ("detail", Kind::Text),
    ],
};

/// `e`'s values in [`CHAIN`]'s column order.
pub(super) fn values(e: AuditEvent) -> Vec<Value> {
    let outcome = match e.outcome {
        Outcome::Ok => "ok",
        Outcome::Refused => "refused",
    };
    vec![
        Value::Int(Some(e.at)),
        Value::Text(Some(e.actor)),
        Value::Text(Some(e.action.to_owned())),
        Value::Text(e.app_id),
        Value::Text(e.env.map(|env| env.as_str().to_owned())),
        Value::Text(Some(outcome.to_owned())),
        Value::Text(e.reason.map(str::to_owned)),
        Value::Int(e.mfa_at),
        Value::Text(e.mfa_method),
        Value::Text(Some(e.detail)),
    ]
}

/// The chain's migration, in the store's `Migrator`.
pub(super) const MIGRATION: audit::AddChain = audit::AddChain {
    name: "m20261205_000001_audit_chain",
    chain: &CHAIN,
};

/// `audit verify`: walks the chain in the database at `url`.
pub async fn verify(url: &str, expect: Option<audit::Link>) -> Result<audit::Verdict> {
    Ok(audit::verify_at(url, &CHAIN, expect).await?)
}
