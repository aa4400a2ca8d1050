//! Drives `tests/mcp_client.py` — a real MCP client, the official Python SDK (`mcp` on PyPI,
//! pinned below) over streamable HTTP — one JSON command per line. Shared with the
//! orchestrator's and the in-image integration tests (included there by path).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

/// The pinned Python SDK.
pub const MCP_PACKAGE: &str = "mcp==2.3.0";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("scripts/venv").exists())
        .expect("workspace root")
        .to_path_buf()
}

/// The venv's `python`, created once (and cached across runs) by `scripts/venv`.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let root = workspace_root();
        let out = Command::new(root.join("scripts/venv"))
            .args(["mcp-client", "3.12", MCP_PACKAGE])
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/venv");
        assert!(
            out.status.success(),
            "scripts/venv mcp-client 3.12 {MCP_PACKAGE} failed (python 3.12 and pip are needed)"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("python")
    })
    .clone()
}

/// How the client negotiates: the SDK's default (current protocol), the newest handshake
/// version, or an old client offering only `2024-11-05`.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Current,
    Legacy,
    V20241105,
}

pub struct PyClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What the client reported after connecting.
    pub connected: Value,
}

impl PyClient {
    pub fn connect(url: &str, mode: Mode) -> PyClient {
        Self::start(url, mode, None)
    }

    /// Connects sending `Authorization: Bearer <token>` on every request.
    pub fn connect_with_token(url: &str, mode: Mode, token: &str) -> PyClient {
        Self::start(url, mode, Some(token))
    }

    fn start(url: &str, mode: Mode, token: Option<&str>) -> PyClient {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().find_map(|p| {
            let s = p.join("crates/supervise/tests/mcp_client.py");
            s.exists().then_some(s)
        });
        let mode = match mode {
            Mode::Current => "auto",
            Mode::Legacy => "legacy",
            Mode::V20241105 => "2024-11-05",
        };
        let mut child = Command::new(python())
            .arg(script.expect("crates/supervise/tests/mcp_client.py"))
            .args([url, mode])
            // The token travels in the environment, never on a command line.
            .envs(token.map(|t| ("MCP_BEARER_TOKEN", t)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the python MCP client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut c = PyClient { child, stdin, stdout, connected: Value::Null };
        c.connected = c.read();
        assert_eq!(c.connected["connected"], true, "client did not connect: {}", c.connected);
        c
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("reading the python client");
        assert!(n > 0, "the python client exited early (see its stderr above)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line from the client {line:?}: {e}"))
    }

    fn send(&mut self, cmd: Value) {
        writeln!(self.stdin, "{cmd}").expect("writing to the python client");
        self.stdin.flush().unwrap();
    }

    pub fn protocol_version(&self) -> &str {
        self.connected["protocol_version"].as_str().unwrap()
    }

    pub fn list_tools(&mut self) -> Vec<Value> {
        self.send(json!({"op": "list_tools"}));
        let v = self.read();
        v["tools"].as_array().unwrap_or_else(|| panic!("list_tools failed: {v}")).clone()
    }

    /// Starts a tool call; read its result with [`PyClient::result`].
    pub fn start_call(&mut self, tool: &str, args: Value) {
        self.send(json!({"op": "call", "tool": tool, "args": args}));
    }

    /// The result of the call started last: `{"is_error", "text", "structured"}`.
    pub fn result(&mut self) -> Value {
        let v = self.read();
        assert!(v.get("exception").is_none(), "call raised: {v}");
        v
    }

    pub fn call(&mut self, tool: &str, args: Value) -> Value {
        self.start_call(tool, args);
        self.result()
    }

    /// A successful call's JSON answer (fails the test on a tool error).
    pub fn call_ok(&mut self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args);
        assert_eq!(r["is_error"], false, "{tool} failed: {r}");
        serde_json::from_str(r["text"].as_str().unwrap()).unwrap()
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
