//! In-image tests: git_gate.
