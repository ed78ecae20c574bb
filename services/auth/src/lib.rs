//! padlock's auth service: users and primary sign-in, sessions, second-factor
//! enrollment and verification, signing keys and JWKS, support, and the auth
//! audit trail. `main.rs` is a thin shell around [`run`] so tests can start
//! the whole service in-process.

pub mod sealing;
pub mod totp;
