//! The key ring: the current signing key plus the previous one (kept in the
//! JWKS so tokens signed before a rotation still verify), and its PEM files.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, Header};
use rand::RngCore as _;

use crate::claims::Claims;
use crate::error::{KeyError, TokenError};
use crate::key::{JwkSet, SigningKey};

/// File name of the current key inside a key directory.
pub const CURRENT_KEY_FILE: &str = "current.pem";
/// File name of the previous key inside a key directory.
pub const PREVIOUS_KEY_FILE: &str = "previous.pem";

/// Only the service user may list the key directory or read a key.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

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

    /// Signs `claims` as an EdDSA JWT whose header names the current `kid`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &self.current.encoding)
            .map_err(|_| TokenError::Signing)
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
    /// key published wins and the others load it.
    pub fn load_or_generate(dir: &Path) -> Result<Self, KeyError> {
        create_dir(dir)?;
        let current_path = dir.join(CURRENT_KEY_FILE);
        let current = match read_key(&current_path)? {
            Some(key) => key,
            None => {
                let key = SigningKey::generate();
                if publish_if_absent(dir, &current_path, &key.to_pkcs8_pem())? {
                    key
                } else {
                    read_key(&current_path)?.ok_or_else(|| not_found(&current_path))?
                }
            }
        };
        let previous = read_key(&dir.join(PREVIOUS_KEY_FILE))?;
        Ok(Self::new(current, previous))
    }

    /// Loads keys whose paths come from configuration; never writes.
    pub fn from_files(current: &Path, previous: Option<&Path>) -> Result<Self, KeyError> {
        let current_key = read_key(current)?.ok_or_else(|| not_found(current))?;
        let previous_key = match previous {
            Some(path) => Some(read_key(path)?.ok_or_else(|| not_found(path))?),
            None => None,
        };
        Ok(Self::new(current_key, previous_key))
    }

    /// Moves `dir/current.pem` to `dir/previous.pem` (dropping the old
    /// previous key) and writes a new current key; returns the new ring.
    /// The previous key is written first, so a crash in between leaves both
    /// files holding the old current key and nothing is lost.
    pub fn rotate(dir: &Path) -> Result<Self, KeyError> {
        let current_path = dir.join(CURRENT_KEY_FILE);
        let old = read_key(&current_path)?.ok_or_else(|| not_found(&current_path))?;
        let new = SigningKey::generate();
        replace(dir, &dir.join(PREVIOUS_KEY_FILE), &old.to_pkcs8_pem())?;
        replace(dir, &current_path, &new.to_pkcs8_pem())?;
        Ok(Self::new(new, Some(old)))
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

fn create_dir(dir: &Path) -> Result<(), KeyError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error(dir))
}

/// `Ok(None)` when the file does not exist.
fn read_key(path: &Path) -> Result<Option<SigningKey>, KeyError> {
    let pem = match fs::read_to_string(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    SigningKey::from_pkcs8_pem(&pem)
        .map(Some)
        .map_err(|_| KeyError::InvalidKeyFile {
            path: path.to_owned(),
        })
}

/// Writes `pem` to a new 0600 temporary file in `dir`, flushed to disk.
fn write_temp(dir: &Path, target: &Path, pem: &str) -> Result<PathBuf, KeyError> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::rngs::OsRng.next_u64()));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(pem.as_bytes())?;
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
fn replace(dir: &Path, target: &Path, pem: &str) -> Result<(), KeyError> {
    let tmp = write_temp(dir, target, pem)?;
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(target)(e));
    }
    sync_dir(dir)
}

