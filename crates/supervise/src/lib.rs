//! supervise: the MCP server (streamable HTTP at `/mcp`, rmcp) through which a bottled agent
//! asks its human operator — a question, a new egress route, a capability — and checks on
//! earlier requests. Requests are files in the bottle's queue directory (`common::queue`); the
//! operator answers them from `bot-bottle supervise` on the host.
//!
//! Layout: [`access`] (Host allowlist, Origin and bearer token: every request passes it),
//! [`config`] (flags → validated [`Config`]), [`tools`] (argument types, schemas,
//! descriptions and validation: pure), [`server`] (the rmcp handler and the HTTP server).

pub mod access;
pub mod config;
pub mod server;
pub mod tools;

pub use config::{Args, Config};
pub use server::{SERVER_NAME, Supervise, run};
