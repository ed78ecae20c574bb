//! The checkpoint key: an Ed25519 key pair kept in a file of the data
//! directory (sealed by the service when it can), and its public half as
//! `audit verify` pins it.

use super::*;

// ---------------------------------------------------------------- keys

/// A checkpoint public key, `ed25519:` and 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub(super) VerifyingKey);

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

pub(super) fn pkcs8_der(key: &SigningKey) -> Result<Vec<u8>, String> {
    key.to_pkcs8_der()
        .map(|der| der.as_bytes().to_vec())
        .map_err(|_| "cannot encode the key".to_owned())
}

/// The key a service signs its checkpoints with: Ed25519, in a 0600 file
/// in a [`KeyFormat`].
pub struct CheckpointKey(pub(super) SigningKey);

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
    pub(super) fn write(
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
pub(super) enum Place {
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