/// Atomically creates `target` unless it exists (temp file + hard link,
/// which, unlike rename, fails instead of overwriting). `Ok(false)` when
/// another process got there first.
fn publish_if_absent(dir: &Path, target: &Path, pem: &str) -> Result<bool, KeyError> {
    let tmp = write_temp(dir, target, pem)?;
    let linked = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error(target)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn load_or_generate_writes_private_files_and_is_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let first = KeyRing::load_or_generate(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CURRENT_KEY_FILE)), 0o600);
        assert!(first.previous.is_none());
        assert!(!dir.join(PREVIOUS_KEY_FILE).exists());

        let second = KeyRing::load_or_generate(&dir).unwrap();
        assert_eq!(second.current.kid(), first.current.kid());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CURRENT_KEY_FILE)]);
    }

    #[test]
    fn rotate_moves_current_to_previous_and_persists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let original = KeyRing::load_or_generate(dir).unwrap();
        let rotated = KeyRing::rotate(dir).unwrap();
        assert_ne!(rotated.current.kid(), original.current.kid());
        assert_eq!(
            rotated.previous.as_ref().map(SigningKey::kid),
            Some(original.current.kid())
        );
        assert_eq!(mode(&dir.join(CURRENT_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(PREVIOUS_KEY_FILE)), 0o600);

        let reloaded = KeyRing::load_or_generate(dir).unwrap();
        assert_eq!(reloaded.current.kid(), rotated.current.kid());
        assert_eq!(
            reloaded.previous.as_ref().map(SigningKey::kid),
            Some(original.current.kid())
        );

        let twice = KeyRing::rotate(dir).unwrap();
        assert_eq!(
            twice.previous.as_ref().map(SigningKey::kid),
            Some(rotated.current.kid())
        );
        let kids: Vec<_> = twice.jwks().keys.into_iter().map(|k| k.kid).collect();
        assert_eq!(
            kids,
            vec![
                twice.current.kid().to_owned(),
                rotated.current.kid().to_owned()
            ]
        );
    }

    #[test]
    fn rotate_without_a_current_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = KeyRing::rotate(tmp.path()).unwrap_err();
        assert!(
            matches!(err, KeyError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn from_files_reads_configured_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let a = SigningKey::generate();
        let b = SigningKey::generate();
        let a_path = tmp.path().join("a.pem");
        let b_path = tmp.path().join("b.pem");
        fs::write(&a_path, a.to_pkcs8_pem()).unwrap();
        fs::write(&b_path, b.to_pkcs8_pem()).unwrap();

        let ring = KeyRing::from_files(&a_path, Some(&b_path)).unwrap();
        assert_eq!(ring.current.kid(), a.kid());
        assert_eq!(ring.previous.as_ref().map(SigningKey::kid), Some(b.kid()));

        let only = KeyRing::from_files(&b_path, None).unwrap();
        assert_eq!(only.current.kid(), b.kid());
        assert!(only.previous.is_none());

        let missing = tmp.path().join("missing.pem");
        assert!(matches!(
            KeyRing::from_files(&a_path, Some(&missing)),
            Err(KeyError::Io { .. })
        ));
        fs::write(&missing, "not a key").unwrap();
        assert!(matches!(
            KeyRing::from_files(&missing, None),
            Err(KeyError::InvalidKeyFile { .. })
        ));
    }

    #[test]
    fn corrupt_current_file_is_reported_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CURRENT_KEY_FILE);
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            KeyRing::load_or_generate(tmp.path()),
            Err(KeyError::InvalidKeyFile { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
    }

    #[test]
    fn publish_if_absent_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join(CURRENT_KEY_FILE);
        assert!(publish_if_absent(tmp.path(), &target, "first").unwrap());
        assert!(!publish_if_absent(tmp.path(), &target, "second").unwrap());
        assert_eq!(fs::read_to_string(&target).unwrap(), "first");
    }

    #[test]
    fn debug_of_key_ring_shows_no_pem() {
        let ring = KeyRing::new(SigningKey::generate(), Some(SigningKey::generate()));
        let debug = format!("{ring:?}");
        assert!(debug.contains(ring.current.kid()));
        assert!(!debug.contains("PRIVATE KEY"));
        let pem = ring.current.to_pkcs8_pem();
        assert!(!debug.contains(pem.lines().nth(1).unwrap()));
    }
}
