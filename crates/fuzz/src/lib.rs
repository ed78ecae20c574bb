//! What padlock's fuzz targets share: the byte layout of an RPC input
//! ([`input`]), calling a service's gRPC routes in-process with raw request
//! bytes and judging the status ([`grpc`]), and one harness per service,
//! built once per fuzzing process on an in-memory SQLite store with a
//! manual clock ([`auth`], [`deploy`], [`gateway`]), the token and code
//! checks ([`token`], [`codes`]) and the seed corpus ([`seeds`]).
//!
//! The targets in `fuzz_targets/` are one call each into this library, so
//! a crash found by a target reproduces from a plain test too.

pub mod auth;
pub mod codes;
pub mod deploy;
pub mod gateway;
pub mod grpc;
pub mod input;
pub mod seeds;
pub mod token;

/// 2027-01-15T08:00:00Z, the same fixed start the services' tests use.
pub const START: i64 = 1_800_000_000;

/// A current-thread Tokio runtime with I/O and timers: one per harness,
/// so every input runs on the fuzzer's own thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}
