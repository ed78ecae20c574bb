//! Secrets at rest: AES-256-GCM under data keys from configuration. Each
//! ciphertext is stored with the id of the key that sealed it, so keys can
//! rotate: new data is sealed with the current key, old data still opens with
//! the key it names. Key bytes never appear in `Debug` output or errors.
//!
//! Where the keys come from is a [`DataKeySource`]: a spec from the
//! environment, a key file outside the data directory (read again on SIGHUP,
//! so a rotation needs no restart), or, for development, a generated file
//! inside the data directory.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use padlock_runtime::Secret;
use rand::RngCore;
use rand::rngs::OsRng;

/// AES-256 key length.
pub(crate) const KEY_BYTES: usize = 32;
/// GCM nonce length; 96 bits is the size NIST SP 800-38D §8.2 recommends,
/// and random 96-bit nonces are safe for far more messages than we seal.
pub(crate) const NONCE_BYTES: usize = 12;
/// GCM authentication tag length (the full 128 bits).
pub(crate) const TAG_BYTES: usize = 16;
/// Longest key id; ids are `[A-Za-z0-9_-]{1,32}`.
pub(crate) const MAX_KEY_ID_LEN: usize = 32;
/// Id of the key `load_or_generate` creates.
pub(crate) const FIRST_KEY_ID: &str = "k1";

/// A data key spec that cannot be used, or a key file that cannot be read or
/// written. Entries are named by position or id, never by their key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("data key spec is empty")]
    Empty,
    #[error("data key entry {entry} is not `id:base64key`")]
    MissingSeparator { entry: usize },
    #[error("data key entry {entry} has an invalid id (want 1 to 32 of A-Z a-z 0-9 _ -)")]
    InvalidKeyId { entry: usize },
    #[error("data key {id:?} is not valid base64")]
    InvalidBase64 { id: String },
    #[error("data key {id:?} is {len} bytes, want 32")]
    WrongKeyLength { id: String, len: usize },
    #[error("data key id {id:?} appears more than once")]
    DuplicateKeyId { id: String },
    #[error("could not read or write data key file {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("data key file {path} is invalid")]
    File {
        path: PathBuf,
        source: Box<KeysError>,
    },
    #[error(
        "the data keys come from --data-keys / PADLOCK_DATA_KEYS: put the new key first there \
         (`k2:$(openssl rand -base64 32),k1:...`)"
    )]
    NotAFile,
}

/// Where the data keys come from, so a reload reads the same place.
#[derive(Debug, Clone)]
pub enum DataKeySource {
    /// `--data-keys` / `PADLOCK_DATA_KEYS`: fixed for the life of the process.
    Spec(Secret<String>),
    /// `--data-keys-file`: a spec file the operator keeps outside the data
    /// directory; read again on reload.
    File(PathBuf),
    /// `<data-dir>/data-keys`, generated on first start. Development only:
    /// it lies beside the secrets it seals, so a copy of the data directory
    /// is enough to open them.
    Generated(PathBuf),
}

impl DataKeySource {
    pub fn load(&self) -> Result<DataKeys, KeysError> {
        match self {
            DataKeySource::Spec(spec) => DataKeys::parse(spec.expose()),
            DataKeySource::File(path) => DataKeys::load(path),
            DataKeySource::Generated(path) => DataKeys::load_or_generate(path),
        }
    }

    /// The file the keys are read from, if they come from one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DataKeySource::Spec(_) => None,
            DataKeySource::File(path) | DataKeySource::Generated(path) => Some(path),
        }
    }

    /// Puts a fresh key named `id` (default: the next free `kN`) first in the
    /// key file, keeping the others to open what they sealed, and returns
    /// the new keys. The file is replaced atomically. A spec from the
    /// command line or the environment cannot be changed from here.
    pub fn add_key(&self, id: Option<&str>) -> Result<DataKeys, KeysError> {
        let path = self.path().ok_or(KeysError::NotAFile)?;
        let keys = self.load()?;
        let id = id.map_or_else(|| keys.next_key_id(), str::to_owned);
        if keys.contains(&id) {
            return Err(KeysError::DuplicateKeyId { id });
        }
        let mut added = DataKeys::generate(&id)?;
        added.older = keys.all().cloned().collect();
        replace_file(path, format!("{}\n", added.to_spec()).as_bytes()).map_err(|source| {
            KeysError::Io {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(added)
    }
}

/// Why a sealed secret did not open. No message carries data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed with an unknown data key")]
    UnknownKeyId,
    #[error("sealed blob is too short")]
    TooShort,
    #[error("sealed blob failed authentication")]
    Authentication,
}

/// A sealed secret: the id of the key that sealed it, and
/// `nonce (12 bytes) || ciphertext || tag (16 bytes)`. Store both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub blob: Vec<u8>,
}

