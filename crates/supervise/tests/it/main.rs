//! Integration tests of supervise: the binary's process contract, and the MCP server driven by
//! the official Python MCP SDK over streamable HTTP.

// Tests drive real programs (git, curl, docker, sshd, the binaries under test) directly.
#![allow(clippy::disallowed_methods)]

mod access;
mod client;
mod harness;
mod mcp;
mod process;
