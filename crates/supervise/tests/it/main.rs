//! Integration tests of supervise: the binary's process contract, and the MCP server driven by
//! the official Python MCP SDK over streamable HTTP.

mod access;
mod client;
mod harness;
mod mcp;
mod process;
