//! One Ed25519 signing key, its RFC 7638 key id and its public JWK (RFC 8037).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::KeyError;

/// DER prefix of a PKCS#8 v1 `OneAsymmetricKey` holding an Ed25519 seed:
/// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING {
/// OCTET STRING (32 bytes) } } (RFC 8410 §7 and §10.3). The seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 private key used to sign access tokens.
///
/// `Debug` shows the key id only; the secret is zeroized on drop.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) inner: ed25519_dalek::SigningKey,
    x: String,
    kid: String,
}

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Reads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_dalek)
            .map_err(|_| KeyError::InvalidPem)
    }

    /// The key as PKCS#8 PEM, as read by [`SigningKey::from_pkcs8_pem`] and
    /// by `openssl pkey`.
    pub fn to_pkcs8_pem(&self) -> String {
        let body = STANDARD.encode(self.to_pkcs8_der());
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    }

    /// Reads a PKCS#8 DER Ed25519 key (v1, or v2 with the public key).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(Self::from_dalek)
            .map_err(|_| KeyError::InvalidPem)
    }

    /// The key as PKCS#8 v1 DER (RFC 8410 §7): the bytes inside the PEM,
    /// for a format that seals them instead of writing them in clear.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        pkcs8_der(&self.inner)
    }

    /// RFC 7638 JWK thumbprint of the public key, used as the JWS `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK for the JWKS.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: self.x.clone(),
            kid: self.kid.clone(),
            use_: "sig".into(),
            alg: "EdDSA".into(),
        }
    }

    pub(crate) fn from_dalek(inner: ed25519_dalek::SigningKey) -> Self {
        let x = URL_SAFE_NO_PAD.encode(inner.verifying_key().as_bytes());
        let kid = thumbprint(&x);
        Self { inner, x, kid }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn pkcs8_der(key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    let mut der = Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + 32);
    der.extend_from_slice(&PKCS8_ED25519_PREFIX);
    der.extend_from_slice(key.as_bytes());
    der
}

/// RFC 7638 §3.2: SHA-256 over the required members in lexicographic order,
/// no whitespace (for OKP keys these are `crv`, `kty`, `x`; RFC 8037 §2).
/// `x` is base64url, so it needs no JSON escaping.
pub(crate) fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A public key in a JWK Set (RFC 7517, RFC 8037 for `OKP`/`Ed25519`).
///
/// Members other than `kty` default to empty when absent, so a set with
/// foreign keys still parses; [`crate::Verifier`] skips keys it cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub crv: String,
    /// base64url (no padding) of the raw 32-byte public key.
    #[serde(default)]
    pub x: String,
    #[serde(default)]
    pub kid: String,
    #[serde(rename = "use", default)]
    pub use_: String,
    #[serde(default)]
    pub alg: String,
}

/// A JWK Set document: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

    /// RFC 8037 Appendix A.1 private key.
    fn rfc8037_key() -> SigningKey {
        let d = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let seed: [u8; 32] = d.try_into().unwrap();
        SigningKey::from_dalek(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_from_rfc8037_appendix_a() {
        let key = rfc8037_key();
        let jwk = key.public_jwk();
        // RFC 8037 A.2 and A.3.
        assert_eq!(jwk.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(jwk.kid, key.kid());
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = SigningKey::generate();
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        let back = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.kid(), key.kid());
        assert_eq!(back.inner.to_bytes(), key.inner.to_bytes());
    }

    #[test]
    fn pem_is_the_rfc8410_encoding() {
        // RFC 8410 §10.3 example private key, byte for byte.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pkcs8_pem(pem).unwrap();
        assert_eq!(key.to_pkcs8_pem(), pem);
    }

    #[test]
    fn der_round_trip_keeps_the_key_and_is_the_pem_body() {
        let key = SigningKey::generate();
        let der = key.to_pkcs8_der();
        assert_eq!(der[..16], PKCS8_ED25519_PREFIX);
        assert_eq!(der[16..], key.inner.to_bytes());
        let pem = key.to_pkcs8_pem();
        assert_eq!(STANDARD.decode(pem.lines().nth(1).unwrap()).unwrap(), der);
        assert_eq!(SigningKey::from_pkcs8_der(&der).unwrap().kid(), key.kid());
        assert!(matches!(
            SigningKey::from_pkcs8_der(&der[..40]),
            Err(KeyError::InvalidPem)
        ));
    }

    #[test]
    fn pkcs8_v2_pem_with_public_key_is_read() {
        let key = SigningKey::generate();
        let v2 = key.inner.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(v2.len() > key.to_pkcs8_pem().len());
        assert_eq!(SigningKey::from_pkcs8_pem(&v2).unwrap().kid(), key.kid());
    }

    #[test]
    fn garbage_pem_is_refused() {
        assert!(matches!(
            SigningKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(KeyError::InvalidPem)
        ));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(SigningKey::generate().kid(), SigningKey::generate().kid());
    }

    #[test]
    fn jwk_serializes_as_rfc7517_members() {
        let key = rfc8037_key();
        let set = JwkSet {
            keys: vec![key.public_jwk()],
        };
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
                "use": "sig",
                "alg": "EdDSA",
            }]})
        );
        let back: JwkSet = serde_json::from_value(json).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn debug_of_signing_key_shows_kid_but_no_secret() {
        let key = SigningKey::generate();
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()));
        assert!(!debug.contains("PRIVATE"));
        assert!(!debug.contains(&URL_SAFE_NO_PAD.encode(key.inner.to_bytes())));
        let pem = key.to_pkcs8_pem();
        let pem_body = pem.lines().nth(1).unwrap();
        assert!(!debug.contains(pem_body));
        assert!(!debug.contains(&format!("{:?}", key.inner.to_bytes())));
    }
}
