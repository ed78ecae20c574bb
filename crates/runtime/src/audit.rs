//! Tamper-evident audit trails, shared by both services: every audit record
//! carries its position in the trail (`seq`), the hash of the record before
//! it (`prev_hash`) and its own hash (`hash`), so editing or deleting a row
//! breaks the chain at that row and [`verify`] finds the first break.
//!
//! # The hash
//!
//! `hash = SHA-256(enc(domain) || enc(seq) || prev_hash || enc(v1) || ... || enc(vn))`
//! where `prev_hash` is the 32 raw bytes of the previous record's hash (32
//! zero bytes for the first record, `seq` 1), `v1..vn` are the table's
//! columns in the order its [`Chain`] lists them, and
//!
//! - `enc(NULL)` = `0x00`
//! - `enc(integer n)` = `0x01` followed by `n` as 8 bytes, big-endian two's complement
//! - `enc(text s)` = `0x02`, the byte length of UTF-8 `s` as 4 bytes big-endian, the bytes
//!
//! `domain` and `seq` are a text and an integer. Every record of a table has
//! the same number of fields, so the encoding is unambiguous. The database
//! stores `prev_hash` and `hash` as 64 lowercase hex digits. An auditor can
//! recompute a chain without padlock:
//!
//! ```python
//! import hashlib, struct
//! def enc(v):
//!     if v is None: return b"\0"
//!     if isinstance(v, int): return b"\1" + struct.pack(">q", v)
//!     b = v.encode(); return b"\2" + struct.pack(">I", len(b)) + b
//! def record_hash(domain, seq, prev_hex, values):
//!     data = enc(domain) + enc(seq) + bytes.fromhex(prev_hex) + b"".join(map(enc, values))
//!     return hashlib.sha256(data).hexdigest()
//! ```
//!
//! # What it proves, and what not
//!
//! The hash is not keyed: anyone can check a trail, and the deploy service
//! holds no secret to key it with. So the chain proves that no record was
//! edited, removed or slipped in *between* two records that are still
//! there. Someone who can write to the database can still cut records off
//! the end, or rewrite the trail from some record on and recompute every
//! hash after it. Against that, the head is kept outside the database: a
//! running service signs checkpoints of it into a file of its own
//! ([`crate::checkpoint`]), which `audit verify` checks the chain against;
//! and `audit verify` prints `head SEQ:HASH`, so a later `audit verify
//! --expect-head SEQ:HASH` fails unless that record is still in the chain
//! with that hash.
//!
//! # Appending
//!
//! Appends are serialised, so the chain never forks: on PostgreSQL by a
//! transaction-scoped advisory lock taken before the head is read (replicas
//! on one database take turns), on SQLite by the write lock a transaction
//! from [`begin`] takes at `BEGIN IMMEDIATE`. A unique index on `seq` is the
//! last line: a fork cannot commit. Append last in a transaction, after its
//! other writes, so a transaction holding the chain lock never waits for
//! another lock (no deadlocks), and holds it only until its commit.

use std::fmt;
use std::str::FromStr;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Index, Order, Query, SimpleExpr, Table};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::schema::{big_integer_null, string_len_null};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use sha2::{Digest, Sha256};

/// Rows read per query when walking a chain: memory stays bounded whatever
/// the table's size.
const PAGE: u64 = 1000;

/// PostgreSQL advisory lock serialising appends. Advisory locks are scoped
/// to one database, and each service's trail lives in its own database, so
/// one key serves both. "auditlog" in ASCII.
const APPEND_LOCK: i64 = 0x6175_6469_746c_6f67;

/// The columns the chain adds to an audit table.
const SEQ: &str = "seq";
const PREV_HASH: &str = "prev_hash";
const HASH: &str = "hash";
const ID: &str = "id";

/// The type of a hashed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BIGINT, possibly NULL.
    Int,
    /// Text, possibly NULL.
    Text,
}

/// One audit table's chain: which table, which columns are hashed in which
/// order, and the domain string that keeps its hashes apart from any other
/// trail's. Changing `columns` or `domain` changes every hash: that takes a
/// new domain (`... v2`) and a migration.
#[derive(Debug)]
pub struct Chain {
    pub domain: &'static str,
    pub table: &'static str,
    /// Every content column of the table except `id`, in hashing order.
    pub columns: &'static [(&'static str, Kind)],
}

impl Chain {
    /// `table.name`. Qualified, because SQLite reads an unqualified
    /// `"name"` it does not know as a string: a pooled connection whose
    /// schema predates the migration adding the column would compile the
    /// query without complaint, and keep its wrong column names.
    fn col(&self, name: &'static str) -> (Alias, Alias) {
        (Alias::new(self.table), Alias::new(name))
    }
}

