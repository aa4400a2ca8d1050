//! git-gate (being built).
