//! The gateway's HTTP input: routes, CSRF header, cookies, path segments,
//! query strings and JSON bodies (see `padlock_fuzz::gateway`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use padlock_fuzz::gateway::GatewayTarget;

static TARGET: LazyLock<GatewayTarget> = LazyLock::new(GatewayTarget::new);

fuzz_target!(|data: &[u8]| {
    TARGET.run(data);
});
