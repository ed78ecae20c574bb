//! Each app's permissions version: a counter in `apps` that every change to
//! the app's team or node permissions bumps in the same transaction, so a
//! replica that cached what someone holds can tell with one primary-key
//! read whether it is still current (`crate::cache::HoldingsCache`).

use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::big_integer;

use super::Result;

const APPS: &str = "apps";
const ID: &str = "id";
const VERSION: &str = "permissions_version";

/// Adds `apps.permissions_version`, 0 for existing apps.
pub(super) struct AddVersion;

// Names are stored in `seaql_migrations`; never rename one that shipped.
impl MigrationName for AddVersion {
    fn name(&self) -> &str {
        "m20261206_000001_permissions_version"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddVersion {
    async fn up(&self, m: &SchemaManager) -> std::result::Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new(APPS))
                .add_column(big_integer(Alias::new(VERSION)).default(0))
                .to_owned(),
        )
        .await
    }
}

/// Bumps `app_id`'s version; call inside the transaction that changes its
/// team or node permissions, so the change and the bump commit together.
pub(super) async fn bump(conn: &impl ConnectionTrait, app_id: &str) -> Result<()> {
    let update = Query::update()
        .table(Alias::new(APPS))
        .value(Alias::new(VERSION), Expr::col(Alias::new(VERSION)).add(1))
        .and_where(Expr::col(Alias::new(ID)).eq(app_id))
        .to_owned();
    conn.execute(&update).await?;
    Ok(())
}

/// `app_id`'s version, or `None` if there is no such app.
pub(super) async fn read(conn: &impl ConnectionTrait, app_id: &str) -> Result<Option<i64>> {
    let query = Query::select()
        .column(Alias::new(VERSION))
        .from(Alias::new(APPS))
        .and_where(Expr::col(Alias::new(ID)).eq(app_id))
        .to_owned();
    match conn.query_one(&query).await? {
        Some(row) => Ok(Some(row.try_get("", VERSION)?)),
        None => Ok(None),
    }
}
