//! bundle-init (being built).
