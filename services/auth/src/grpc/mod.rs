//! The gRPC surface: one module per service in `padlock.auth.v1`. Handlers
//! validate the request, call the use cases (`crate::factor` for second
//! factors) or the store, and map errors in one place (`crate::error`).
//! Nothing from a request is logged.
//!
//! Bad fields are collected one way: each check pushes `(field,
//! description)` onto a `Vec`, and [`finish`] turns a non-empty list into
//! one `INVALID_ARGUMENT` naming every field (`AuthError::Invalid`).

pub(crate) mod keys;
pub(crate) mod session;
pub mod support;
pub(crate) mod two_factor;

use prost_types::Timestamp;

use crate::error::AuthError;

// TODO(username): the username grammar (this length and
// `check_username`) is copied in deploy; one copy moves to a shared crate.
/// Longest username accepted.
pub const MAX_USERNAME_LEN: usize = 64;
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub(crate) const MAX_PASSWORD_LEN: usize = 1024;
/// NIST SP 800-63B §5.1.1.2: at least 8 characters for chosen passwords.
pub(crate) const MIN_PASSWORD_LEN: usize = 8;
/// Session tokens are 43 characters; anything much longer is not one.
pub(crate) const MAX_SESSION_TOKEN_LEN: usize = 128;

pub(crate) fn timestamp(unix: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: unix,
        nanos: 0,
    })
}

/// Checks a username: 1 to 64 of letters, digits and `. _ - @`.
pub(crate) fn check_username(
    field: &'static str,
    username: &str,
    errors: &mut Vec<(&'static str, String)>,
) {
    if username.is_empty() {
        errors.push((field, "required".into()));
    } else if username.len() > MAX_USERNAME_LEN {
        errors.push((field, format!("at most {MAX_USERNAME_LEN} characters")));
    } else if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        errors.push((field, "only letters, digits and . _ - @".into()));
    }
}

/// `Ok` when no field was flagged.
pub(crate) fn finish(errors: Vec<(&'static str, String)>) -> Result<(), AuthError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AuthError::Invalid(errors))
    }
}
