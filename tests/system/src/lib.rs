//! Nothing: padlock's system tests are in `tests/` (see Cargo.toml).
