//! The key ring: the current signing key plus the previous one (kept in the
//! JWKS so tokens signed before a rotation still verify), and its key files.
//!
//! What a key file holds is a [`KeyFileFormat`]: [`PlainPem`] is PKCS#8 PEM
//! in clear; a service that holds a data key seals keys at rest with a
//! format of its own. This module only moves files safely: 0700/0600
//! permissions, atomic publication, and a lock around every rewrite.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use jsonwebtoken::{Algorithm, Header};
use rand::RngCore as _;

use crate::claims::Claims;
use crate::error::{KeyError, KeyFormatError, TokenError};
use crate::key::{JwkSet, SigningKey};

/// File name of the current key inside a key directory.
pub const CURRENT_KEY_FILE: &str = "current.pem";
/// File name of the previous key inside a key directory.
pub const PREVIOUS_KEY_FILE: &str = "previous.pem";
/// Taken (exclusively) around every rewrite of a key directory's files, so
/// a rotation and a re-encryption never interleave.
pub const LOCK_FILE: &str = ".lock";

/// Only the service user may list the key directory or read a key.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// How a signing key is written to, and read from, the text of its file.
pub trait KeyFileFormat {
    /// The file's text for `key`.
    fn encode(&self, key: &SigningKey) -> String;
    /// The key in `text`, and whether the file should be rewritten with
    /// [`encode`](Self::encode) (e.g. it predates the format).
    fn decode(&self, text: &str) -> Result<Decoded, KeyFormatError>;
}

/// A key read from a file.
#[derive(Debug)]
pub struct Decoded {
    pub key: SigningKey,
    /// The file is readable but not in the format [`KeyFileFormat::encode`]
    /// writes now.
    pub rewrite: bool,
}

/// PKCS#8 PEM in clear, as `openssl genpkey -algorithm ed25519` writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainPem;

impl KeyFileFormat for PlainPem {
    fn encode(&self, key: &SigningKey) -> String {
        key.to_pkcs8_pem()
    }

    fn decode(&self, text: &str) -> Result<Decoded, KeyFormatError> {
        let key = SigningKey::from_pkcs8_pem(text)?;
        Ok(Decoded {
            key,
            rewrite: false,
        })
    }
}

/// What [`KeyRing::rewrite_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// There is no such file.
    Missing,
    /// The file is already in the format.
    UpToDate,
    /// The file was rewritten in the format.
    Rewritten,
    /// The file changed while it was being rewritten; it was left alone.
    ChangedMeanwhile,
}

/// Signs with `current`; publishes `current` and `previous`.
#[derive(Debug, Clone)]
pub struct KeyRing {
    pub current: SigningKey,
    pub previous: Option<SigningKey>,
}

impl KeyRing {
    pub fn new(current: SigningKey, previous: Option<SigningKey>) -> Self {
        Self { current, previous }
    }

    /// A ring with one fresh key and no files (tests, development).
    pub fn generate() -> Self {
        Self::new(SigningKey::generate(), None)
    }

