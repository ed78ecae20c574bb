//! Access-token claims, the Ed25519 signing key ring (with its on-disk key
//! files), the JWKS that publishes it, and token verification. Depends only on
//! JWT/crypto/serde crates: no tonic, no service code.

mod claims;
mod error;
mod key;
mod ring;
mod verify;

pub use claims::Claims;
pub use error::{KeyError, TokenError};
pub use key::{Jwk, JwkSet, SigningKey};
pub use ring::{CURRENT_KEY_FILE, KeyRing, PREVIOUS_KEY_FILE};
pub use verify::{LEEWAY_SECS, MAX_TOKEN_BYTES, Verifier};
