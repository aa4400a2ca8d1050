//! Shared ground of the bot-bottle workspace: the file formats the orchestrator writes and
//! the daemons read, in-bundle constants, atomic file writes, the `Secret` type, tracing
//! setup, the shutdown future and the daemon process conventions (readiness line, exit codes).
//!
//! Only what more than one crate needs lives here.

pub mod atomic;
pub mod consts;
pub mod daemon;
pub mod formats;
pub mod proc;
pub mod queue;
pub mod scan;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use secret::Secret;
