//! Walking a chain page by page and checking every link.

use super::*;

/// One row of an audit table as the chain sees it.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) id: i64,
    pub(super) seq: Option<i64>,
    pub(super) prev_hash: Option<String>,
    pub(super) hash: Option<String>,
    pub(super) values: Vec<Value>,
}

impl Row {
    pub(super) fn read(r: &QueryResult, chain: &Chain) -> Result<Row, DbErr> {
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

pub(super) fn select_rows(chain: &Chain) -> sea_orm::sea_query::SelectStatement {
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
pub(super) fn check_row(chain: &Chain, last: &Link, row: &Row) -> Result<Link, Break> {
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
