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

// ---------------------------------------------------------------- keys

/// A checkpoint public key, `ed25519:` and 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected ed25519: and 64 hex digits of an Ed25519 public key")]
pub struct PublicKeyParseError;

impl FromStr for PublicKey {
    type Err = PublicKeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_key = s.strip_prefix("ed25519:").ok_or(PublicKeyParseError)?;
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| PublicKeyParseError)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| PublicKeyParseError)
    }
}

/// How a checkpoint key file is kept at rest. A service with data keys
/// seals it (auth: like its signing key files); [`ClearPem`] otherwise.
pub trait KeyFormat: Send + Sync + fmt::Debug {
    /// The file's text for the key (PKCS#8 DER).
    fn encode(&self, pkcs8_der: &[u8]) -> Result<String, String>;
    /// The key (PKCS#8 DER) in a file's text, and whether the file should
    /// be written again with [`KeyFormat::encode`] (say, sealed under an
    /// older data key). Errors name no key material.
    fn decode(&self, text: &str) -> Result<(Vec<u8>, bool), String>;
}

/// PKCS#8 PEM in clear, what `openssl genpkey -algorithm ed25519` writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClearPem;

impl KeyFormat for ClearPem {
    fn encode(&self, pkcs8_der: &[u8]) -> Result<String, String> {
        let key = SigningKey::from_pkcs8_der(pkcs8_der).map_err(|_| "not an Ed25519 key")?;
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|_| "cannot encode the key")?;
        Ok(pem.as_str().to_owned())
    }

    fn decode(&self, text: &str) -> Result<(Vec<u8>, bool), String> {
        // The parser's error could quote the file; it is not passed on.
        let key = SigningKey::from_pkcs8_pem(text)
            .map_err(|_| "not an Ed25519 private key in PKCS#8 PEM")?;
        Ok((pkcs8_der(&key)?, false))
    }
}

fn pkcs8_der(key: &SigningKey) -> Result<Vec<u8>, String> {
    key.to_pkcs8_der()
        .map(|der| der.as_bytes().to_vec())
        .map_err(|_| "cannot encode the key".to_owned())
}

/// The key a service signs its checkpoints with: Ed25519, in a 0600 file
/// in a [`KeyFormat`].
pub struct CheckpointKey(SigningKey);

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CheckpointKey")
            .field(&self.public())
            .finish()
    }
}

