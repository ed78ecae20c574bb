//! Values both services check the same way: a username (auth creates
//! them, deploy names team members by them) and the protobuf timestamps
//! every contract carries. One grammar each, so auth never creates a user
//! deploy would refuse to name.

use std::fmt;

use prost_types::Timestamp;

/// Longest username accepted.
pub const MAX_USERNAME_LEN: usize = 64;

/// What a username may be, as a client is told.
pub const USERNAME_GRAMMAR: &str = "1 to 64 of letters, digits and . _ - @";

/// A username: 1 to [`MAX_USERNAME_LEN`] ASCII letters, digits and
/// `. _ - @`, case kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// The username in `value`, or why it is not one (for a field
    /// violation; never echoes the value).
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.is_empty() {
            Err("required")
        } else if value.len() > MAX_USERNAME_LEN
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        {
            Err(USERNAME_GRAMMAR)
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Unix seconds as a protobuf timestamp (always `Some`, for the optional
/// fields prost generates).
pub fn timestamp(unix: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: unix,
        nanos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_1_to_64_of_letters_digits_and_four_marks() {
        for good in ["a", "tina", "dev.ops_1-x@corp", &"x".repeat(64)] {
            assert_eq!(
                Username::parse(good).map(|u| u.into_string()),
                Ok(good.to_owned())
            );
        }
        assert_eq!(Username::parse(""), Err("required"));
        for bad in [&"x".repeat(65), "tína", "a b", "a/b", "a\u{0}", "a;drop"] {
            assert_eq!(Username::parse(bad), Err(USERNAME_GRAMMAR), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_carry_whole_seconds() {
        assert_eq!(
            timestamp(1_800_000_000),
            Some(Timestamp {
                seconds: 1_800_000_000,
                nanos: 0
            })
        );
    }
}
