//! TOTP codes and E.164 phone numbers: parsing, checking, masking and the
//! enrollment URI (see `padlock_fuzz::codes`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| padlock_fuzz::codes::run(data));