/// A field value as hashed and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl Value {
    fn kind(&self) -> Kind {
        match self {
            Value::Int(_) => Kind::Int,
            Value::Text(_) => Kind::Text,
        }
    }

    fn encode(&self, out: &mut Sha256) {
        match self {
            Value::Int(None) | Value::Text(None) => out.update([0]),
            Value::Int(Some(n)) => encode_int(out, *n),
            Value::Text(Some(s)) => encode_text(out, s),
        }
    }

    fn into_sql(self) -> sea_orm::sea_query::Value {
        match self {
            Value::Int(n) => n.into(),
            Value::Text(s) => s.into(),
        }
    }
}

fn encode_int(out: &mut Sha256, n: i64) {
    out.update([1]);
    out.update(n.to_be_bytes());
}

fn encode_text(out: &mut Sha256, s: &str) {
    out.update([2]);
    // Audit texts are bounded far below 4 GiB; a longer one would be cut
    // off by the database long before this.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.update(len.to_be_bytes());
    out.update(s.as_bytes());
}

/// A record's place in the chain: its position and hash. The link before
/// the first record is [`Link::GENESIS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl Link {
    pub const GENESIS: Link = Link {
        seq: 0,
        hash: [0; 32],
    };

    /// The link of the record with `values` that follows this one.
    pub fn next(&self, chain: &Chain, values: &[Value]) -> Link {
        let seq = self.seq + 1;
        Link {
            seq,
            hash: record_hash(chain.domain, seq, &self.hash, values),
        }
    }
}

/// `SEQ:HASH`, as `audit verify` prints the head and `--expect-head` takes it.
impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex::encode(self.hash))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected SEQ:HASH, a position and 64 hex digits")]
pub struct LinkParseError;

impl FromStr for Link {
    type Err = LinkParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (seq, hash) = s.split_once(':').ok_or(LinkParseError)?;
        let seq = seq.parse::<i64>().map_err(|_| LinkParseError)?;
        let hash = parse_hash(hash).ok_or(LinkParseError)?;
        if seq < 0 {
            return Err(LinkParseError);
        }
        Ok(Link { seq, hash })
    }
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let mut hash = [0; 32];
    hex::decode_to_slice(s, &mut hash).ok()?;
    Some(hash)
}

/// The hash of the record at `seq` with `values`, following `prev`
/// (module docs: the exact encoding).
pub fn record_hash(domain: &str, seq: i64, prev: &[u8; 32], values: &[Value]) -> [u8; 32] {
    let mut h = Sha256::new();
    encode_text(&mut h, domain);
    encode_int(&mut h, seq);
    h.update(prev);
    for v in values {
        v.encode(&mut h);
    }
    h.finalize().into()
}

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
fn stored_columns(chain: &Chain) -> impl Iterator<Item = &'static str> {
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
fn insert_as_json(chain: &Chain, linked: &[(Vec<Value>, Link, Link)]) -> Statement {
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

fn check_kinds(chain: &Chain, values: &[Value]) -> Result<(), DbErr> {
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
async fn head(conn: &impl ConnectionTrait, chain: &Chain) -> Result<Link, DbErr> {
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

/// One row of an audit table as the chain sees it.
#[derive(Debug)]
struct Row {
    id: i64,
    seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
    values: Vec<Value>,
}

impl Row {
    fn read(r: &QueryResult, chain: &Chain) -> Result<Row, DbErr> {
        let values = chain
            .columns
            .iter()
            .map(|(name, kind)| {
                Ok(match kind {
                    Kind::Int => Value::Int(r.try_get("", name)?),
                    Kind::Text => Value::Text(r.try_get("", name)?),
                })
            })
            .collect::<Result<_, DbErr>>()?;
        Ok(Row {
            id: r.try_get("", ID)?,
            seq: r.try_get("", SEQ)?,
            prev_hash: r.try_get("", PREV_HASH)?,
            hash: r.try_get("", HASH)?,
            values,
        })
    }
}

fn select_rows(chain: &Chain) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .columns(
            [ID, SEQ, PREV_HASH, HASH]
                .into_iter()
                .chain(chain.columns.iter().map(|(name, _)| *name))
                .map(|name| chain.col(name)),
        )
        .from(Alias::new(chain.table))
        .to_owned()
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact(Intact),
    Broken(Break),
}

impl Verdict {
    pub fn into_result(self) -> Result<Intact, Break> {
        match self {
            Verdict::Intact(intact) => Ok(intact),
            Verdict::Broken(broken) => Err(broken),
        }
    }
}

/// An unbroken chain of `head.seq` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub head: Link,
}

impl fmt::Display for Intact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit chain intact: {} records, head {}",
            self.head.seq, self.head
        )
    }
}

