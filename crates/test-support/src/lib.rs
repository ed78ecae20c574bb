//! Helpers for padlock tests.
