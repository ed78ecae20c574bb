//! auth's audit trail as a hash chain (`padlock_runtime::audit`): which
//! columns are hashed in which order, the migration that adds the chain,
//! and its check for `padlock-auth audit verify`.

use padlock_runtime::audit::{self, Chain, Kind, Value};

use super::{AuditEvent, Outcome, Result};

/// `audit_events`, hashed as `at, kind, outcome, actor, subject,
/// session_id, detail` (every column but `id`).
pub(super) const CHAIN: Chain = Chain {
    domain: "padlock-auth audit_events v1",
    table: "audit_events",
    columns: &[
        ("at", Kind::Int),
        ("kind", Kind::Text),
        ("outcome", Kind::Text),
        ("actor", Kind::Text),
        ("subject", Kind::Text),
        ("session_id", Kind::Text),
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
        Value::Text(Some(e.kind.to_owned())),
        Value::Text(Some(outcome.to_owned())),
        Value::Text(e.actor),
        Value::Text(e.subject),
        Value::Text(e.session_id),
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
