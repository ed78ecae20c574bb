//! The gRPC surface: one module per service in `padlock.auth.v1`. Handlers
//! validate the request, call the use cases (`crate::factor` for second
//! factors) or the store, and map errors in one place (`crate::error`).
//! Nothing from a request is logged.
//!
//! Bad fields are collected one way, in `padlock_runtime`'s `Violations`
//! (as deploy and the gateway do), and [`finish`] turns a non-empty list
//! into one `INVALID_ARGUMENT` naming every field (`AuthError::Invalid`).

pub(crate) mod keys;
pub(crate) mod session;
pub mod support;
pub(crate) mod two_factor;

use padlock_runtime::status::Violations;

use crate::error::AuthError;

pub use padlock_runtime::names::MAX_USERNAME_LEN;
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub(crate) const MAX_PASSWORD_LEN: usize = 1024;
/// NIST SP 800-63B §5.1.1.2: at least 8 characters for chosen passwords.
pub(crate) const MIN_PASSWORD_LEN: usize = 8;
/// Session tokens are 43 characters; anything much longer is not one.
pub(crate) const MAX_SESSION_TOKEN_LEN: usize = 128;

pub(crate) use padlock_runtime::names::timestamp;

/// Checks a username by the grammar both services share.
pub(crate) fn check_username(field: &'static str, username: &str, errors: &mut Violations) {
    errors.username(field, username);
}

/// `Ok` when no field was flagged.
pub(crate) fn finish(errors: Violations) -> Result<(), AuthError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AuthError::Invalid(errors))
    }
}
