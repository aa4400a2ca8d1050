//! Integration tests of the `bot-bottle` CLI, run as a real process.

// Tests drive real programs (git, curl, docker, sshd, the binaries under test) directly.
#![allow(clippy::disallowed_methods)]

mod supervise;
