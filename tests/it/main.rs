//! Integration tests that run the real sidecar image on a real Docker engine.

// Tests drive real programs (git, curl, docker, sshd, the binaries under test) directly.
#![allow(clippy::disallowed_methods)]

mod agents;
mod bottle;
mod bundle;
mod egress;
mod git_gate;
mod smolvm;
mod supervise;
