//! One checkpoint line: what is signed, how it is written as JSON, and how
//! lines are read back from a checkpoint file or a JSON log (torn lines
//! skipped).

use super::*;

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
    pub(super) fn signed_message(&self) -> Vec<u8> {
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
    pub(super) fn describe(&self) -> String {
        format!(
            "checkpoint of {} ({}, {})",
            self.at, self.instance, self.reason
        )
    }
}

// The encoding of `crate::audit`'s record hash, into a buffer.
pub(super) fn put_int(out: &mut Vec<u8>, n: i64) {
    out.push(1);
    out.extend_from_slice(&n.to_be_bytes());
}

pub(super) fn put_text(out: &mut Vec<u8>, s: &str) {
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
    pub(super) fn log(&self) {
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

pub(super) fn checkpoint_from(fields: &Map<String, Json>) -> Result<Signed, String> {
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
pub(super) struct Lines<R> {
    pub(super) reader: R,
    pub(super) number: u64,
}

/// One line: its bytes without the newline, whether a newline ended it,
/// and whether it was longer than [`MAX_LINE`] (then its bytes are cut).
#[derive(Debug)]
pub(super) struct Line {
    pub(super) number: u64,
    pub(super) ended: bool,
    pub(super) overlong: bool,
}

impl<R: BufRead> Lines<R> {
    pub(super) fn new(reader: R) -> Self {
        Lines { reader, number: 0 }
    }

    pub(super) fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
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
