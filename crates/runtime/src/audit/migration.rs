//! The migration that adds the chain to an audit table of an older schema.

use super::*;

/// The migration that adds the chain to an existing audit table: the
/// `seq`, `prev_hash` and `hash` columns, links for the rows already there
/// in `id` order, and the unique index on `seq`. All or nothing, on SQLite
/// too.
#[derive(Debug)]
pub struct AddChain {
    /// Stored in `seaql_migrations`; never rename one that shipped.
    pub name: &'static str,
    pub chain: &'static Chain,
}

impl MigrationName for AddChain {
    fn name(&self) -> &str {
        self.name
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for AddChain {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_chain(m, self.chain).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

pub(super) async fn add_chain(m: &SchemaManager<'_>, chain: &Chain) -> Result<(), DbErr> {
    // SQLite takes one column per ALTER TABLE.
    for mut column in [
        big_integer_null(Alias::new(SEQ)),
        string_len_null(Alias::new(PREV_HASH), 64),
        string_len_null(Alias::new(HASH), 64),
    ] {
        m.alter_table(
            Table::alter()
                .table(Alias::new(chain.table))
                .add_column(&mut column)
                .to_owned(),
        )
        .await?;
    }
    let conn = m.get_connection();
    let mut link = Link::GENESIS;
    let mut last_id = i64::MIN;
    loop {
        // Every row is unlinked yet: page by primary key.
        let page = select_rows(chain)
            .and_where(Expr::col(chain.col(ID)).gt(last_id))
            .order_by(chain.col(ID), Order::Asc)
            .limit(PAGE)
            .to_owned();
        let rows = conn.query_all(&page).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let row = Row::read(r, chain)?;
            last_id = row.id;
            let prev = link;
            link = prev.next(chain, &row.values);
            let update = Query::update()
                .table(Alias::new(chain.table))
                .value(Alias::new(SEQ), link.seq)
                .value(Alias::new(PREV_HASH), hex::encode(prev.hash))
                .value(Alias::new(HASH), hex::encode(link.hash))
                .and_where(Expr::col(chain.col(ID)).eq(row.id))
                .to_owned();
            conn.execute(&update).await?;
        }
    }
    m.create_index(
        Index::create()
            .if_not_exists()
            .unique()
            .name(format!("{}_seq", chain.table))
            .table(Alias::new(chain.table))
            .col(Alias::new(SEQ))
            .to_owned(),
    )
    .await
}
