//! TOTP codes (RFC 6238 over RFC 4226 HOTP, HMAC-SHA-1, six digits, 30 s
//! steps), written from the RFCs. The load tool plays the authenticator app,
//! so it does not share the auth service's `totp` module (which wraps
//! totp-rs): a code it computes is an independent check of the service.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha1::Sha1;

/// Time step in seconds. RFC 6238 §5.2 recommends 30; docs/design.md uses it.
pub const STEP_SECS: u64 = 30;
/// Code length. RFC 4226 §5.3; what Google Authenticator shows.
pub const DIGITS: u32 = 6;
/// Steps of drift the auth service accepts either side (RFC 6238 §5.2).
pub const SKEW_STEPS: u64 = 1;

/// The time step that Unix time `unix_secs` falls in (RFC 6238 §4.2, T0 = 0).
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// RFC 4226 §5.3: HMAC-SHA-1 over the big-endian counter, dynamic
/// truncation, modulo 10^digits. `digits` is at most 9.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes keys of any length (RFC 2104 §2), so this cannot fail.
    let mut mac = <Hmac<Sha1>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    binary % 10u32.pow(digits.min(9))
}

/// The six-digit code for time step `step`, zero-padded.
pub fn code(key: &[u8], step: u64) -> String {
    code_with_digits(key, step, DIGITS)
}

/// The code for `step` with `digits` digits, zero-padded.
pub fn code_with_digits(key: &[u8], step: u64, digits: u32) -> String {
    format!(
        "{:0width$}",
        hotp(key, step, digits),
        width = digits as usize
    )
}

/// The step whose code is `code` within [`SKEW_STEPS`] of `unix_secs`, as a
/// verifier checks it (RFC 6238 §5.2). Compares without an early exit, like
/// a server must; used by the micro-benchmarks, not by the load tool.
pub fn matching_step(key: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let now = step_at(unix_secs);
    let mut found = None;
    for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
        let expected = self::code(key, step);
        let differ = expected
            .bytes()
            .zip(code.bytes())
            .fold(expected.len() ^ code.len(), |acc, (a, b)| {
                acc | usize::from(a ^ b)
            });
        if differ == 0 && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 §6 base32 without padding, as authenticator apps take a key.
pub fn encode_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 §6 base32 (the "enter a provided key" form): letters in
/// either case, `=` padding optional, spaces ignored. `None` on anything
/// else or on non-zero trailing bits.
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    let body = text.trim_end_matches('=');
    for c in body.chars().filter(|c| *c != ' ') {
        let value = match c.to_ascii_uppercase() {
            u @ 'A'..='Z' => u as u32 - 'A' as u32,
            d @ '2'..='7' => d as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // Leftover bits are padding and must be zero (RFC 4648 §3.5).
    (buffer == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        // (time, 8-digit code), RFC 6238 Appendix B, also in docs/design.md.
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, expected) in vectors {
            assert_eq!(
                code_with_digits(SEED, step_at(time), 8),
                expected,
                "t={time}"
            );
        }
    }

    #[test]
    fn rfc4226_appendix_d_hotp_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(hotp(SEED, counter as u64, 6), code, "counter {counter}");
        }
    }

    #[test]
    fn six_digit_codes_are_zero_padded() {
        // RFC 6238 Appendix B at t=1111111109 is 07081804: six digits 081804.
        assert_eq!(code(SEED, step_at(1_111_111_109)), "081804");
        assert_eq!(code(SEED, step_at(59)), "287082");
    }

    #[test]
    fn matching_step_accepts_one_step_either_side_only() {
        let now = 1_700_000_015;
        let step = step_at(now);
        for drift in [-1i64, 0, 1] {
            let s = step.checked_add_signed(drift).unwrap();
            assert_eq!(matching_step(SEED, &code(SEED, s), now), Some(s));
        }
        for s in [step - 2, step + 2] {
            let c = code(SEED, s);
            // A far step's code may collide with a near one by chance; it
            // must then match that near step, never the far one.
            assert_ne!(matching_step(SEED, &c, now), Some(s));
        }
        assert_eq!(matching_step(SEED, "12345", now), None);
        assert_eq!(matching_step(SEED, "", now), None);
    }

    #[test]
    fn codes_agree_with_totp_rs() {
        for (i, time) in [0u64, 59, 1_111_111_109, 1_700_000_000, 4_000_000_000]
            .into_iter()
            .enumerate()
        {
            let key: Vec<u8> = (0..20u8)
                .map(|b| b.wrapping_mul(7) ^ (i as u8 * 13))
                .collect();
            let theirs = totp_rs::Builder::new()
                .with_algorithm(totp_rs::Algorithm::SHA1)
                .with_digits(DIGITS as u8)
                .with_step_duration(STEP_SECS)
                .with_secret(key.as_slice())
                .build_noncompliant()
                .generate(time)
                .to_string();
            assert_eq!(code(&key, step_at(time)), theirs, "t={time}");
        }
    }

    #[test]
    fn base32_decodes_rfc4648_vectors() {
        // RFC 4648 §10.
        let vectors: [(&str, &[u8]); 7] = [
            ("", b""),
            ("MY======", b"f"),
            ("MZXQ====", b"fo"),
            ("MZXW6===", b"foo"),
            ("MZXW6YQ=", b"foob"),
            ("MZXW6YTB", b"fooba"),
            ("MZXW6YTBOI======", b"foobar"),
        ];
        for (text, bytes) in vectors {
            assert_eq!(decode_base32(text).as_deref(), Some(bytes), "{text}");
            assert_eq!(encode_base32(bytes), text.trim_end_matches('='));
            assert_eq!(
                decode_base32(&text.to_ascii_lowercase()).as_deref(),
                Some(bytes)
            );
        }
        assert_eq!(
            decode_base32("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ").as_deref(),
            Some(SEED)
        );
        assert_eq!(decode_base32("MZXW6!=="), None);
        assert_eq!(decode_base32("MZ1W6==="), None);
        // "MZ" leaves two non-zero bits: not a canonical encoding.
        assert_eq!(decode_base32("MZ======"), None);
    }
}
