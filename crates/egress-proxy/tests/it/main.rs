//! egress-proxy integration tests: real clients (curl and a Rust hyper/rustls client) through
//! the real proxy to real HTTPS upstreams on loopback that record what they receive. Every
//! denial also asserts the upstream received nothing.

// Tests drive real programs (git, curl, docker, sshd, the binaries under test) directly.
#![allow(clippy::disallowed_methods)]

mod binary;
mod dlp;
mod encodings;
mod internal;
mod limits;
mod plain_tunnel;
mod policy;
mod reload;
mod responses;
mod scheme;
mod support;
mod websocket;
