//! The workspace's one child-process wrapper lives in `common::proc`; git-gate uses it through
//! this path.

pub use common::proc::*;