impl CheckpointKey {
    pub fn generate() -> Self {
        CheckpointKey(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key in `path` and whether `format` wants the file written
    /// again; `Ok(None)` if there is no such file.
    pub fn load(
        path: &Path,
        format: &dyn KeyFormat,
    ) -> Result<Option<(Self, bool)>, CheckpointError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::io(path, e)),
        };
        let key_error = |why: String| CheckpointError::Key {
            path: path.to_owned(),
            why,
        };
        let (der, rewrite) = format.decode(&text).map_err(key_error)?;
        let key = SigningKey::from_pkcs8_der(&der)
            .map_err(|_| key_error("not an Ed25519 private key".into()))?;
        Ok(Some((CheckpointKey(key), rewrite)))
    }

    /// The key in `path`, generated there (0600) if there is none yet;
    /// `true` when it was generated. Two processes starting at once end
    /// up with the same key: the file appears whole or not at all (a
    /// temporary file, hard-linked into place only if nothing is there).
    /// A file `format` wants written again is (a failure to is logged).
    pub fn load_or_generate(
        path: &Path,
        format: &dyn KeyFormat,
    ) -> Result<(Self, bool), CheckpointError> {
        if let Some((key, rewrite)) = Self::load(path, format)? {
            if rewrite && let Err(e) = key.write(path, format, Place::Replace) {
                tracing::warn!(error = %e, "cannot write the audit checkpoint key file again");
            }
            return Ok((key, false));
        }
        create_private_dir(parent(path))?;
        let key = Self::generate();
        match key.write(path, format, Place::New) {
            Ok(()) => Ok((key, true)),
            // Another process was first: use its key.
            Err(CheckpointError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                match Self::load(path, format)? {
                    Some((key, _)) => Ok((key, false)),
                    None => Err(CheckpointError::io(path, source)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the key to `path` in `format`: through a 0600 temporary
    /// file, linked into place (never over a file) or renamed over it.
    fn write(
        &self,
        path: &Path,
        format: &dyn KeyFormat,
        place: Place,
    ) -> Result<(), CheckpointError> {
        let key_error = |why: String| CheckpointError::Key {
            path: path.to_owned(),
            why,
        };
        let text = format
            .encode(&pkcs8_der(&self.0).map_err(key_error)?)
            .map_err(key_error)?;
        let dir = parent(path);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::rngs::OsRng.next_u64()));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            match place {
                Place::New => fs::hard_link(&tmp, path),
                Place::Replace => fs::rename(&tmp, path),
            }
        };
        let placed = write();
        let _ = fs::remove_file(&tmp);
        placed
            .and_then(|()| File::open(dir).and_then(|d| d.sync_all()))
            .map_err(|e| CheckpointError::io(path, e))
    }
}

#[derive(Debug, Clone, Copy)]
enum Place {
    New,
    Replace,
}

/// Writes the checkpoint key file again if its format asks for it (auth:
/// sealed under a data key that is no longer the current one), after the
/// data keys were reloaded. Never generates a key. Returns whether it
/// wrote.
pub fn reseal_key(config: &CheckpointConfig) -> Result<bool, CheckpointError> {
    let format = &*config.key_format;
    match CheckpointKey::load(&config.key_file, format)? {
        Some((key, true)) => {
            key.write(&config.key_file, format, Place::Replace)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

// ---------------------------------------------------------------- checkpoints

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Start,
    Timer,
    Shutdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Timer => "timer",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// What a checkpoint says: at time `at`, instance `instance` saw the chain
/// `chain` end at `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub chain: String,
    pub head: Link,
    /// RFC 3339, UTC, whole seconds; signed as written.
    pub at: String,
    pub instance: String,
    pub reason: String,
}

impl Checkpoint {
    /// The bytes its signature covers (module docs).
    fn signed_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        put_text(&mut out, SIGNED_DOMAIN);
        put_text(&mut out, &self.chain);
        put_int(&mut out, self.head.seq);
        put_text(&mut out, &hex::encode(self.head.hash));
        put_text(&mut out, &self.at);
        put_text(&mut out, &self.instance);
        put_text(&mut out, &self.reason);
        out
    }

    pub fn sign(self, key: &CheckpointKey) -> Signed {
        let signature = key.0.sign(&self.signed_message()).to_bytes();
        Signed {
            checkpoint: self,
            key: key.public(),
            signature,
        }
    }

    /// "checkpoint of AT (INSTANCE, REASON)", for reports.
    fn describe(&self) -> String {
        format!(
            "checkpoint of {} ({}, {})",
            self.at, self.instance, self.reason
        )
    }
}

// The encoding of `crate::audit`'s record hash, into a buffer.
fn put_int(out: &mut Vec<u8>, n: i64) {
    out.push(1);
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    out.push(2);
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A checkpoint with its key and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    pub key: PublicKey,
    pub signature: [u8; 64],
}

impl Signed {
    /// The line as it goes to the file, without the newline.
    pub fn to_line(&self) -> String {
        let c = &self.checkpoint;
        // Fields in a fixed order, for people reading the file; readers
        // do not depend on it.
        let text = |s: &str| Json::from(s).to_string();
        format!(
            "{{\"{MARKER}\":{FORMAT_VERSION},\"chain\":{},\"seq\":{},\"head\":\"{}\",\"at\":{},\
             \"instance\":{},\"reason\":{},\"key\":\"{}\",\"sig\":\"{}\"}}",
            text(&c.chain),
            c.head.seq,
            hex::encode(c.head.hash),
            text(&c.at),
            text(&c.instance),
            text(&c.reason),
            self.key,
            hex::encode(self.signature),
        )
    }

    /// Whether `key` signed exactly this checkpoint.
    pub fn signature_holds(&self) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        self.key
            .0
            .verify_strict(&self.checkpoint.signed_message(), &signature)
            .is_ok()
    }

    /// Logs it as one event whose fields are the line's (module docs).
    fn log(&self) {
        let c = &self.checkpoint;
        tracing::info!(
            padlock_audit_checkpoint = FORMAT_VERSION,
            chain = %c.chain,
            seq = c.head.seq,
            head = %hex::encode(c.head.hash),
            at = %c.at,
            instance = %c.instance,
            reason = %c.reason,
            key = %self.key,
            sig = %hex::encode(self.signature),
            "audit checkpoint"
        );
    }
}

/// What one line of a checkpoint file or JSON log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A checkpoint, its signature not yet checked.
    Checkpoint(Box<Signed>),
    /// Not a whole JSON object: cut short by a crash mid-write.
    Torn,
    /// A JSON object that does not claim to be a checkpoint (another log
    /// line).
    Other,
    /// Claims to be a checkpoint but is not a valid one; says why.
    Invalid(String),
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Parsed {
    let Ok(Json::Object(object)) = serde_json::from_slice::<Json>(line) else {
        return Parsed::Torn;
    };
    // A file line, or a JSON log line: flattened (`--log-format json`) or
    // with the event's fields under `fields`.
    let fields = if object.contains_key(MARKER) {
        &object
    } else {
        match object.get("fields") {
            Some(Json::Object(fields)) if fields.contains_key(MARKER) => fields,
            _ => return Parsed::Other,
        }
    };
    match checkpoint_from(fields) {
        Ok(signed) => Parsed::Checkpoint(Box::new(signed)),
        Err(why) => Parsed::Invalid(why),
    }
}

fn checkpoint_from(fields: &Map<String, Json>) -> Result<Signed, String> {
    let version = fields.get(MARKER).and_then(Json::as_i64);
    if version != Some(FORMAT_VERSION) {
        return Err(format!(
            "checkpoint format {} is not one this padlock knows",
            fields.get(MARKER).map(Json::to_string).unwrap_or_default()
        ));
    }
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Json::as_str)
            .ok_or_else(|| format!("`{name}` is missing or not a text"))
    };
    let seq = fields
        .get("seq")
        .and_then(Json::as_i64)
        .filter(|seq| *seq >= 0)
        .ok_or("`seq` is missing or not a position")?;
    let mut hash = [0; 32];
    hex::decode_to_slice(text("head")?, &mut hash).map_err(|_| "`head` is not 64 hex digits")?;
    let key = text("key")?
        .parse::<PublicKey>()
        .map_err(|_| "`key` is not an Ed25519 public key")?;
    let mut signature = [0; 64];
    hex::decode_to_slice(text("sig")?, &mut signature)
        .map_err(|_| "`sig` is not 128 hex digits")?;
    Ok(Signed {
        checkpoint: Checkpoint {
            chain: text("chain")?.to_owned(),
            head: Link { seq, hash },
            at: text("at")?.to_owned(),
            instance: text("instance")?.to_owned(),
            reason: text("reason")?.to_owned(),
        },
        key,
        signature,
    })
}

