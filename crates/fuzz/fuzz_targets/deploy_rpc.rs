//! Every deploy RPC, `UploadPackage`'s stream included: raw request bytes
//! through tonic's decoding, the handlers' validation and the real handlers
//! on an in-memory store (see `padlock_fuzz::deploy`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use padlock_fuzz::deploy::DeployTarget;

static TARGET: LazyLock<DeployTarget> = LazyLock::new(DeployTarget::new);

fuzz_target!(|data: &[u8]| {
    TARGET.run(data);
});