/// Where the chain first breaks, and how. Names rows by `id` and position,
/// never by content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    /// The record's content (or its `prev_hash`) does not match its hash.
    #[error("audit chain broken at record id {id} (position {seq}): the record was edited")]
    Edited { id: i64, seq: i64 },
    /// Positions are skipped before this record.
    #[error(
        "audit chain broken at record id {id} (position {seq}): records are missing before it \
         (the previous position is {prev_seq})"
    )]
    Missing { id: i64, seq: i64, prev_seq: i64 },
    /// This record does not point at the hash of the record before it: that
    /// one was rewritten with a recomputed hash, or replaced.
    #[error(
        "audit chain broken at record id {id} (position {seq}): it does not link to the record \
         before it, which was rewritten or replaced"
    )]
    Unlinked { id: i64, seq: i64 },
    /// A record outside the chain: no position, or one already taken.
    #[error("audit chain broken at record id {id}: the record was inserted outside the chain")]
    Inserted { id: i64 },
    /// `--expect-head` names a position past the end of the chain.
    #[error(
        "audit chain truncated: it ends at position {end}, but position {expected} was expected; \
         records were removed from its end"
    )]
    Truncated { end: i64, expected: i64 },
    /// `--expect-head` names a record the chain now has a different hash for.
    #[error(
        "audit chain rewritten: the record at position {seq} (id {id}) no longer has the expected hash"
    )]
    Rewritten { id: i64, seq: i64 },
}

/// Walks the whole chain in position order, a page at a time, recomputing
/// every hash; reports the first break, or the head of an intact chain.
/// With `expect`, the chain must still hold that record with that hash.
pub async fn verify(
    conn: &impl ConnectionTrait,
    chain: &Chain,
    expect: Option<Link>,
) -> Result<Verdict, DbErr> {
    let mut last = Link::GENESIS;
    // The last row checked: each page starts at its position (a plain
    // index range; `(seq, id) > (s, i)` would sort the rest of the table on
    // SQLite), so a second row at that position is still seen, and it
    // is skipped itself.
    let mut last_id = None;
    loop {
        let mut page = select_rows(chain)
            .and_where(Expr::col(chain.col(SEQ)).is_not_null())
            .order_by(chain.col(SEQ), Order::Asc)
            .order_by(chain.col(ID), Order::Asc)
            .limit(PAGE + 1)
            .to_owned();
        if last_id.is_some() {
            page.and_where(Expr::col(chain.col(SEQ)).gte(last.seq));
        }
        let rows = conn.query_all(&page).await?;
        let mut fresh = 0;
        for r in &rows {
            let row = Row::read(r, chain)?;
            if last_id == Some(row.id) {
                continue;
            }
            fresh += 1;
            let link = match check_row(chain, &last, &row) {
                Ok(link) => link,
                Err(broken) => return Ok(Verdict::Broken(broken)),
            };
            if expect.is_some_and(|e| e.seq == link.seq && e.hash != link.hash) {
                return Ok(Verdict::Broken(Break::Rewritten {
                    id: row.id,
                    seq: link.seq,
                }));
            }
            last = link;
            last_id = Some(row.id);
        }
        if fresh == 0 {
            break;
        }
    }
    if let Some(e) = expect.filter(|e| e.seq > last.seq) {
        return Ok(Verdict::Broken(Break::Truncated {
            end: last.seq,
            expected: e.seq,
        }));
    }
    let unchained = select_rows(chain)
        .and_where(Expr::col(chain.col(SEQ)).is_null())
        .order_by(chain.col(ID), Order::Asc)
        .limit(1)
        .to_owned();
    if let Some(r) = conn.query_one(&unchained).await? {
        let id = r.try_get("", ID)?;
        return Ok(Verdict::Broken(Break::Inserted { id }));
    }
    Ok(Verdict::Intact(Intact { head: last }))
}

/// Checks one row against the link before it; its own link if it holds.
fn check_row(chain: &Chain, last: &Link, row: &Row) -> Result<Link, Break> {
    let id = row.id;
    let seq = row.seq.unwrap_or(last.seq);
    if seq <= last.seq {
        return Err(Break::Inserted { id });
    }
    if seq > last.seq + 1 {
        return Err(Break::Missing {
            id,
            seq,
            prev_seq: last.seq,
        });
    }
    let prev = row.prev_hash.as_deref().and_then(parse_hash);
    let hash = row.hash.as_deref().and_then(parse_hash);
    let (Some(prev), Some(hash)) = (prev, hash) else {
        return Err(Break::Edited { id, seq });
    };
    if record_hash(chain.domain, seq, &prev, &row.values) != hash {
        return Err(Break::Edited { id, seq });
    }
    if prev != last.hash {
        return Err(Break::Unlinked { id, seq });
    }
    Ok(Link { seq, hash })
}