// ---------------------------------------------------------------- reading

/// Reads lines of at most [`MAX_LINE`] bytes without ever holding a longer
/// one.
#[derive(Debug)]
struct Lines<R> {
    reader: R,
    number: u64,
}

/// One line: its bytes without the newline, whether a newline ended it,
/// and whether it was longer than [`MAX_LINE`] (then its bytes are cut).
#[derive(Debug)]
struct Line {
    number: u64,
    ended: bool,
    overlong: bool,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Lines { reader, number: 0 }
    }

    fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
        buf.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        let read = self.reader.by_ref().take(limit).read_until(b'\n', buf)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        let number = self.number;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            return Ok(Some(Line {
                number,
                ended: true,
                overlong: false,
            }));
        }
        if buf.len() <= MAX_LINE {
            return Ok(Some(Line {
                number,
                ended: false,
                overlong: false,
            }));
        }
        // Too long to be a checkpoint: skip to its end.
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(Some(Line {
                    number,
                    ended: false,
                    overlong: true,
                }));
            }
            if let Some(i) = available.iter().position(|b| *b == b'\n') {
                self.reader.consume(i + 1);
                return Ok(Some(Line {
                    number,
                    ended: true,
                    overlong: true,
                }));
            }
            let n = available.len();
            self.reader.consume(n);
        }
    }
}

/// The last checkpoint in the last [`TAIL`] bytes of `path` that is of
/// `chain`, signed by `key` and valid; `None` if there is none (or no
/// file).
pub fn last_checkpoint(
    path: &Path,
    chain: &str,
    key: &PublicKey,
) -> Result<Option<Signed>, CheckpointError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CheckpointError::io(path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| CheckpointError::io(path, e))?
        .len();
    let start = len.saturating_sub(TAIL);
    let mut tail = vec![0; usize::try_from(len - start).unwrap_or(0)];
    file.read_exact_at(&mut tail, start)
        .map_err(|e| CheckpointError::io(path, e))?;
    // The first line may be cut by the window, the last by a crash: the
    // parser refuses both.
    Ok(tail
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|line| match parse_line(line) {
            Parsed::Checkpoint(signed)
                if signed.checkpoint.chain == chain
                    && signed.key == *key
                    && signed.signature_holds() =>
            {
                Some(*signed)
            }
            _ => None,
        }))
}

// ---------------------------------------------------------------- writing

/// A checkpoint file, opened for appending only.
#[derive(Debug)]
pub struct CheckpointLog {
    file: File,
    path: PathBuf,
}

