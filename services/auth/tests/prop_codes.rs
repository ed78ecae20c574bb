//! Properties of the code and phone-number parsers (issue 7, hardening):
//! E.164 parsing and masking, and TOTP code checking. The `codes` fuzz
//! target in crates/fuzz explores the same functions guided by coverage;
//! these run with every `cargo test`.

use padlock_auth::phone::{PhoneError, PhoneNumber};
use padlock_auth::totp::{self, Algorithm, DIGITS, STEP_SECS, TotpSecret};
use proptest::prelude::*;

/// Digits of a masked number, country code included.
fn digits(text: &str) -> usize {
    text.bytes().filter(u8::is_ascii_digit).count()
}

proptest! {
    #[test]
    fn any_text_parses_only_as_plus_and_8_to_15_digits(text in "\\PC{0,24}") {
        if let Ok(number) = PhoneNumber::parse(&text) {
            let rest = text.strip_prefix('+').unwrap();
            prop_assert!((8..=15).contains(&rest.len()));
            prop_assert!(rest.bytes().all(|b| b.is_ascii_digit()) && !rest.starts_with('0'));
            prop_assert_eq!(number.e164(), text.as_str());
        }
    }

    #[test]
    fn an_e164_number_parses_unless_premium_and_its_mask_hides_the_middle(
        number in "\\+[1-9][0-9]{7,14}",
    ) {
        let parsed = match PhoneNumber::parse(&number) {
            Ok(parsed) => parsed,
            Err(e) => {
                prop_assert_eq!(e, PhoneError::PremiumRate);
                return Ok(());
            }
        };
        let masked = parsed.masked();
        let (country, national) = masked[1..].split_once(' ').unwrap();
        prop_assert!(number[1..].starts_with(country));
        // The first national digit and the last two, nothing else.
        prop_assert!(digits(national) <= 3, "{} shows too much", masked);
        prop_assert_eq!(digits(&masked) + masked.matches('*').count(), number.len() - 1);
        prop_assert!(!masked.contains(&number[number.len() - 5..]), "{} shows the tail", masked);
        prop_assert_eq!(format!("{parsed:?}"), masked);
    }

    #[test]
    fn a_code_matches_within_one_step_of_its_time(
        secret in prop::collection::vec(any::<u8>(), 20),
        time in 30u64..4_000_000_000,
        drift in -1i64..=1,
    ) {
        let code = totp::code_at(&secret, Algorithm::Sha1, DIGITS, time);
        let at = time.checked_add_signed(drift * STEP_SECS as i64).unwrap();
        let step = totp::matching_step(&TotpSecret::from_bytes(secret), &code, at);
        // Later steps win a tie, so the match is at or after the code's own.
        prop_assert!(step.is_some_and(|s| s >= time / STEP_SECS && s.abs_diff(at / STEP_SECS) <= 1));
    }

    #[test]
    fn a_match_is_always_the_code_of_the_step_it_names(
        secret in prop::collection::vec(any::<u8>(), 20),
        time in any::<u64>(),
        code in "[0-9]{6}",
    ) {
        if let Some(step) = totp::matching_step(&TotpSecret::from_bytes(secret.clone()), &code, time) {
            let expected =
                totp::code_at(&secret, Algorithm::Sha1, DIGITS, step.saturating_mul(STEP_SECS));
            prop_assert_eq!(expected, code);
            prop_assert!(step.abs_diff(time / STEP_SECS) <= 1);
        }
    }

    #[test]
    fn anything_but_six_ascii_digits_never_matches(
        time in any::<u64>(),
        code in "\\PC{0,12}",
    ) {
        prop_assume!(!(code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())));
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        prop_assert_eq!(totp::matching_step(&secret, &code, time), None);
        prop_assert!(!totp::is_well_formed(&code));
    }
}
