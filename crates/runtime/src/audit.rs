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

mod append;
mod migration;
mod verify;

pub use append::*;
pub use migration::*;
pub use verify::*;

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
mod tests;
