//! Names a request brings in, parsed once at the edge (`crate::grpc`, the
//! operator commands) into types that cannot hold anything else: an app's
//! name, a package's version and its file name. Each `parse` returns the
//! description a field violation shows when the value does not fit.

use std::fmt;

macro_rules! name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub(crate) struct $name(String);

        impl $name {
            pub(crate) fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name!(
    /// An app's name: 1 to 64 of letters, digits, spaces and `- _ .`, not
    /// starting or ending with a space.
    AppName
);
name!(
    /// A package's version: 1 to 64 of letters, digits and `. _ - +`.
    Version
);
name!(
    /// A plain file name of an MDA archive: 1 to 128 characters, no
    /// directories, no control characters, ending in `.mda`.
    FileName
);

impl AppName {
    pub(crate) fn parse(value: &str) -> Result<Self, &'static str> {
        let ok = !value.trim().is_empty()
            && value.len() <= 64
            && value.trim() == value
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
        if !ok {
            return Err("1 to 64 of letters, digits, spaces and - _ .");
        }
        Ok(Self(value.to_owned()))
    }
}

impl Version {
    pub(crate) fn parse(value: &str) -> Result<Self, &'static str> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
        if !ok {
            return Err("1 to 64 of letters, digits and . _ - +");
        }
        Ok(Self(value.to_owned()))
    }
}

impl FileName {
    pub(crate) fn parse(value: &str) -> Result<Self, &'static str> {
        let plain = !value.is_empty()
            && value.len() <= 128
            && !value.starts_with('.')
            && !value
                .chars()
                .any(|c| c.is_control() || matches!(c, '/' | '\\'));
        if !plain {
            return Err("a file name of 1 to 128 characters, without directories");
        }
        if !value.to_ascii_lowercase().ends_with(".mda") {
            return Err("must be an MDA archive (.mda)");
        }
        Ok(Self(value.to_owned()))
    }
}