/// [`verify`] on the database at `url`, connecting without migrating it:
/// an auditor may hold read-only credentials.
pub async fn verify_at(url: &str, chain: &Chain, expect: Option<Link>) -> Result<Verdict, DbErr> {
    let conn = crate::db::connect(crate::db::connect_options(url)).await?;
    let verdict = verify(&conn, chain, expect).await;
    conn.close().await.ok();
    verdict
}

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

async fn add_chain(m: &SchemaManager<'_>, chain: &Chain) -> Result<(), DbErr> {
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

/// `audit` subcommands, the same for both services.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Recomputes the audit chain and checks it against the signed
    /// checkpoints of its head (`--audit-checkpoints`): reports the first
    /// break, or records missing that a checkpoint saw (exit 1), or the
    /// record count and head (exit 0).
    Verify {
        /// A head printed by an earlier verify (`SEQ:HASH`): fail unless
        /// that record is still in the chain with that hash, so records cut
        /// off the end or a rewritten chain are found too.
        #[arg(long)]
        expect_head: Option<Link>,
        /// A checkpoint file (or JSON log) to check the chain against,
        /// instead of this service's own `--audit-checkpoints` file; repeat
        /// it for each replica's file.
        #[arg(long = "checkpoints", value_name = "FILE")]
        checkpoints: Vec<std::path::PathBuf>,
        /// The key checkpoints must be signed with (`ed25519:HEX`, as
        /// `audit checkpoint-key` prints it); repeat it for each replica's
        /// key. Default: the public half of `--audit-checkpoint-key`.
        #[arg(long = "checkpoint-public-key", value_name = "KEY")]
        checkpoint_public_keys: Vec<crate::checkpoint::PublicKey>,
    },
    /// Prints the public key that signs this service's audit checkpoints
    /// (`ed25519:HEX`), for operators to pin; generates the key if there
    /// is none yet.
    CheckpointKey,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const TEST: Chain = Chain {
        domain: "test v1",
        table: "t",
        columns: &[("n", Kind::Int), ("s", Kind::Text)],
    };

    #[test]
    fn the_encoding_matches_the_documented_one() {
        // Computed with the Python in the module docs:
        // record_hash("test v1", 1, "00"*32, [42, "héllo"]), then
        // record_hash("test v1", 2, <that>, [None, None]).
        let first = Link::GENESIS.next(
            &TEST,
            &[Value::Int(Some(42)), Value::Text(Some("héllo".into()))],
        );
        assert_eq!(
            hex::encode(first.hash),
            "47a07370ef888746fb6d9f1c912f501fdc084e1096c9a3b4aeec6867de51db27"
        );
        let second = first.next(&TEST, &[Value::Int(None), Value::Text(None)]);
        assert_eq!(second.seq, 2);
        assert_eq!(
            hex::encode(second.hash),
            "6847d08bf73ebfaf544c1a8e317c87103ff59d81f16694f6533ebc17c5c2273d"
        );
    }

    #[test]
    fn null_empty_and_zero_hash_differently() {
        let hash = |v: Value| record_hash("d", 1, &[0; 32], &[v]);
        assert_eq!(
            hash(Value::Int(None)),
            hash(Value::Text(None)),
            "NULL is NULL"
        );
        let all = [
            hash(Value::Int(None)),
            hash(Value::Int(Some(0))),
            hash(Value::Text(Some(String::new()))),
            hash(Value::Text(Some("\0".into()))),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Moving bytes between adjacent texts changes the hash.
        let split = |a: &str, b: &str| {
            record_hash(
                "d",
                1,
                &[0; 32],
                &[Value::Text(Some(a.into())), Value::Text(Some(b.into()))],
            )
        };
        assert_ne!(split("ab", "c"), split("a", "bc"));
    }

    #[test]
    fn a_head_prints_and_parses_back() {
        let link = Link {
            seq: 7,
            hash: [0xab; 32],
        };
        assert_eq!(link.to_string().parse::<Link>(), Ok(link));
        let zeros = "0".repeat(64);
        for bad in [
            String::new(),
            "7".into(),
            "7:abc".into(),
            format!("x:{zeros}"),
            format!("-1:{zeros}"),
            format!("7:{}", "z".repeat(64)),
        ] {
            assert!(bad.parse::<Link>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_of_the_wrong_shape_is_refused() {
        assert!(check_kinds(&TEST, &[Value::Int(None), Value::Text(None)]).is_ok());
        assert!(check_kinds(&TEST, &[Value::Text(None), Value::Int(None)]).is_err());
        assert!(check_kinds(&TEST, &[Value::Int(None)]).is_err());
    }
}
