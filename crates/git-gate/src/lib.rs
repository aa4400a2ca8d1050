//! git-gate: the bottle's git server (being built).

pub mod scan;