impl CheckpointLog {
    /// Opens (or creates, 0600) `path` for appending. A last line cut
    /// short by a crash is ended first, so the next checkpoint starts a
    /// line of its own; returns whether that was needed.
    pub fn open(path: &Path) -> Result<(Self, bool), CheckpointError> {
        create_private_dir(parent(path))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(path)
            .map_err(|e| CheckpointError::io(path, e))?;
        let mut log = CheckpointLog {
            file,
            path: path.to_owned(),
        };
        let len = log
            .file
            .metadata()
            .map_err(|e| CheckpointError::io(path, e))?
            .len();
        let mut last = [0u8];
        let torn = len > 0 && {
            log.file
                .read_exact_at(&mut last, len - 1)
                .map_err(|e| CheckpointError::io(path, e))?;
            last[0] != b'\n'
        };
        if torn {
            log.write(b"\n")?;
        }
        Ok((log, torn))
    }

    /// Appends `signed` as one line, in one write, and flushes it to disk.
    pub fn append(&mut self, signed: &Signed) -> Result<(), CheckpointError> {
        let mut line = signed.to_line().into_bytes();
        line.push(b'\n');
        self.write(&line)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| CheckpointError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

// ---------------------------------------------------------------- configuration

/// The checkpoint flags both services take (README "Audit trail").
#[derive(Debug, Clone, clap::Args)]
pub struct CheckpointArgs {
    /// The file this service appends signed checkpoints of its audit
    /// trail's head to (one JSON line each); `audit verify` reads it.
    /// Default: `<data-dir>/audit-checkpoints`.
    #[arg(long, env = "PADLOCK_AUDIT_CHECKPOINTS", global = true)]
    pub audit_checkpoints: Option<PathBuf>,
    /// The Ed25519 key (PKCS#8 PEM) that signs the checkpoints. Default:
    /// `<data-dir>/audit-checkpoint.key`, generated on first start (0600).
    #[arg(long, env = "PADLOCK_AUDIT_CHECKPOINT_KEY", global = true)]
    pub audit_checkpoint_key: Option<PathBuf>,
    /// Seconds between checkpoints while the audit trail grows (one is also
    /// written at start and at shutdown).
    #[arg(
        long,
        env = "PADLOCK_AUDIT_CHECKPOINT_INTERVAL",
        default_value_t = DEFAULT_INTERVAL.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub audit_checkpoint_interval: u64,
}

impl CheckpointArgs {
    /// The settings, defaults resolved against `data_dir`.
    pub fn config(&self, data_dir: &Path) -> CheckpointConfig {
        CheckpointConfig {
            file: self
                .audit_checkpoints
                .clone()
                .unwrap_or_else(|| data_dir.join(DEFAULT_FILE)),
            key_file: self
                .audit_checkpoint_key
                .clone()
                .unwrap_or_else(|| data_dir.join(DEFAULT_KEY_FILE)),
            key_format: Arc::new(ClearPem),
            interval: Duration::from_secs(self.audit_checkpoint_interval),
        }
    }
}

/// Where a service's checkpoints and key are, and how often it writes.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub file: PathBuf,
    pub key_file: PathBuf,
    /// How the key file is kept at rest (default [`ClearPem`]).
    pub key_format: Arc<dyn KeyFormat>,
    pub interval: Duration,
}

impl CheckpointConfig {
    /// Defaults, in `data_dir`.
    pub fn in_dir(data_dir: &Path) -> Self {
        CheckpointConfig {
            file: data_dir.join(DEFAULT_FILE),
            key_file: data_dir.join(DEFAULT_KEY_FILE),
            key_format: Arc::new(ClearPem),
            interval: DEFAULT_INTERVAL,
        }
    }
}

// ---------------------------------------------------------------- the writer

/// What the chain lost since the previous checkpoint, found when writing
/// the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The chain is shorter than the previous checkpoint saw.
    Truncated { end: i64, seen: i64 },
    /// The record at the previous checkpoint's position has another hash.
    Rewritten { seq: i64 },
}

/// A checkpoint written, and anything lost since the one before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub signed: Signed,
    pub loss: Option<Loss>,
}

/// Writes checkpoints of one trail: reads the head on a connection of its
/// own, signs, appends, logs.
#[derive(Debug)]
pub struct Checkpointer {
    conn: DatabaseConnection,
    trail: Trail,
    key: Arc<CheckpointKey>,
    log: Arc<Mutex<CheckpointLog>>,
    clock: SharedClock,
    instance: String,
    /// The head the last checkpoint saw (this process's, or the last one
    /// in the file at start).
    last: Option<Link>,
}

