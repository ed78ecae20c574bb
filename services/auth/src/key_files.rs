//! Signing keys at rest: each key file holds the PKCS#8 key sealed under the
//! data keys (AES-256-GCM, like every other secret), in a PEM-style armour
//! that names the data key:
//!
//! ```text
//! -----BEGIN PADLOCK SEALED PRIVATE KEY-----
//! Data-Key-Id: k1
//!
//! base64(nonce || ciphertext || tag)
//! -----END PADLOCK SEALED PRIVATE KEY-----
//! ```
//!
//! The associated data names the purpose, not the slot, so a sealed key
//! opens as the current or the previous key alike (rotation moves it) but
//! never as a TOTP secret or a phone number, which are bound to a user id.
//! Clear PKCS#8 PEM is still read: files from before sealing, and keys the
//! operator provides through `--signing-key-file`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use padlock_token::{Decoded, KeyFileFormat, KeyFormatError, SigningKey};

use crate::sealing::{DataKeys, SealError};

const BEGIN: &str = "-----BEGIN PADLOCK SEALED PRIVATE KEY-----";
const END: &str = "-----END PADLOCK SEALED PRIVATE KEY-----";
const CLEAR_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const KEY_ID_HEADER: &str = "Data-Key-Id: ";
const AAD: &[u8] = b"padlock-auth signing key v1";
/// RFC 7468 wraps base64 at 64 characters.
const LINE: usize = 64;

/// Why a key file did not open. Names the data key, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("neither a sealed padlock key nor a PKCS#8 PEM private key")]
    Unrecognised,
    #[error("the sealed key is malformed")]
    Malformed,
    #[error("sealed under data key {key_id:?}, which is not configured")]
    UnknownDataKey { key_id: String },
    #[error("sealed under data key {key_id:?} but does not open with it")]
    Authentication { key_id: String },
}

/// What a key file holds, read without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileState {
    /// PKCS#8 PEM in clear.
    Clear,
    /// Sealed under the data key `key_id`.
    Sealed { key_id: String },
}

impl KeyFileState {
    pub fn of(text: &str) -> Result<Self, KeyFileError> {
        if text.trim_start().starts_with(CLEAR_BEGIN) {
            return Ok(KeyFileState::Clear);
        }
        parse(text).map(|(key_id, _)| KeyFileState::Sealed {
            key_id: key_id.to_owned(),
        })
    }
}

/// Which files [`SealedKeyFiles`] asks the key ring to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// Seal keys found in clear (a data directory from before sealing).
    /// Keys sealed under an older data key stay: a replica that does not know
    /// the current data key yet must still read them.
    Clear,
    /// Also re-seal keys sealed under an older data key (`data-keys reseal`).
    ClearAndOlder,
    /// Only re-seal keys sealed under an older data key: clear files named by
    /// `--signing-key-file` are the operator's and are left alone.
    OlderOnly,
}

/// The key file format of padlock-auth's key directory.
#[derive(Debug, Clone, Copy)]
pub struct SealedKeyFiles<'a> {
    keys: &'a DataKeys,
    upgrade: Upgrade,
}

impl<'a> SealedKeyFiles<'a> {
    pub fn new(keys: &'a DataKeys, upgrade: Upgrade) -> Self {
        SealedKeyFiles { keys, upgrade }
    }
}

impl KeyFileFormat for SealedKeyFiles<'_> {
    fn encode(&self, key: &SigningKey) -> String {
        let sealed = self.keys.seal(&key.to_pkcs8_der(), AAD);
        let body = BASE64.encode(&sealed.blob);
        let mut text = format!("{BEGIN}\n{KEY_ID_HEADER}{}\n\n", sealed.key_id);
        for line in body.as_bytes().chunks(LINE) {
            // Base64 output is ASCII, so every chunk is a whole string.
            text.push_str(&String::from_utf8_lossy(line));
            text.push('\n');
        }
        text.push_str(END);
        text.push('\n');
        text
    }

    fn decode(&self, text: &str) -> Result<Decoded, KeyFormatError> {
        if KeyFileState::of(text)? == KeyFileState::Clear {
            return Ok(Decoded {
                key: SigningKey::from_pkcs8_pem(text)?,
                rewrite: matches!(self.upgrade, Upgrade::Clear | Upgrade::ClearAndOlder),
            });
        }
        let (key_id, blob) = parse(text)?;
        let der = self.keys.open(key_id, &blob, AAD).map_err(|e| match e {
            SealError::UnknownKeyId => KeyFileError::UnknownDataKey {
                key_id: key_id.to_owned(),
            },
            SealError::TooShort => KeyFileError::Malformed,
            SealError::Authentication => KeyFileError::Authentication {
                key_id: key_id.to_owned(),
            },
        })?;
        let key = SigningKey::from_pkcs8_der(&der)?;
        let older = key_id != self.keys.current_key_id();
        Ok(Decoded {
            key,
            rewrite: older && matches!(self.upgrade, Upgrade::ClearAndOlder | Upgrade::OlderOnly),
        })
    }
}