/// The data keys: the current one seals, any of them opens. `Debug` shows ids
/// only.
#[derive(Clone)]
pub struct DataKeys {
    current: NamedKey,
    /// Older keys, kept to open what they sealed, in spec order.
    older: Vec<NamedKey>,
}

#[derive(Clone)]
struct NamedKey {
    id: String,
    key: [u8; KEY_BYTES],
}

impl NamedKey {
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.key.into())
    }
}

impl DataKeys {
    /// Parses `id:base64key[,id:base64key...]`; the first key is current.
    /// Keys are standard base64 of 32 bytes (`openssl rand -base64 32`);
    /// whitespace around entries is ignored.
    pub fn parse(spec: &str) -> Result<DataKeys, KeysError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(KeysError::Empty);
        }
        let mut keys: Vec<NamedKey> = Vec::new();
        for (index, entry) in spec.split(',').enumerate() {
            let entry_number = index + 1;
            let entry = entry.trim();
            let (id, encoded) = entry.split_once(':').ok_or(KeysError::MissingSeparator {
                entry: entry_number,
            })?;
            if !is_valid_key_id(id) {
                return Err(KeysError::InvalidKeyId {
                    entry: entry_number,
                });
            }
            let bytes = BASE64
                .decode(encoded.trim())
                .map_err(|_| KeysError::InvalidBase64 { id: id.to_owned() })?;
            let key: [u8; KEY_BYTES] =
                bytes
                    .try_into()
                    .map_err(|bytes: Vec<u8>| KeysError::WrongKeyLength {
                        id: id.to_owned(),
                        len: bytes.len(),
                    })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(KeysError::DuplicateKeyId { id: id.to_owned() });
            }
            keys.push(NamedKey {
                id: id.to_owned(),
                key,
            });
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or(KeysError::Empty)?;
        Ok(DataKeys {
            current,
            older: keys.collect(),
        })
    }

    /// A single fresh random key named `id`.
    pub fn generate(id: &str) -> Result<DataKeys, KeysError> {
        if !is_valid_key_id(id) {
            return Err(KeysError::InvalidKeyId { entry: 1 });
        }
        let mut key = [0; KEY_BYTES];
        OsRng.fill_bytes(&mut key);
        Ok(DataKeys {
            current: NamedKey {
                id: id.to_owned(),
                key,
            },
            older: Vec::new(),
        })
    }

    /// The spec [`parse`](Self::parse) reads back: current key first.
    pub fn to_spec(&self) -> String {
        self.all()
            .map(|k| format!("{}:{}", k.id, BASE64.encode(k.key)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads the spec from `path`, or, if there is no such file, generates a
    /// key `k1` and writes it there: parent directories created 0700, the file
    /// 0600, published atomically so a reader never sees half a file. If
    /// another process publishes first, its key is used, so two replicas
    /// starting together never seal under different keys.
    pub fn load_or_generate(path: &Path) -> Result<DataKeys, KeysError> {
        match Self::load(path) {
            Err(KeysError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            loaded => return loaded,
        }
        let keys = Self::generate(FIRST_KEY_ID)?;
        match publish_new_file(path, format!("{}\n", keys.to_spec()).as_bytes()) {
            Ok(()) => Ok(keys),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path),
            Err(source) => Err(KeysError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn load(path: &Path) -> Result<DataKeys, KeysError> {
        let spec = fs::read_to_string(path).map_err(|source| KeysError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&spec).map_err(|e| KeysError::File {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// HMAC-SHA-256 of `message` under the current key, with that key's
    /// id: for values that are only ever compared, never read back (SMS
    /// codes, phone numbers as limit keys). Keyed, so a database dump alone
    /// cannot brute-force a six-digit code. The key is domain-separated from
    /// the sealing use by hashing it with a label first.
    pub fn mac(&self, message: &[u8]) -> (String, [u8; 32]) {
        (
            self.current.id.clone(),
            mac_with(&self.current.key, message),
        )
    }

    /// Whether `tag` is the MAC of `message` under key `key_id`, compared in
    /// constant time.
    pub(crate) fn verify_mac(&self, key_id: &str, message: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        let Some(key) = self.all().find(|k| k.id == key_id) else {
            return false;
        };
        let Ok(mut mac) =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&mac_key(&key.key))
        else {
            return false;
        };
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }

    /// Id of the key [`seal`](Self::seal) and [`mac`](Self::mac) use.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Every key id, current first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.all().map(|k| k.id.as_str())
    }

    /// Whether a key named `id` is here to open what it sealed.
    pub fn contains(&self, id: &str) -> bool {
        self.all().any(|k| k.id == id)
    }

    /// `k<N+1>` for the highest `k<N>` here (`k2` after `k1`).
    fn next_key_id(&self) -> String {
        let highest = self
            .all()
            .filter_map(|k| k.id.strip_prefix('k')?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        format!("k{}", highest.saturating_add(1))
    }

    /// Encrypts `plaintext` under the current key, bound to `aad` (the
    /// owner's id, so the ciphertext opens only for that owner).
    ///
    /// # Panics
    ///
    /// If `plaintext` exceeds AES-GCM's limit of about 64 GiB.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Sealed {
        let mut nonce = [0; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM refuses only plaintexts over 2^36 - 32 bytes");
        let mut blob = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Sealed {
            key_id: self.current.id.clone(),
            blob,
        }
    }

    /// Decrypts a blob [`seal`](Self::seal) produced under `key_id`, checking
    /// that it was sealed with the same `aad`.
    pub fn open(&self, key_id: &str, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self
            .all()
            .find(|k| k.id == key_id)
            .ok_or(SealError::UnknownKeyId)?;
        let (nonce, ciphertext) = blob
            .split_first_chunk::<NONCE_BYTES>()
            .filter(|(_, ciphertext)| ciphertext.len() >= TAG_BYTES)
            .ok_or(SealError::TooShort)?;
        key.cipher()
            .decrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| SealError::Authentication)
    }

    fn all(&self) -> impl Iterator<Item = &NamedKey> {
        std::iter::once(&self.current).chain(&self.older)
    }
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("current", &self.current.id)
            .field(
                "older",
                &self.older.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Writes `contents` to a 0600 temporary file beside `path`, then links it to
/// `path`. Linking, unlike renaming, fails with `AlreadyExists` instead of
/// replacing a file another process published meanwhile.
fn publish_new_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_then(path, contents, |temp| fs::hard_link(temp, path))
}

/// Replaces `path` with `contents` atomically: a reader sees the old file or
/// the new one, never half of either.
fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_then(path, contents, |temp| fs::rename(temp, path))
}

/// Writes `contents` to a fresh 0600 temporary file beside `path` (creating
/// the directory 0700), calls `publish` with it, and removes the temporary
/// name whatever happened.
fn write_then(
    path: &Path,
    contents: &[u8],
    publish: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;

    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key path has no file name"))?;
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}.tmp", hex::encode(suffix)));
    let temp = dir.join(temp_name);

    let published = write_private(&temp, contents).and_then(|()| publish(&temp));
    // The temporary name is never needed again, whether or not that worked.
    let removed = match fs::remove_file(&temp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    published?;
    removed?;
    // Make the new directory entry durable too.
    fs::File::open(dir)?.sync_all()
}

fn write_private(temp: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn mac_key(key: &[u8; KEY_BYTES]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"padlock mac key v1");
    h.update(key);
    h.finalize().into()
}

fn mac_with(key: &[u8; KEY_BYTES], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&mac_key(key))
        .expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests;
