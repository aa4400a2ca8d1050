//! Support for the cross-crate integration tests (being built).
