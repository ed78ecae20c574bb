//! Codes and phone numbers under fuzzing: auth's E.164 parsing and masking
//! (`padlock_auth::phone`) and its TOTP functions (`padlock_auth::totp`),
//! chosen by an input's first byte:
//!
//! - `0`: the rest is a phone number as typed;
//! - `1`: `time:u64be code` checked against a fixed secret;
//! - `2`: `time:u64be algorithm:u8 digits:u8 secret` computes a code;
//! - `3`: the rest is an account name for the enrollment URI and QR code.
//!
//! The oracle, besides "never panics": a parsed number is `+` and 8 to 15
//! digits, its masked form shows the country code and at most three more
//! digits; a code matches only if well formed and equal to the code of the
//! step it matched, within one step of the time; a computed code always
//! matches its own step.

use padlock_auth::phone::{MAX_DIGITS, MIN_DIGITS, PhoneNumber};
use padlock_auth::totp::{self, Algorithm, SKEW_STEPS, STEP_SECS, TotpSecret};

/// The secret codes are checked against (RFC 6238 Appendix B's SHA-1 seed).
const SECRET: &[u8] = b"12345678901234567890";

/// Runs one input; panics when the oracle is broken.
pub fn run(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => phone(&String::from_utf8_lossy(rest)),
        1 => {
            let (time, code) = split_time(rest);
            code_check(time, &String::from_utf8_lossy(code));
        }
        2 => {
            let (time, rest) = split_time(rest);
            let [algorithm, digits, secret @ ..] = rest else {
                return;
            };
            code_computation(time, *algorithm, *digits, secret);
        }
        _ => enrollment_uri(&String::from_utf8_lossy(rest)),
    }
}

fn phone(input: &str) {
    let Ok(number) = PhoneNumber::parse(input) else {
        return;
    };
    let digits = input
        .strip_prefix('+')
        .expect("a parsed number starts with +");
    assert!(
        (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit()),
        "parsed a number that is not E.164: {input:?}"
    );
    assert_eq!(number.e164(), input);
    let masked = number.masked();
    assert_eq!(
        format!("{number:?}"),
        masked,
        "Debug must show the masked form"
    );
    let (country, national) = masked[1..]
        .split_once(' ')
        .expect("a space after the country code");
    assert!(digits.starts_with(country), "{masked:?} for {input:?}");
    let shown = national.bytes().filter(u8::is_ascii_digit).count();
    assert!(
        shown <= 3,
        "{masked:?} shows {shown} national digits of {input:?}"
    );
    let hidden = national.bytes().filter(|b| *b == b'*').count();
    assert_eq!(
        shown + hidden + country.len(),
        digits.len(),
        "{masked:?} does not account for every digit of {input:?}"
    );
}

fn code_check(time: u64, code: &str) {
    let secret = TotpSecret::from_bytes(SECRET.to_vec());
    let Some(step) = totp::matching_step(&secret, code, time) else {
        return;
    };
    assert!(
        totp::is_well_formed(code),
        "a malformed code matched: {code:?}"
    );
    let current = time / STEP_SECS;
    assert!(
        step.abs_diff(current) <= SKEW_STEPS,
        "step {step} is too far from {current}"
    );
    let expected = totp::code_at(
        SECRET,
        Algorithm::Sha1,
        totp::DIGITS,
        step.saturating_mul(STEP_SECS),
    );
    assert_eq!(expected, code, "matched a step whose code differs");
}

fn code_computation(time: u64, algorithm: u8, digits: u8, secret: &[u8]) {
    let algorithm = match algorithm % 3 {
        0 => Algorithm::Sha1,
        1 => Algorithm::Sha256,
        _ => Algorithm::Sha512,
    };
    let digits = 6 + usize::from(digits % 3);
    let code = totp::code_at(secret, algorithm, digits, time);
    assert_eq!(code.len(), digits, "{code:?} is not {digits} digits");
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
    if algorithm == Algorithm::Sha1 && digits == totp::DIGITS {
        let secret = TotpSecret::from_bytes(secret.to_vec());
        let step = totp::matching_step(&secret, &code, time);
        assert!(
            step.is_some_and(|s| s >= time / STEP_SECS),
            "a fresh code did not match its own step"
        );
    }
}

/// Accounts are usernames, at most 64 characters; longer ones only make
/// bigger QR codes, slowly, and reach no other code.
const MAX_QR_ACCOUNT: usize = padlock_auth::grpc::MAX_USERNAME_LEN;

fn enrollment_uri(account: &str) {
    let secret = TotpSecret::from_bytes(SECRET.to_vec());
    let Ok(uri) = totp::otpauth_uri(&secret, account) else {
        return;
    };
    assert!(
        !account.is_empty() && !account.contains(':'),
        "a URI for {account:?}"
    );
    assert!(uri.starts_with("otpauth://totp/padlock:"), "{uri:?}");
    assert!(uri.contains(&format!("secret={}", secret.to_base32())));
    if account.len() <= MAX_QR_ACCOUNT {
        let svg = totp::qr_svg(&uri).expect("a short URI fits a QR code");
        assert!(svg.starts_with("<?xml"));
    }
}

fn split_time(data: &[u8]) -> (u64, &[u8]) {
    match data.split_first_chunk::<8>() {
        Some((time, rest)) => (u64::from_be_bytes(*time), rest),
        None => (0, data),
    }
}

/// `time:u64be rest` for seeds.
pub fn join_time(time: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = time.to_be_bytes().to_vec();
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_inputs_of_every_mode_pass_the_oracle() {
        let mut phone = vec![0];
        phone.extend(b"+31612345678");
        run(&phone);
        let mut check = vec![1];
        check.extend(join_time(59, b"287082"));
        run(&check);
        let mut compute = vec![2];
        compute.extend(join_time(1_111_111_109, &[0, 2]));
        compute.extend(SECRET);
        run(&compute);
        let mut uri = vec![3];
        uri.extend(b"tina@example.com");
        run(&uri);
    }

    #[test]
    fn the_rfc_vector_matches_its_step() {
        let secret = TotpSecret::from_bytes(SECRET.to_vec());
        // RFC 6238 Appendix B: 94287082 at T = 59, so 287082 in six digits.
        assert_eq!(totp::matching_step(&secret, "287082", 59), Some(1));
    }
}