/// The data key id and the sealed blob of an armoured key.
fn parse(text: &str) -> Result<(&str, Vec<u8>), KeyFileError> {
    let mut lines = text.trim().lines().map(str::trim);
    if lines.next() != Some(BEGIN) {
        return Err(KeyFileError::Unrecognised);
    }
    let key_id = lines
        .next()
        .and_then(|l| l.strip_prefix(KEY_ID_HEADER))
        .ok_or(KeyFileError::Malformed)?;
    if lines.next() != Some("") {
        return Err(KeyFileError::Malformed);
    }
    let mut body = String::new();
    for line in lines.by_ref() {
        if line == END {
            let blob = BASE64.decode(body).map_err(|_| KeyFileError::Malformed)?;
            return Ok((key_id, blob));
        }
        body.push_str(line);
    }
    Err(KeyFileError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(spec: &[&str]) -> DataKeys {
        let entries: Vec<_> = spec
            .iter()
            .map(|id| format!("{id}:{}", BASE64.encode([id.len() as u8; 32])))
            .collect();
        DataKeys::parse(&entries.join(",")).unwrap()
    }

    fn k1() -> DataKeys {
        DataKeys::generate("k1").unwrap()
    }

    #[test]
    fn a_sealed_key_round_trips_and_holds_no_key_material() {
        let data = k1();
        let format = SealedKeyFiles::new(&data, Upgrade::Clear);
        let key = SigningKey::generate();
        let text = format.encode(&key);
        assert!(text.starts_with(&format!("{BEGIN}\nData-Key-Id: k1\n\n")));
        assert!(text.ends_with(&format!("{END}\n")));
        assert!(text.lines().all(|l| l.len() <= LINE));
        let der = key.to_pkcs8_der();
        let pem = key.to_pkcs8_pem();
        assert!(!text.contains(pem.lines().nth(1).unwrap()));
        assert!(!text.contains(&BASE64.encode(&der[16..])));
        let (_, blob) = parse(&text).unwrap();
        assert!(!blob.windows(32).any(|w| w == &der[16..]));

        let decoded = format.decode(&text).unwrap();
        assert_eq!(decoded.key.kid(), key.kid());
        assert!(!decoded.rewrite);
        assert_eq!(
            KeyFileState::of(&text).unwrap(),
            KeyFileState::Sealed {
                key_id: "k1".into()
            }
        );
    }

    #[test]
    fn clear_pem_is_read_and_rewritten_as_the_policy_says() {
        let data = k1();
        let pem = SigningKey::generate().to_pkcs8_pem();
        assert_eq!(KeyFileState::of(&pem).unwrap(), KeyFileState::Clear);
        for (upgrade, rewrite) in [
            (Upgrade::Clear, true),
            (Upgrade::ClearAndOlder, true),
            (Upgrade::OlderOnly, false),
        ] {
            let decoded = SealedKeyFiles::new(&data, upgrade).decode(&pem).unwrap();
            assert_eq!(decoded.rewrite, rewrite, "{upgrade:?}");
        }
    }

    #[test]
    fn a_key_under_an_older_data_key_opens_and_is_resealed_only_when_asked() {
        let old = keys(&["k1"]);
        let text = SealedKeyFiles::new(&old, Upgrade::Clear).encode(&SigningKey::generate());
        let rotated = keys(&["k2", "k1"]);
        for (upgrade, rewrite) in [
            (Upgrade::Clear, false),
            (Upgrade::ClearAndOlder, true),
            (Upgrade::OlderOnly, true),
        ] {
            let decoded = SealedKeyFiles::new(&rotated, upgrade)
                .decode(&text)
                .unwrap();
            assert_eq!(decoded.rewrite, rewrite, "{upgrade:?}");
        }
        let resealed = SealedKeyFiles::new(&rotated, Upgrade::Clear).encode(
            &SealedKeyFiles::new(&rotated, Upgrade::Clear)
                .decode(&text)
                .unwrap()
                .key,
        );
        assert!(resealed.contains("Data-Key-Id: k2\n"));
    }

    #[test]
    fn unknown_keys_tampering_and_garbage_are_clear_errors() {
        let text =
            SealedKeyFiles::new(&keys(&["k1"]), Upgrade::Clear).encode(&SigningKey::generate());
        let other = keys(&["k2"]);
        let err = SealedKeyFiles::new(&other, Upgrade::Clear)
            .decode(&text)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sealed under data key \"k1\", which is not configured"
        );

        // Same id, different key bytes.
        let impostor = DataKeys::parse(&format!("k1:{}", BASE64.encode([9u8; 32]))).unwrap();
        let err = SealedKeyFiles::new(&impostor, Upgrade::Clear)
            .decode(&text)
            .unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");

        let format = SealedKeyFiles::new(&other, Upgrade::Clear);
        for garbage in [
            "",
            "hello",
            &text.replace("Data-Key-Id", "Key"),
            &text.replace(END, ""),
            &format!("{BEGIN}\nData-Key-Id: k2\n\n!!!\n{END}\n"),
            &format!("{BEGIN}\nData-Key-Id: k2\n\nAAAA\n{END}\n"),
        ] {
            assert!(format.decode(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_sealed_secret_of_another_purpose_does_not_open_as_a_key() {
        let data = k1();
        let totp = data.seal(&SigningKey::generate().to_pkcs8_der(), b"user-1");
        let text = format!(
            "{BEGIN}\nData-Key-Id: k1\n\n{}\n{END}\n",
            BASE64.encode(&totp.blob)
        );
        assert!(
            SealedKeyFiles::new(&data, Upgrade::Clear)
                .decode(&text)
                .is_err()
        );
    }
}
