//! padlock's deploy service: apps and their teams, environments, deployment
//! packages and their way to production, node permissions, the padlock
//! policy and the deploy audit trail. Tokens are verified against auth's
//! JWKS; the service never holds a private key and never calls auth per
//! request. `main.rs` is a thin shell, so tests can run it in-process.

pub mod blobs;
pub mod keys;
pub mod policy;
