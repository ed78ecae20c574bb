//! Access-token claims, the Ed25519 signing key ring (with its on-disk key
//! files, in a format the service chooses), the JWKS that publishes it, and
//! token verification. Depends only on JWT/crypto/serde crates: no tonic, no
//! service code.

mod claims;
mod error;
mod key;
mod max_age;
mod ring;
mod verify;

pub use claims::Claims;
pub use error::{KeyError, KeyFormatError, TokenError};
pub use key::{Jwk, JwkSet, SigningKey};
pub use max_age::MaxAge;
pub use ring::{
    CURRENT_KEY_FILE, Decoded, KeyFileFormat, KeyRing, LOCK_FILE, PREVIOUS_KEY_FILE, PlainPem,
    Rewrite,
};
pub use verify::{LEEWAY_SECS, MAX_TOKEN_BYTES, Verifier};
