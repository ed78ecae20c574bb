//! The padlock policy, deploy's domain (docs/design.md, "The step-up
//! rule"): its vocabulary, the padlock table, the step-up decision and the
//! table of who may call which RPC. Pure: no I/O and no gRPC status, so
//! the service layer asks it before anything changes and the tests run it
//! as a table.

mod decision;
mod names;
mod padlocks;
pub mod rules;
mod vocabulary;

pub use decision::{Decision, Grant, Holdings, MFA_LEEWAY_SECS, Refusal, decide, second_factor};
pub(crate) use names::{AppName, FileName, Version};
pub use padlocks::{MaxAge, Policy, Rule, TEAM_CHANGE_ENV, parse_max_age_override};
pub use vocabulary::{Action, Env, Permission, Requirement, Role};

#[cfg(test)]
mod tests;
