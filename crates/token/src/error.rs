//! Errors of token signing/verification and of key loading. Messages never
//! carry the token, key material or attacker-chosen header values.

use std::path::PathBuf;

/// Why a token could not be signed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is too large")]
    Oversized,
    #[error("token header has no key id")]
    MissingKid,
    /// The `kid` is not in the verifier's key set; a caller may refresh its
    /// JWKS once and retry. The kid is kept for that, but not displayed.
    #[error("token is signed with an unknown key id")]
    UnknownKid(String),
    #[error("token algorithm is not allowed")]
    Algorithm,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token audience is not accepted")]
    Audience,
    #[error("token second-factor time is in the future")]
    MfaInFuture,
    #[error("token could not be signed")]
    Signing,
}

/// Why a [`crate::KeyFileFormat`] could not read a key file's text. Never
/// carries key material.
pub type KeyFormatError = Box<dyn std::error::Error + Send + Sync>;

/// Why signing keys could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but its format could not read it.
    #[error("key file {path} cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: KeyFormatError,
    },
    #[error("not an Ed25519 PKCS#8 private key")]
    InvalidPem,
}
