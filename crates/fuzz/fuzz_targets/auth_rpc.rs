//! Every auth RPC: raw request bytes through tonic's decoding, the
//! handlers' validation and the real handlers on an in-memory store (see
//! `padlock_fuzz::auth`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use padlock_fuzz::auth::AuthTarget;

static TARGET: LazyLock<AuthTarget> = LazyLock::new(AuthTarget::new);

fuzz_target!(|data: &[u8]| {
    TARGET.run(data);
});
