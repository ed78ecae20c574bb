//! Appending to a chain: the transaction that takes the chain's lock, the
//! head, and one insert of every record with its links.

use super::*;

/// Begins a transaction audit records may be appended in. On SQLite it
/// takes the write lock at once (`BEGIN IMMEDIATE`), so the chain head it
/// reads cannot be overtaken by another connection's append.
pub async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Appends `records` (each one value per [`Chain::columns`], in order) to
/// the chain in `txn`, a transaction from [`begin`]: locks the chain, reads
/// its head once, links the records one after another and inserts them: on
/// PostgreSQL in one statement whatever their number ([`insert_as_json`]),
/// on SQLite in a few statements of [`crate::db::batch_shapes`]. Call it
/// last in the transaction. Returns the new head.
pub async fn append(
    txn: &DatabaseTransaction,
    chain: &Chain,
    records: Vec<Vec<Value>>,
) -> Result<Link, DbErr> {
    if records.is_empty() {
        return head(txn, chain).await;
    }
    let postgres = txn.get_database_backend() == DatabaseBackend::Postgres;
    if postgres {
        // A prepared statement, like every other the append runs: the
        // server plans it once per connection.
        txn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [APPEND_LOCK.into()],
        ))
        .await?;
    }
    let mut link = head(txn, chain).await?;
    let mut linked = Vec::with_capacity(records.len());
    for values in records {
        check_kinds(chain, &values)?;
        let prev = link;
        link = prev.next(chain, &values);
        linked.push((values, prev, link));
    }
    if postgres {
        txn.execute_raw(insert_as_json(chain, &linked)).await?;
        return Ok(link);
    }
    let mut linked = linked.into_iter();
    for size in crate::db::batch_shapes(linked.len()) {
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(chain.table))
            .columns(stored_columns(chain).map(Alias::new));
        for (values, prev, link) in linked.by_ref().take(size) {
            let row: Vec<SimpleExpr> = values
                .into_iter()
                .map(Value::into_sql)
                .chain([
                    link.seq.into(),
                    hex::encode(prev.hash).into(),
                    hex::encode(link.hash).into(),
                ])
                .map(Into::into)
                .collect();
            insert
                .values(row)
                .map_err(|e| DbErr::Custom(format!("audit insert: {e}")))?;
        }
        txn.execute(&insert).await?;
    }
    Ok(link)
}

/// The columns a record is stored in: the hashed ones, then the links.
pub(super) fn stored_columns(chain: &Chain) -> impl Iterator<Item = &'static str> {
    chain
        .columns
        .iter()
        .map(|(name, _)| *name)
        .chain([SEQ, PREV_HASH, HASH])
}

/// One INSERT for any number of linked records (PostgreSQL): the rows go
/// as one JSON array bound as a single value, and the server reads them
/// back with the table's own column types (`json_populate_recordset`).
/// One statement shape, however many rows, so it is prepared once; the
/// values are never part of the SQL text.
pub(super) fn insert_as_json(chain: &Chain, linked: &[(Vec<Value>, Link, Link)]) -> Statement {
    let rows: Vec<serde_json::Value> = linked
        .iter()
        .map(|(values, prev, link)| {
            let mut row = serde_json::Map::with_capacity(values.len() + 3);
            for ((name, _), value) in chain.columns.iter().zip(values) {
                let value = match value {
                    Value::Int(n) => serde_json::Value::from(*n),
                    Value::Text(s) => serde_json::Value::from(s.clone()),
                };
                row.insert((*name).to_owned(), value);
            }
            row.insert(SEQ.to_owned(), link.seq.into());
            row.insert(PREV_HASH.to_owned(), hex::encode(prev.hash).into());
            row.insert(HASH.to_owned(), hex::encode(link.hash).into());
            serde_json::Value::Object(row)
        })
        .collect();
    let columns = stored_columns(chain)
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let table = chain.table;
    let sql = format!(
        "INSERT INTO \"{table}\" ({columns}) SELECT {columns} \
         FROM json_populate_recordset(NULL::\"{table}\", CAST($1 AS json))"
    );
    Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        [serde_json::Value::Array(rows).to_string().into()],
    )
}

pub(super) fn check_kinds(chain: &Chain, values: &[Value]) -> Result<(), DbErr> {
    let matches = values.len() == chain.columns.len()
        && values
            .iter()
            .zip(chain.columns)
            .all(|(v, (_, kind))| v.kind() == *kind);
    if matches {
        Ok(())
    } else {
        Err(DbErr::Custom(format!(
            "audit record does not match the columns of {}",
            chain.table
        )))
    }
}

/// The newest link of the chain (its last record), or [`Link::GENESIS`].
pub(super) async fn head(conn: &impl ConnectionTrait, chain: &Chain) -> Result<Link, DbErr> {
    head_of(conn, chain.table).await
}

/// The newest link of the chain in `table`: one index lookup, whatever
/// the table's size. Checkpoints ([`crate::checkpoint`]) read it on their
/// timer, not on any request's path.
pub(crate) async fn head_of(conn: &impl ConnectionTrait, table: &str) -> Result<Link, DbErr> {
    // `LIMIT 1` is written out, not bound: PostgreSQL cannot know a bound
    // limit is 1, so it planned the query afresh at every append (three
    // times its execution time); with no parameters it plans it once per
    // connection.
    let query = Statement::from_string(
        conn.get_database_backend(),
        format!(
            "SELECT \"{table}\".\"{SEQ}\", \"{table}\".\"{HASH}\" FROM \"{table}\" \
             WHERE \"{table}\".\"{SEQ}\" IS NOT NULL ORDER BY \"{table}\".\"{SEQ}\" DESC LIMIT 1"
        ),
    );
    let Some(row) = conn.query_one_raw(query).await? else {
        return Ok(Link::GENESIS);
    };
    let seq: i64 = row.try_get("", SEQ)?;
    let hash: String = row.try_get("", HASH)?;
    // Fail closed: a chain whose head was damaged is not extended.
    let hash = parse_hash(&hash).ok_or_else(|| {
        DbErr::Custom(format!(
            "the head of the {table} chain is damaged: run `audit verify`"
        ))
    })?;
    Ok(Link { seq, hash })
}

/// The stored hashes of the records at `seqs` in `table`, by position; a
/// position with no record is absent, an unreadable hash is `None`. For
/// comparing checkpoints with a chain [`verify`] found intact, so the
/// stored hashes are the recomputed ones.
pub(crate) async fn hashes_at(
    conn: &impl ConnectionTrait,
    table: &str,
    seqs: &[i64],
) -> Result<std::collections::HashMap<i64, Option<[u8; 32]>>, DbErr> {
    let col = |name: &str| (Alias::new(table), Alias::new(name));
    let query = Query::select()
        .columns([col(SEQ), col(HASH)])
        .from(Alias::new(table))
        .and_where(Expr::col(col(SEQ)).is_in(seqs.iter().copied()))
        .to_owned();
    let mut found = std::collections::HashMap::with_capacity(seqs.len());
    for row in conn.query_all(&query).await? {
        let seq: i64 = row.try_get("", SEQ)?;
        let hash: Option<String> = row.try_get("", HASH)?;
        found.insert(seq, hash.as_deref().and_then(parse_hash));
    }
    Ok(found)
}