impl Checkpointer {
    /// Opens the key (generating it if needed), the file and a connection
    /// of its own to the database at `url`, and logs the public key. The
    /// first checkpoint is the caller's to write ([`Checkpointer::spawn`]
    /// writes it at once).
    pub async fn open(
        url: &str,
        trail: Trail,
        config: &CheckpointConfig,
        clock: SharedClock,
    ) -> Result<Self, CheckpointError> {
        let (key, generated) =
            CheckpointKey::load_or_generate(&config.key_file, &*config.key_format)?;
        let public = key.public();
        tracing::info!(
            key = %public,
            path = %config.key_file.display(),
            generated,
            "audit checkpoint key (pin it: `audit verify --checkpoint-public-key`)"
        );
        let (log, torn) = CheckpointLog::open(&config.file)?;
        if torn {
            tracing::warn!(
                path = %config.file.display(),
                "the checkpoint file ended in a line cut short (a crash during a write?); \
                 ended it, the lines before it stand"
            );
        }
        let last = match last_checkpoint(&config.file, &trail.name(), &public) {
            Ok(last) => last.map(|s| s.checkpoint.head),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last checkpoint");
                None
            }
        };
        let mut options = crate::db::connect_options(url);
        options.max_connections(1).min_connections(0);
        let conn = crate::db::connect(options)
            .await
            .map_err(CheckpointError::Db)?;
        Ok(Checkpointer {
            conn,
            trail,
            key: Arc::new(key),
            log: Arc::new(Mutex::new(log)),
            clock,
            instance: instance_name(),
            last,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Reads the head and writes a checkpoint of it; at [`Reason::Timer`]
    /// only if it moved since the last one (`Ok(None)` otherwise). Logs an
    /// error if the chain lost records the last checkpoint saw, and
    /// checkpoints what is there all the same: the file keeps the earlier
    /// checkpoint, and `audit verify` reports the loss.
    pub async fn checkpoint(&mut self, reason: Reason) -> Result<Option<Written>, CheckpointError> {
        let head = audit::head_of(&self.conn, self.trail.table)
            .await
            .map_err(CheckpointError::Db)?;
        if reason == Reason::Timer && self.last == Some(head) {
            return Ok(None);
        }
        let loss = match self.last {
            Some(last) if last != head => self.loss_since(last, head).await?,
            _ => None,
        };
        if let Some(loss) = loss {
            match loss {
                Loss::Truncated { end, seen } => tracing::error!(
                    end,
                    seen,
                    "the audit trail is shorter than the last checkpoint saw: records were \
                     deleted; run `audit verify`"
                ),
                Loss::Rewritten { seq } => tracing::error!(
                    seq,
                    "the audit record at the last checkpoint's position has another hash: the \
                     trail was rewritten; run `audit verify`"
                ),
            }
        }
        let signed = Checkpoint {
            chain: self.trail.name(),
            head,
            at: self
                .clock
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            instance: self.instance.clone(),
            reason: reason.as_str().to_owned(),
        }
        .sign(&self.key);
        let log = self.log.clone();
        let line = signed.clone();
        // A write and an fsync: off the runtime's worker threads.
        tokio::task::spawn_blocking(move || match log.lock() {
            Ok(mut log) => log.append(&line),
            Err(_) => Err(CheckpointError::Poisoned),
        })
        .await
        .map_err(|_| CheckpointError::Poisoned)??;
        signed.log();
        self.last = Some(head);
        Ok(Some(Written { signed, loss }))
    }

    async fn loss_since(&self, last: Link, head: Link) -> Result<Option<Loss>, CheckpointError> {
        if head.seq < last.seq {
            return Ok(Some(Loss::Truncated {
                end: head.seq,
                seen: last.seq,
            }));
        }
        if last.seq == 0 {
            return Ok(None);
        }
        let found = audit::hashes_at(&self.conn, self.trail.table, &[last.seq])
            .await
            .map_err(CheckpointError::Db)?;
        Ok(match found.get(&last.seq) {
            Some(Some(hash)) if *hash == last.hash => None,
            _ => Some(Loss::Rewritten { seq: last.seq }),
        })
    }

    /// Writes the start checkpoint, then runs the timer in a task of its
    /// own until [`Running::finish`], which writes the shutdown
    /// checkpoint. A failure to write is logged, and tried again at the
    /// next tick.
    pub async fn spawn(mut self, interval: Duration) -> Result<Running, CheckpointError> {
        self.checkpoint(Reason::Start).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is now: the start checkpoint was just written.
            timer.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = timer.tick() => {
                        if let Err(e) = self.checkpoint(Reason::Timer).await {
                            tracing::warn!(error = %e, "audit checkpoint failed; trying again at the next tick");
                        }
                    }
                }
            }
            self
        });
        Ok(Running {
            stop: Some(stop),
            task,
        })
    }
}

