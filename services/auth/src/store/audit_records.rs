//! Appending to the auth audit trail (the chain is `audit_chain`) and
//! finding records in it.

use padlock_runtime::audit;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entity::audit_event;
use super::{AuditEvent, AuditRecord, Result, Store, audit_chain};

impl Store {
    /// Appends one record to the audit chain, in a transaction of its own.
    pub async fn audit(&self, e: AuditEvent) -> Result<()> {
        self.audit_all(vec![e]).await
    }

    /// Appends `events` to the audit chain, in order, in one transaction.
    pub async fn audit_all(&self, events: Vec<AuditEvent>) -> Result<()> {
        let txn = audit::begin(&self.db).await?;
        insert_audit(&txn, events).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The newest `limit` audit records about `subject` (all when `None`).
    pub async fn audit_events(
        &self,
        subject: Option<&str>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>> {
        self.find_audit_events(&AuditQuery {
            subject: subject.map(str::to_owned),
            limit,
            ..Default::default()
        })
        .await
    }

    /// Audit records matching `q`, newest first.
    pub(crate) async fn find_audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let mut query = audit_event::Entity::find();
        if let Some(subject) = &q.subject {
            query = query.filter(audit_event::Column::Subject.eq(subject));
        }
        if let Some(kind) = &q.kind {
            query = query.filter(audit_event::Column::Kind.eq(kind));
        }
        if let Some(since) = q.since {
            query = query.filter(audit_event::Column::At.gte(since));
        }
        if let Some(until) = q.until {
            query = query.filter(audit_event::Column::At.lt(until));
        }
        if let Some(before) = q.before_id {
            query = query.filter(audit_event::Column::Id.lt(before));
        }
        let rows = query
            .order_by_desc(audit_event::Column::Id)
            .limit(q.limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.id,
                at: r.at,
                kind: r.kind,
                outcome: r.outcome,
                actor: r.actor,
                subject: r.subject,
                detail: r.detail,
            })
            .collect())
    }
}

/// A filter over the audit trail; `before_id` pages backwards.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditQuery {
    pub subject: Option<String>,
    pub kind: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: u64,
}

/// Appends `events` to the audit chain, in order, in `txn` (begun with
/// [`audit::begin`]): one head read and one INSERT however many there are.
/// Call it after the transaction's other writes.
pub(super) async fn insert_audit(txn: &DatabaseTransaction, events: Vec<AuditEvent>) -> Result<()> {
    let records = events.into_iter().map(audit_chain::values).collect();
    audit::append(txn, &audit_chain::CHAIN, records).await?;
    Ok(())
}
