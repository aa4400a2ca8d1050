//! Integration tests that run the real sidecar image on a real Docker engine.

mod bottle;
mod bundle;
mod egress;
mod git_gate;
mod supervise;
