//! The wall clock, read in this one place. TOTP codes are a function of Unix
//! time (RFC 6238 §4); everything else the tool times uses `Instant`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock is before it).
#[allow(clippy::disallowed_methods)] // the load tool's authenticator needs the real time
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
