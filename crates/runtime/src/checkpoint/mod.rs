//! Signed checkpoints of an audit chain's head, kept outside the database,
//! so `audit verify` finds records cut off the end of a trail, or a trail
//! emptied, which the hash chain alone cannot show ([`crate::audit`]).
//!
//! A running service writes a checkpoint (its chain, the head's position
//! and hash, the time, the instance, why) when it starts, every
//! `--audit-checkpoint-interval` seconds if the head moved, and when it
//! shuts down. It reads the head on its own timer and connection, never on
//! a request's path. Each checkpoint is signed with the service's
//! checkpoint key (Ed25519), appended to its checkpoint file and logged as
//! one structured event. Whoever can write the database but not the
//! service's files cannot forge one: `audit verify` checks every
//! checkpoint's signature against the pinned key and then that the chain
//! still holds the record each checkpoint saw.
//!
//! # The file
//!
//! One JSON object per line, only ever appended (`O_APPEND`, created 0600,
//! each line one write, flushed to disk):
//!
//! ```text
//! {"padlock_audit_checkpoint":1,"chain":"padlock-auth/audit_events","seq":135,
//!  "head":"<64 hex>","at":"2026-05-01T12:00:00Z","instance":"auth-0/1","reason":"timer",
//!  "key":"ed25519:<64 hex>","sig":"<128 hex>"}
//! ```
//!
//! `sig` is the Ed25519 signature (RFC 8032) by `key` of
//! `enc("padlock audit checkpoint v1") || enc(chain) || enc(seq) ||
//! enc(head) || enc(at) || enc(instance) || enc(reason)`, with `enc` as in
//! [`crate::audit`] (texts exactly as they appear in the line, `seq` as an
//! integer). The log event carries the same fields at the top level of a
//! JSON log line, so lines of the JSON log can be given to `audit verify
//! --checkpoints` as they are; a reader skips JSON lines without the
//! `padlock_audit_checkpoint` field. An auditor can check a line without
//! padlock:
//!
//! ```python
//! from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
//! fields = ["padlock audit checkpoint v1"] + [c[k] for k in
//!           ("chain", "seq", "head", "at", "instance", "reason")]
//! key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(c["key"].removeprefix("ed25519:")))
//! key.verify(bytes.fromhex(c["sig"]), b"".join(map(enc, fields)))  # enc: crate::audit
//! ```
//!
//! # Torn lines
//!
//! A crash in the middle of a write can leave a last line cut short. A
//! reader skips a line that is not a whole JSON object with a warning (it
//! cannot be a checkpoint that was altered: a cut never leaves a whole
//! object) and goes on checking every checkpoint before and after it. The
//! writer, when it opens a file whose last line is cut short, first ends
//! that line, so the next checkpoint is not glued to it. A whole object
//! that fails its signature or does not parse as a checkpoint is an error.
//!
//! # What `audit verify` checks
//!
//! Every valid checkpoint, not only the latest: a service restarted after
//! records were cut off checkpoints the shorter trail, so the latest
//! checkpoint alone would hide the cut; the earlier ones still show it.
//! Records a checkpoint saw that the chain no longer has are reported as
//! deleted; a record at a checkpoint's position with another hash, as a
//! rewritten trail. The files are measured before the chain is read and
//! read only up to that length, so a checkpoint written by the running
//! service meanwhile cannot look like one from the future.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand::RngCore as _;
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::{Map, Value as Json};

use crate::SharedClock;
use crate::audit::{self, AuditCommand, Intact, Link, Verdict};

/// The `padlock_audit_checkpoint` field of every checkpoint: the format.
pub const FORMAT_VERSION: i64 = 1;
/// The first field of every signed message, so a checkpoint signature can
/// never be taken for a signature of anything else.
const SIGNED_DOMAIN: &str = "padlock audit checkpoint v1";
/// The field that marks a JSON object (a file line or a log line) as a
/// checkpoint.
const MARKER: &str = "padlock_audit_checkpoint";
/// Default of `--audit-checkpoint-interval`: a minute of records at most is
/// unanchored while a service runs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default checkpoint file and key, in the data directory.
pub const DEFAULT_FILE: &str = "audit-checkpoints";
pub const DEFAULT_KEY_FILE: &str = "audit-checkpoint.key";
/// A checkpoint line is a few hundred bytes; a JSON log line of one under
/// 2 KiB. Longer lines are not read whole (they are not checkpoints).
const MAX_LINE: usize = 16 * 1024;
/// How much of the end of its file a starting service reads to find its
/// last checkpoint.
const TAIL: u64 = 64 * 1024;
/// Positions looked up in one query when comparing checkpoints.
const BATCH: usize = 500;
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

mod key;
mod line;
mod verify;
mod writer;

pub use key::*;
pub use line::*;
pub use verify::*;
pub use writer::*;

// ---------------------------------------------------------------- the trail

/// The audit trail a service checkpoints: the table of its chain, named
/// with the service (`padlock-auth/audit_events`) in every checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Trail {
    pub service: &'static str,
    pub table: &'static str,
}

impl Trail {
    /// The `chain` field of its checkpoints.
    pub fn name(&self) -> String {
        format!("{}/{}", self.service, self.table)
    }
}

// ---------------------------------------------------------------- errors

/// Writing checkpoints failed. Names files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {why}", path.display())]
    Key { path: PathBuf, why: String },
    #[error("cannot read the audit chain's head: {0}")]
    Db(DbErr),
    #[error("the checkpoint writer stopped unexpectedly")]
    Poisoned,
}

impl CheckpointError {
    fn io(path: &Path, source: io::Error) -> Self {
        CheckpointError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// `audit verify` could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the audit chain (has `migrate` run?): {message}")]
    Chain { message: String },
    #[error("cannot read checkpoints from {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl VerifyError {
    fn io(path: &Path, source: io::Error) -> Self {
        VerifyError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// An `audit` subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Failed(#[from] VerifyFailed),
    #[error(transparent)]
    Key(#[from] CheckpointError),
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), CheckpointError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| CheckpointError::io(dir, e))
}

#[cfg(test)]
mod tests;
