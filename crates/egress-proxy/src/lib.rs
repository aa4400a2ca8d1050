//! egress-proxy (being built).