    /// Signs `claims` as an EdDSA JWT whose header names the current `kid`:
    /// the JWS compact serialization (RFC 7515 §7.1) of jsonwebtoken's
    /// header and the claims as JSON, byte for byte what
    /// `jsonwebtoken::encode` makes (a test below compares them).
    /// `encode` takes the key as PKCS#8 and parses it again for every
    /// token, deriving its public half each time, about as costly as the
    /// signature itself; this signs with the key already held.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current.kid().to_owned());
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Signing)?;
        let claims = serde_json::to_vec(claims).map_err(|_| TokenError::Signing)?;
        let mut jwt = String::with_capacity((header.len() + claims.len() + 64) * 4 / 3 + 4);
        URL_SAFE_NO_PAD.encode_string(header, &mut jwt);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let signature = self.current.inner.sign(jwt.as_bytes());
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut jwt);
        Ok(jwt)
    }

    /// The public keys, current first.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: std::iter::once(&self.current)
                .chain(self.previous.as_ref())
                .map(SigningKey::public_jwk)
                .collect(),
        }
    }

    /// Loads `dir/current.pem` and, if present, `dir/previous.pem`. Creates
    /// the directory (0700) and a new current key (0600) when missing. Safe
    /// when several processes start at once on a shared directory: the first
    /// key published wins and the others load it. A file `format` asks to
    /// rewrite is rewritten in place, unless it changed meanwhile.
    pub fn load_or_generate(dir: &Path, format: &impl KeyFileFormat) -> Result<Self, KeyError> {
        create_dir(dir)?;
        let current_path = dir.join(CURRENT_KEY_FILE);
        let current = match read_and_upgrade(&current_path, format)? {
            Some(key) => key,
            None => {
                let key = SigningKey::generate();
                if publish_if_absent(dir, &current_path, &format.encode(&key))? {
                    key
                } else {
                    read_and_upgrade(&current_path, format)?
                        .ok_or_else(|| not_found(&current_path))?
                }
            }
        };
        let previous = read_and_upgrade(&dir.join(PREVIOUS_KEY_FILE), format)?;
        Ok(Self::new(current, previous))
    }

    /// Loads keys whose paths come from configuration; never writes.
    pub fn from_files(
        current: &Path,
        previous: Option<&Path>,
        format: &impl KeyFileFormat,
    ) -> Result<Self, KeyError> {
        let read = |path: &Path| {
            read_key(path, format)?
                .map(|(_, decoded)| decoded.key)
                .ok_or_else(|| not_found(path))
        };
        let previous_key = previous.map(read).transpose()?;
        Ok(Self::new(read(current)?, previous_key))
    }

    /// Moves `dir/current.pem` to `dir/previous.pem` (dropping the old
    /// previous key) and writes a new current key; returns the new ring.
    /// The previous key is written first, so a crash in between leaves both
    /// files holding the old current key and nothing is lost.
    pub fn rotate(dir: &Path, format: &impl KeyFileFormat) -> Result<Self, KeyError> {
        let current_path = dir.join(CURRENT_KEY_FILE);
        let _lock = lock_dir(dir)?;
        let (_, old) = read_key(&current_path, format)?.ok_or_else(|| not_found(&current_path))?;
        let new = SigningKey::generate();
        replace(dir, &dir.join(PREVIOUS_KEY_FILE), &format.encode(&old.key))?;
        replace(dir, &current_path, &format.encode(&new))?;
        Ok(Self::new(new, Some(old.key)))
    }

    /// Rewrites the key file at `path` in `format` if `format` asks to,
    /// keeping the key. The rewrite holds the directory's lock and happens
    /// only if the file still holds what was read, so a concurrent rotation
    /// is never undone.
    pub fn rewrite_file(path: &Path, format: &impl KeyFileFormat) -> Result<Rewrite, KeyError> {
        let Some((text, decoded)) = read_key(path, format)? else {
            return Ok(Rewrite::Missing);
        };
        if !decoded.rewrite {
            return Ok(Rewrite::UpToDate);
        }
        let dir = parent(path);
        let _lock = lock_dir(dir)?;
        match fs::read_to_string(path) {
            Ok(now) if now == text => {}
            Ok(_) => return Ok(Rewrite::ChangedMeanwhile),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Rewrite::ChangedMeanwhile),
            Err(e) => return Err(io_error(path)(e)),
        }
        replace(dir, path, &format.encode(&decoded.key))?;
        Ok(Rewrite::Rewritten)
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn not_found(path: &Path) -> KeyError {
    KeyError::Io {
        path: path.to_owned(),
        source: io::ErrorKind::NotFound.into(),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn create_dir(dir: &Path) -> Result<(), KeyError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error(dir))
}

/// An exclusive lock on `dir/.lock`, released when the file is dropped.
fn lock_dir(dir: &Path) -> Result<File, KeyError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io_error(&path))?;
    file.lock().map_err(io_error(&path))?;
    Ok(file)
}

/// The file's text and key; `Ok(None)` when the file does not exist.
fn read_key(
    path: &Path,
    format: &impl KeyFileFormat,
) -> Result<Option<(String, Decoded)>, KeyError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let decoded = format
        .decode(&text)
        .map_err(|source| KeyError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    Ok(Some((text, decoded)))
}

/// [`read_key`], then [`KeyRing::rewrite_file`] if the format asks for it.
fn read_and_upgrade(
    path: &Path,
    format: &impl KeyFileFormat,
) -> Result<Option<SigningKey>, KeyError> {
    let Some((_, decoded)) = read_key(path, format)? else {
        return Ok(None);
    };
    if decoded.rewrite {
        KeyRing::rewrite_file(path, format)?;
    }
    Ok(Some(decoded.key))
}

/// Writes `text` to a new 0600 temporary file in `dir`, flushed to disk.
fn write_temp(dir: &Path, target: &Path, text: &str) -> Result<PathBuf, KeyError> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::rngs::OsRng.next_u64()));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    match write() {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_error(&tmp)(e))
        }
    }
}

/// Makes the directory entry durable after a rename or link.
fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Atomically replaces `target` (temp file + rename).
fn replace(dir: &Path, target: &Path, text: &str) -> Result<(), KeyError> {
    let tmp = write_temp(dir, target, text)?;
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(target)(e));
    }
    sync_dir(dir)
}

/// Atomically creates `target` unless it exists (temp file + hard link,
/// which, unlike rename, fails instead of overwriting). `Ok(false)` when
/// another process got there first.
fn publish_if_absent(dir: &Path, target: &Path, text: &str) -> Result<bool, KeyError> {
    let tmp = write_temp(dir, target, text)?;
    let linked = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error(target)(e)),
    }
}

#[cfg(test)]
mod tests;