/// The checkpoint timer of a serving process.
#[derive(Debug)]
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Checkpointer>,
}

impl Running {
    /// Stops the timer and writes the shutdown checkpoint. Call it after
    /// the server drained its requests, so it sees every record they
    /// appended. A failure is logged (and returned): the process is
    /// stopping anyway.
    pub async fn finish(mut self) -> Result<(), CheckpointError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.task.await {
            Ok(mut checkpointer) => {
                let written = checkpointer.checkpoint(Reason::Shutdown).await.map(|_| ());
                checkpointer.conn.close().await.ok();
                written
            }
            Err(_) => Err(CheckpointError::Poisoned),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "the shutdown audit checkpoint was not written");
        }
        result
    }
}

/// This process, as checkpoints name it: the host name (a pod's name in
/// Kubernetes) and the process id.
fn instance_name() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "unknown".into()
    } else {
        host
    };
    format!("{host}/{}", std::process::id())
}

// ---------------------------------------------------------------- verifying

/// Which checkpoints `audit verify` reads and which keys it accepts.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The files to read.
    pub files: Vec<PathBuf>,
    /// Whether `files` is the service's own default file (which may not
    /// exist yet: then there is nothing to check against), or files the
    /// operator named (which must exist).
    pub default_file: bool,
    /// Keys pinned on the command line; when empty, the public half of the
    /// key file.
    pub pinned: Vec<PublicKey>,
    pub key_file: PathBuf,
    pub key_format: Arc<dyn KeyFormat>,
}

impl Sources {
    /// What `audit verify --checkpoints FILE... --checkpoint-public-key
    /// KEY...` reads, with the service's own file and key as the defaults.
    pub fn new(config: &CheckpointConfig, files: Vec<PathBuf>, pinned: Vec<PublicKey>) -> Self {
        let default_file = files.is_empty();
        Sources {
            files: if default_file {
                vec![config.file.clone()]
            } else {
                files
            },
            default_file,
            pinned,
            key_file: config.key_file.clone(),
            key_format: config.key_format.clone(),
        }
    }
}

/// What `audit verify` found: a line per finding. Problems fail it (exit
/// 1), warnings do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The chain's head, if it is intact.
    pub intact: Option<Intact>,
    /// One line per checkpoint file read.
    pub files: Vec<String>,
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.intact.is_some()
    }

    /// Prints warnings to standard error prefixed with `service`, the
    /// summary to standard output; a failure is returned for the caller to
    /// print and exit 1 with.
    #[allow(clippy::print_stdout)]
    pub fn print(self, service: &str) -> Result<(), VerifyFailed> {
        for warning in &self.warnings {
            eprintln!("{service}: warning: {warning}");
        }
        if self.is_ok() {
            if let Some(intact) = &self.intact {
                println!("{intact}");
            }
            for line in &self.files {
                println!("{line}");
            }
            return Ok(());
        }
        Err(VerifyFailed {
            problems: self.problems,
        })
    }
}

/// `audit verify` failed: every problem, most important first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct VerifyFailed {
    pub problems: Vec<String>,
}

/// The checkpoints of one file that are valid, compared with the chain.
#[derive(Debug, Default)]
struct FileCheck {
    valid: u64,
    /// The valid checkpoint with the highest position (the latest).
    latest: Option<Checkpoint>,
}

/// What comparing checkpoints with the chain found; the most telling
/// finding of each kind is kept.
#[derive(Debug, Default)]
struct Findings {
    /// The checkpoint that saw the most records past the chain's end.
    truncated: Option<Checkpoint>,
    /// The checkpoint with the lowest position whose record has another
    /// hash now.
    rewritten: Option<Checkpoint>,
    disagreeing: u64,
}

impl Findings {
    fn beyond_end(&mut self, c: &Checkpoint) {
        self.disagreeing += 1;
        if self
            .truncated
            .as_ref()
            .is_none_or(|t| c.head.seq >= t.head.seq)
        {
            self.truncated = Some(c.clone());
        }
    }

    fn other_hash(&mut self, c: &Checkpoint) {
        self.disagreeing += 1;
        if self
            .rewritten
            .as_ref()
            .is_none_or(|r| c.head.seq < r.head.seq)
        {
            self.rewritten = Some(c.clone());
        }
    }

