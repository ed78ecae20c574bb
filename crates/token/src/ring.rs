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
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn tokens_are_byte_for_byte_what_jsonwebtoken_encode_makes() {
        let ring = KeyRing::generate();
        let claims = Claims {
            iss: "https://auth.padlock.test".into(),
            aud: "padlock".into(),
            sub: "u-1".into(),
            preferred_username: "tina \"ü\" <tc>".into(),
            roles: vec!["operator".into()],
            sid: "s-1".into(),
            iat: 1_800_000_000,
            exp: 1_800_000_600,
            jti: "j-1".into(),
            auth_time: 1_800_000_000,
            amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
            acr: "aal2".into(),
            mfa_at: Some(1_800_000_000),
            mfa_method: Some("totp".into()),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(ring.current.kid().to_owned());
        let key = jsonwebtoken::EncodingKey::from_ed_der(&ring.current.to_pkcs8_der());
        let expected = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(ring.sign(&claims).unwrap(), expected);
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A format that writes `tagged` + PEM and reads plain PEM as outdated,
    /// like a sealing format meeting files from before it.
    struct Tagged;

    impl KeyFileFormat for Tagged {
        fn encode(&self, key: &SigningKey) -> String {
            format!("tagged\n{}", key.to_pkcs8_pem())
        }

        fn decode(&self, text: &str) -> Result<Decoded, KeyFormatError> {
            match text.strip_prefix("tagged\n") {
                Some(pem) => Ok(Decoded {
                    key: SigningKey::from_pkcs8_pem(pem)?,
                    rewrite: false,
                }),
                None => Ok(Decoded {
                    key: SigningKey::from_pkcs8_pem(text)?,
                    rewrite: true,
                }),
            }
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn load_or_generate_writes_private_files_and_is_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let first = KeyRing::load_or_generate(&dir, &PlainPem).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CURRENT_KEY_FILE)), 0o600);
        assert!(first.previous.is_none());
        assert!(!dir.join(PREVIOUS_KEY_FILE).exists());

        let second = KeyRing::load_or_generate(&dir, &PlainPem).unwrap();
        assert_eq!(second.current.kid(), first.current.kid());
        // No temporary files are left behind, and nothing was locked.
        assert_eq!(files(&dir), vec![CURRENT_KEY_FILE]);
    }

    #[test]
    fn rotate_moves_current_to_previous_and_persists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let original = KeyRing::load_or_generate(dir, &PlainPem).unwrap();
        let rotated = KeyRing::rotate(dir, &PlainPem).unwrap();
        assert_ne!(rotated.current.kid(), original.current.kid());
        assert_eq!(
            rotated.previous.as_ref().map(SigningKey::kid),
            Some(original.current.kid())
        );
        assert_eq!(mode(&dir.join(CURRENT_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(PREVIOUS_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);

        let reloaded = KeyRing::load_or_generate(dir, &PlainPem).unwrap();
        assert_eq!(reloaded.current.kid(), rotated.current.kid());
        assert_eq!(
            reloaded.previous.as_ref().map(SigningKey::kid),
            Some(original.current.kid())
        );

        let twice = KeyRing::rotate(dir, &PlainPem).unwrap();
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
        let err = KeyRing::rotate(tmp.path(), &PlainPem).unwrap_err();
        assert!(
            matches!(err, KeyError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn rotate_writes_in_the_format() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        KeyRing::load_or_generate(dir, &PlainPem).unwrap();
        KeyRing::rotate(dir, &Tagged).unwrap();
        for name in [CURRENT_KEY_FILE, PREVIOUS_KEY_FILE] {
            assert!(
                fs::read_to_string(dir.join(name))
                    .unwrap()
                    .starts_with("tagged\n")
            );
        }
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

        let ring = KeyRing::from_files(&a_path, Some(&b_path), &PlainPem).unwrap();
        assert_eq!(ring.current.kid(), a.kid());
        assert_eq!(ring.previous.as_ref().map(SigningKey::kid), Some(b.kid()));

        let only = KeyRing::from_files(&b_path, None, &PlainPem).unwrap();
        assert_eq!(only.current.kid(), b.kid());
        assert!(only.previous.is_none());

        let missing = tmp.path().join("missing.pem");
        assert!(matches!(
            KeyRing::from_files(&a_path, Some(&missing), &PlainPem),
            Err(KeyError::Io { .. })
        ));
        fs::write(&missing, "not a key").unwrap();
        assert!(matches!(
            KeyRing::from_files(&missing, None, &PlainPem),
            Err(KeyError::Unreadable { .. })
        ));
    }

    #[test]
    fn from_files_never_rewrites() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.pem");
        let pem = SigningKey::generate().to_pkcs8_pem();
        fs::write(&path, &pem).unwrap();
        KeyRing::from_files(&path, None, &Tagged).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), pem);
        assert_eq!(files(tmp.path()), vec!["a.pem"]);
    }

    #[test]
    fn loading_rewrites_outdated_files_in_the_format_keeping_the_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        KeyRing::load_or_generate(dir, &PlainPem).unwrap();
        let plain = KeyRing::rotate(dir, &PlainPem).unwrap();

        let upgraded = KeyRing::load_or_generate(dir, &Tagged).unwrap();
        assert_eq!(upgraded.current.kid(), plain.current.kid());
        assert_eq!(
            upgraded.previous.as_ref().map(SigningKey::kid),
            plain.previous.as_ref().map(SigningKey::kid)
        );
        for name in [CURRENT_KEY_FILE, PREVIOUS_KEY_FILE] {
            let text = fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.starts_with("tagged\n"), "{name}");
            assert_eq!(mode(&dir.join(name)), 0o600);
        }
        assert_eq!(
            files(dir),
            vec![LOCK_FILE, CURRENT_KEY_FILE, PREVIOUS_KEY_FILE]
        );
    }

    #[test]
    fn rewrite_file_reports_what_it_did() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CURRENT_KEY_FILE);
        assert_eq!(
            KeyRing::rewrite_file(&path, &Tagged).unwrap(),
            Rewrite::Missing
        );
        let key = SigningKey::generate();
        fs::write(&path, key.to_pkcs8_pem()).unwrap();
        assert_eq!(
            KeyRing::rewrite_file(&path, &Tagged).unwrap(),
            Rewrite::Rewritten
        );
        assert_eq!(
            KeyRing::rewrite_file(&path, &Tagged).unwrap(),
            Rewrite::UpToDate
        );
        let back = KeyRing::from_files(&path, None, &Tagged).unwrap();
        assert_eq!(back.current.kid(), key.kid());
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            KeyRing::rewrite_file(&path, &Tagged),
            Err(KeyError::Unreadable { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
    }

    /// A format whose decode lets the test replace the file between the
    /// read and the rewrite, as a concurrent rotation would.
    struct Racing<'a> {
        path: &'a Path,
        replacement: String,
    }

    impl KeyFileFormat for Racing<'_> {
        fn encode(&self, key: &SigningKey) -> String {
            Tagged.encode(key)
        }

        fn decode(&self, text: &str) -> Result<Decoded, KeyFormatError> {
            let decoded = Tagged.decode(text)?;
            if decoded.rewrite {
                fs::write(self.path, &self.replacement).unwrap();
            }
            Ok(decoded)
        }
    }

    #[test]
    fn a_file_changed_during_a_rewrite_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CURRENT_KEY_FILE);
        fs::write(&path, SigningKey::generate().to_pkcs8_pem()).unwrap();
        let rotated = Tagged.encode(&SigningKey::generate());
        let racing = Racing {
            path: &path,
            replacement: rotated.clone(),
        };
        assert_eq!(
            KeyRing::rewrite_file(&path, &racing).unwrap(),
            Rewrite::ChangedMeanwhile
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), rotated);
    }

    #[test]
    fn corrupt_current_file_is_reported_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CURRENT_KEY_FILE);
        fs::write(&path, "garbage").unwrap();
        let err = KeyRing::load_or_generate(tmp.path(), &PlainPem).unwrap_err();
        assert!(matches!(err, KeyError::Unreadable { .. }));
        assert!(err.to_string().contains(CURRENT_KEY_FILE), "{err}");
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
