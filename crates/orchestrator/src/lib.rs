//! The `bot-bottle` orchestrator: reads the operator's manifests, plans a bottle, launches it
//! (networks, the sidecar bundle, the sealed agent), hands the operator the agent, tears it all
//! down again, and gives the operator the supervise queue.
//!
//! `manifest` (load, merge, validate) → `plan` (pure) → `launch` (the ordered steps and the
//! teardown ledger) over `engine` (the container engine) and `agent` (one runtime per backend);
//! `commands/` holds one file per subcommand.

pub mod agent;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod forge;
pub mod home;
pub mod image;
pub mod launch;
pub mod manifest;
pub mod plan;
pub mod supervise;
pub mod templates;
pub mod vmm;