    fn problems(&self, end: &Link) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(c) = &self.truncated {
            problems.push(if end.seq == 0 {
                format!(
                    "the audit trail is empty but the {} saw seq {}: all its records were deleted",
                    c.describe(),
                    c.head.seq
                )
            } else {
                format!(
                    "the audit trail ends at seq {} but the {} saw seq {}: records were deleted \
                     (at least {} from the end)",
                    end.seq,
                    c.describe(),
                    c.head.seq,
                    c.head.seq - end.seq
                )
            });
        }
        if let Some(c) = &self.rewritten {
            problems.push(format!(
                "the record at seq {} is not the one the {} saw: the trail was rewritten at or \
                 before seq {}",
                c.head.seq,
                c.describe(),
                c.head.seq
            ));
        }
        if self.disagreeing > 1
            && let Some(first) = problems.first_mut()
        {
            first.push_str(&format!(
                "; {} checkpoints in all disagree with the trail",
                self.disagreeing
            ));
        }
        problems
    }
}

/// `audit verify`: walks the chain with `walk` (the service's
/// `verify_audit_chain`, which knows its columns) and checks it against
/// every valid checkpoint in `sources` (module docs).
pub async fn verify<W, F, E>(
    url: &str,
    trail: Trail,
    sources: &Sources,
    expect_head: Option<Link>,
    walk: W,
) -> Result<Report, VerifyError>
where
    W: FnOnce(Option<Link>) -> F,
    F: Future<Output = Result<Verdict, E>>,
    E: fmt::Display,
{
    let mut report = Report::default();
    // Measure the files before reading the chain (module docs).
    let mut opened = Vec::new();
    for path in &sources.files {
        match File::open(path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((len, file)) => opened.push((path.clone(), file, len)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && sources.default_file => {
                report.files.push(format!(
                    "checkpoints: none ({} does not exist: no service wrote any here), so \
                     records cut off the end cannot be found; name the files with --checkpoints",
                    path.display()
                ));
            }
            Err(e) => report.problems.push(format!(
                "cannot read checkpoints from {}: {e}",
                path.display()
            )),
        }
    }
    let verdict = walk(expect_head).await.map_err(|e| VerifyError::Chain {
        message: e.to_string(),
    })?;
    let end = match verdict {
        Verdict::Intact(intact) => {
            let end = intact.head;
            report.intact = Some(intact);
            Some(end)
        }
        Verdict::Broken(broken) => {
            report.problems.insert(0, broken.to_string());
            None
        }
    };
    if opened.is_empty() {
        return Ok(report);
    }
    // Read at the first checkpoint (auth opens its key file with its
    // data keys); a failure is reported once.
    let mut trusted: Option<Result<HashSet<PublicKey>, String>> = None;
    let mut untrusted_reported = false;
    let conn = match end {
        Some(_) => Some(
            crate::db::connect(crate::db::connect_options(url))
                .await
                .map_err(|e| VerifyError::Chain {
                    message: e.to_string(),
                })?,
        ),
        None => None,
    };
    let mut findings = Findings::default();
    let chain = trail.name();
    for (path, file, len) in opened {
        let mut batch = Vec::with_capacity(BATCH);
        let mut check = FileCheck::default();
        let mut lines = Lines::new(BufReader::new(file.take(len)));
        let mut buf = Vec::with_capacity(1024);
        let shown = path.display();
        while let Some(line) = lines
            .next_into(&mut buf)
            .map_err(|e| VerifyError::io(&path, e))?
        {
            let n = line.number;
            if line.overlong || buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let signed = match parse_line(&buf) {
                Parsed::Checkpoint(signed) => signed,
                Parsed::Other => continue,
                Parsed::Torn if !line.ended => {
                    report.warnings.push(format!(
                        "{shown} line {n}: the last line is cut short (a crash during a \
                         write?); skipped it, the checkpoints before it are checked"
                    ));
                    continue;
                }
                Parsed::Torn => {
                    report.warnings.push(format!(
                        "{shown} line {n}: not a whole checkpoint (a write cut short by a \
                         crash?); skipped"
                    ));
                    continue;
                }
                Parsed::Invalid(why) => {
                    report
                        .problems
                        .push(format!("{shown} line {n}: not a valid checkpoint: {why}"));
                    continue;
                }
            };
            let keys = match trusted.get_or_insert_with(|| trusted_keys(sources)) {
                Ok(keys) => &*keys,
                Err(problem) => {
                    if !untrusted_reported {
                        report.problems.push(problem.clone());
                        untrusted_reported = true;
                    }
                    continue;
                }
            };
            if !signed.signature_holds() {
                report.problems.push(format!(
                    "{shown} line {n}: bad signature: the checkpoint was altered after it was \
                     written"
                ));
                continue;
            }
            if !keys.contains(&signed.key) {
                report.problems.push(format!(
                    "{shown} line {n}: signed by {}, which is not a trusted checkpoint key \
                     (pin keys with --checkpoint-public-key)",
                    signed.key
                ));
                continue;
            }
            if signed.checkpoint.chain != chain {
                report.problems.push(format!(
                    "{shown} line {n}: a checkpoint of {}, not of {chain}",
                    signed.checkpoint.chain
                ));
                continue;
            }
            let c = signed.checkpoint;
            check.valid += 1;
            if check
                .latest
                .as_ref()
                .is_none_or(|l| c.head.seq >= l.head.seq)
            {
                check.latest = Some(c.clone());
            }
            batch.push(c);
            if batch.len() == BATCH {
                compare(conn.as_ref(), trail, end, &mut batch, &mut findings).await?;
            }
        }
        compare(conn.as_ref(), trail, end, &mut batch, &mut findings).await?;
        report.files.push(match &check.latest {
            Some(latest) => format!(
                "checkpoints: {} in {shown}, all consistent with the trail; the latest: {}, seq {}",
                check.valid,
                latest.describe(),
                latest.head.seq
            ),
            None => format!("checkpoints: none in {shown}"),
        });
    }
    if let Some(conn) = conn {
        conn.close().await.ok();
    }
    if let Some(end) = end {
        // The chain's findings before the files' own problems.
        let mut problems = findings.problems(&end);
        problems.append(&mut report.problems);
        report.problems = problems;
    }
    Ok(report)
}

/// The keys checkpoints may be signed with: the pinned ones, else the
/// public half of the key file.
fn trusted_keys(sources: &Sources) -> Result<HashSet<PublicKey>, String> {
    if !sources.pinned.is_empty() {
        return Ok(sources.pinned.iter().copied().collect());
    }
    match CheckpointKey::load(&sources.key_file, &*sources.key_format) {
        Ok(Some((key, _))) => Ok(HashSet::from([key.public()])),
        Ok(None) => Err(format!(
            "cannot check the checkpoints' signatures: there is no checkpoint key at {}; pin \
             the service's key with --checkpoint-public-key (`audit checkpoint-key` prints it)",
            sources.key_file.display()
        )),
        Err(e) => Err(format!("cannot check the checkpoints' signatures: {e}")),
    }
}

/// Compares a batch of valid checkpoints with the chain that ends at
/// `end` (found intact), and empties it.
async fn compare(
    conn: Option<&DatabaseConnection>,
    trail: Trail,
    end: Option<Link>,
    batch: &mut Vec<Checkpoint>,
    findings: &mut Findings,
) -> Result<(), VerifyError> {
    let (Some(conn), Some(end)) = (conn, end) else {
        batch.clear();
        return Ok(());
    };
    let mut seqs: Vec<i64> = batch
        .iter()
        .map(|c| c.head.seq)
        .filter(|seq| (1..=end.seq).contains(seq))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let hashes = if seqs.is_empty() {
        Default::default()
    } else {
        audit::hashes_at(conn, trail.table, &seqs)
            .await
            .map_err(|e| VerifyError::Chain {
                message: e.to_string(),
            })?
    };
    for c in batch.drain(..) {
        let seq = c.head.seq;
        if seq > end.seq {
            findings.beyond_end(&c);
        } else if seq == 0 {
            // The empty chain's head: nothing to compare.
        } else if hashes.get(&seq).copied().flatten() != Some(c.head.hash) {
            findings.other_hash(&c);
        }
    }
    Ok(())
}

/// Runs an `audit` subcommand for `trail`: `verify` with the service's
/// `walk` ([`verify`]), or `checkpoint-key`.
#[allow(clippy::print_stdout)]
pub async fn run_command<W, F, E>(
    command: AuditCommand,
    url: &str,
    trail: Trail,
    config: &CheckpointConfig,
    walk: W,
) -> Result<(), CommandError>
where
    W: FnOnce(Option<Link>) -> F,
    F: Future<Output = Result<Verdict, E>>,
    E: fmt::Display,
{
    match command {
        AuditCommand::Verify {
            expect_head,
            checkpoints,
            checkpoint_public_keys,
        } => {
            let sources = Sources::new(config, checkpoints, checkpoint_public_keys);
            let report = verify(url, trail, &sources, expect_head, walk).await?;
            report.print(trail.service)?;
        }
        AuditCommand::CheckpointKey => {
            let (key, generated) =
                CheckpointKey::load_or_generate(&config.key_file, &*config.key_format)?;
            println!("{}", key.public());
            if generated {
                eprintln!(
                    "{}: generated a new checkpoint key in {}",
                    trail.service,
                    config.key_file.display()
                );
            }
        }
    }
    Ok(())
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
