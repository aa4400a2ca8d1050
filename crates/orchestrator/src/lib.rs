//! The `bot-bottle` orchestrator: reads the operator's manifests, builds the sidecar image,
//! drives the bottle lifecycle, and gives the operator the supervise queue.

pub mod cli;
pub mod doctor;
pub mod home;
pub mod image;
pub mod process;
pub mod supervise;
