//! Access-token claims, Ed25519 signing keys, JWKS and verification.
