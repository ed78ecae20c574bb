//! Token parsing and verification: raw text, hand-signed JSON and edits of
//! a valid token against a real key ring (see `padlock_fuzz::token`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use padlock_fuzz::token::TokenTarget;

static TARGET: LazyLock<TokenTarget> = LazyLock::new(TokenTarget::new);

fuzz_target!(|data: &[u8]| TARGET.run(data));
