//! Phone numbers for SMS codes: E.164 only, no premium-rate ranges, and a
//! masked form for showing (`+31 6** *** *78`). A full number never goes
//! to logs, spans, errors or the audit trail; `Debug` masks it too.

use std::fmt;

/// E.164: a `+`, then at most 15 digits, the first not 0 (ITU-T E.164 §6).
pub const MAX_DIGITS: usize = 15;
/// Shorter than this is no mobile number anywhere.
pub const MIN_DIGITS: usize = 8;

/// Premium-rate and shared-cost ranges, where a text can cost the sender
/// money or feed SMS pumping fraud: North American 900/976, UK 09/087,
/// Dutch 090x, German 0900/0137, French 08 9x, Italian 89x, Spanish 80x/90x.
const PREMIUM_PREFIXES: &[&str] = &[
    "1900", "1976", "449", "4487", "3190", "49900", "49137", "3389", "3989", "3480", "3490",
];

/// Two-digit country calling codes (ITU-T E.164 assigned list, abridged to
/// those in use); one digit for 1 and 7; everything else has three.
const TWO_DIGIT_CODES: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

/// Why a number was refused; each names the problem for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("required")]
    Empty,
    #[error("must be in international E.164 form, e.g. +31612345678")]
    NotE164,
    #[error("premium-rate numbers cannot receive codes")]
    PremiumRate,
}

impl PhoneNumber {
    /// Parses E.164 (`+` and digits only; spaces are not accepted, so what
    /// the user typed is what gets texted).
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        if input.is_empty() {
            return Err(PhoneError::Empty);
        }
        let Some(digits) = input.strip_prefix('+') else {
            return Err(PhoneError::NotE164);
        };
        let ok = (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !ok {
            return Err(PhoneError::NotE164);
        }
        if PREMIUM_PREFIXES.iter().any(|p| digits.starts_with(p)) {
            return Err(PhoneError::PremiumRate);
        }
        Ok(PhoneNumber(input.to_owned()))
    }

    /// The number, for the SMS provider only.
    pub fn e164(&self) -> &str {
        &self.0
    }

    fn country_code_len(digits: &str) -> usize {
        if digits.starts_with('1') || digits.starts_with('7') {
            1
        } else if TWO_DIGIT_CODES.iter().any(|c| digits.starts_with(c)) {
            2
        } else {
            3
        }
    }

    /// `+CC` and the national number in groups, showing only its
    /// first digit and last two: `+31 6** *** *78`.
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let cc = Self::country_code_len(digits);
        let national: Vec<char> = digits[cc..].chars().collect();
        let n = national.len();
        let shown: String = national
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 || i + 2 >= n { *c } else { '*' })
            .collect();
        // Two groups of three, then the rest: 6** *** *78, 4** *** **23.
        let chars: Vec<char> = shown.chars().collect();
        let mut groups: Vec<String> = Vec::new();
        let mut rest = chars.as_slice();
        while rest.len() > 4 && groups.len() < 2 {
            groups.push(rest[..3].iter().collect());
            rest = &rest[3..];
        }
        groups.push(rest.iter().collect());
        format!("+{} {}", &digits[..cc], groups.join(" "))
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_all_but_the_country_code_first_and_last_two_digits() {
        assert_eq!(
            PhoneNumber::parse("+31612345678").unwrap().masked(),
            "+31 6** *** *78"
        );
        assert_eq!(
            PhoneNumber::parse("+14155550123").unwrap().masked(),
            "+1 4** *** **23"
        );
        assert_eq!(
            PhoneNumber::parse("+353871234567").unwrap().masked(),
            "+353 8** *** *67"
        );
        assert_eq!(
            format!("{:?}", PhoneNumber::parse("+31612345678").unwrap()),
            "+31 6** *** *78"
        );
    }

    #[test]
    fn only_e164_is_accepted() {
        for bad in [
            "0612345678",
            "+31 612345678",
            "31612345678",
            "+0612345678",
            "+316",
            "+3161234567890123",
            "+31-612345678",
            "+３１612345678",
            "+31612345678\n",
        ] {
            assert_eq!(PhoneNumber::parse(bad), Err(PhoneError::NotE164), "{bad:?}");
        }
        assert_eq!(PhoneNumber::parse(""), Err(PhoneError::Empty));
        assert!(PhoneNumber::parse("+447700900123").is_ok());
    }

    #[test]
    fn premium_rate_numbers_are_refused() {
        for premium in [
            "+19005551234",
            "+319001234567",
            "+449091234567",
            "+499001234567",
        ] {
            assert_eq!(
                PhoneNumber::parse(premium),
                Err(PhoneError::PremiumRate),
                "{premium}"
            );
        }
    }
}
