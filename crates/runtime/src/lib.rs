//! What every padlock service process needs and nothing service-specific:
//! the clock, redacted secrets, the common command-line flags, rich gRPC
//! statuses, tracing and OpenTelemetry set-up (trace context in and out of
//! gRPC, RPC spans and latency), the server bootstrap (health,
//! reflection, graceful shutdown), and the audit trails' hash chain and
//! the signed checkpoints of its head.
//! Depends only on the generated contracts.

pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod db;
pub mod health;
pub mod metadata;
pub mod names;
pub mod otel;
pub mod secret;
pub mod server;
pub mod status;
pub mod telemetry;

pub use clock::{Clock, ManualClock, OffsetClock, SharedClock, SystemClock};
pub use secret::Secret;
