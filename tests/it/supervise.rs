//! In-image tests: supervise.
