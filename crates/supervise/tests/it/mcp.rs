//! The MCP server driven by the official Python SDK over streamable HTTP: handshake in every
//! protocol era, the tool list, each tool, validation errors, pending then check_request,
//! and the Host allowlist.

use std::io::{Read, Write};

use common::formats::{QueueResponse, ResponseStatus};
use common::queue::Queue;
use serde_json::json;

use crate::client::{Mode, PyClient};
use crate::harness::{Server, config, next_request};

fn answer(dir: &std::path::Path, id: &str, status: ResponseStatus, notes: &str, arguments: Option<serde_json::Value>) {
    Queue::new(dir).answer(id, &QueueResponse { status, notes: notes.into(), arguments }).unwrap();
}

#[test]
fn handshake_in_every_protocol_era_and_the_tool_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), 1));
    for (mode, want) in [(Mode::Current, "2026-07-28"), (Mode::Legacy, "2025-11-25"), (Mode::V20241105, "2024-11-05")] {
        let mut c = PyClient::connect(&server.url(), mode);
        assert_eq!(c.protocol_version(), want, "{mode:?}");
        assert_eq!(c.connected["server_name"], "bot-bottle-supervise");
        let tools = c.list_tools();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["ask_operator", "request_egress", "request_capability", "list_egress_routes", "check_request"]
        );
        let egress = &tools[1];
        assert!(egress["description"].as_str().unwrap().contains("host"));
        let schema = &egress["inputSchema"];
        assert_eq!(schema["type"], "object");
        let required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(required.contains(&"host") && required.contains(&"reason"), "{schema}");
        assert!(schema["properties"]["port"]["description"].as_str().unwrap().contains("1-65535"), "{schema}");
        // A call works in this era too (pending after the 1 s wait).
        let r = c.call_ok("request_capability", json!({"capability": "gpu", "reason": "training"}));
        assert_eq!(r["status"], "pending", "{r}");
    }
    server.stop().unwrap();
}

#[test]
fn each_tool_answered_while_the_call_waits() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.json");
    std::fs::write(&routes, r#"{"version":1,"routes":[{"host":"api.example.com","port":443,"auth":{"token_env":"EGRESS_TOKEN_0"},"matches":[{"paths":[{"type":"prefix","value":"/v1/"}]}]}]}"#).unwrap();
    let queue_dir = dir.path().join("q");
    std::fs::create_dir(&queue_dir).unwrap();
    let mut cfg = config(&queue_dir, 60);
    cfg.routes = Some(routes);
    let server = Server::start(cfg);
    let mut c = PyClient::connect(&server.url(), Mode::Current);
    let mut seen = Vec::new();

    c.start_call("ask_operator", json!({"question": "which branch?", "context": "release prep"}));
    let id = next_request(&queue_dir, &mut seen);
    let req = Queue::new(&queue_dir).request(&id).unwrap().unwrap();
    assert_eq!((req.bottle.as_str(), req.tool.as_str()), ("b1", "ask_operator"));
    assert_eq!(req.arguments, json!({"question": "which branch?", "context": "release prep"}));
    answer(&queue_dir, &id, ResponseStatus::Approved, "main", None);
    let r = c.result();
    assert_eq!(r["is_error"], false, "{r}");
    assert_eq!(r["structured"], json!({"status": "approved", "id": id, "tool": "ask_operator", "notes": "main"}));

    c.start_call(
        "request_egress",
        json!({"host": "PyPI.org", "methods": ["get"], "paths": ["/simple/"], "reason": "pip install"}),
    );
    let id = next_request(&queue_dir, &mut seen);
    let filed = Queue::new(&queue_dir).request(&id).unwrap().unwrap().arguments;
    assert_eq!(
        filed,
        json!({"host": "pypi.org", "methods": ["GET"], "paths": ["/simple/"], "reason": "pip install"}),
        "normalized"
    );
    let granted =
        json!({"host": "pypi.org", "methods": ["GET"], "paths": ["/simple/requests/"], "reason": "pip install"});
    answer(&queue_dir, &id, ResponseStatus::Modified, "only requests", Some(granted.clone()));
    let r = c.result();
    assert_eq!(r["structured"]["status"], "modified");
    assert_eq!(r["structured"]["arguments"], granted);

    c.start_call("request_capability", json!({"capability": "push to release", "reason": "ship"}));
    let id = next_request(&queue_dir, &mut seen);
    answer(&queue_dir, &id, ResponseStatus::Rejected, "not today", None);
    let r = c.result();
    assert_eq!(r["is_error"], false, "a rejection is an answer, not an error");
    assert_eq!(r["structured"]["status"], "rejected");
    assert_eq!(r["structured"]["notes"], "not today");

    let routes = c.call_ok("list_egress_routes", json!({}));
    assert_eq!(routes["routes"][0]["host"], "api.example.com");
    assert_eq!(routes["routes"][0]["matches"][0]["paths"][0]["value"], "/v1/");
    assert!(!routes.to_string().contains("EGRESS_TOKEN"), "{routes}");

    let r = c.call_ok("check_request", json!({"id": id}));
    assert_eq!(r["status"], "rejected");
    drop(c);
    server.stop().unwrap();
}

#[test]
fn timeout_is_pending_and_check_request_reports_the_later_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), 1));
    let mut c = PyClient::connect(&server.url(), Mode::V20241105);
    let r = c.call_ok("ask_operator", json!({"question": "may I?"}));
    assert_eq!(r.as_object().unwrap().len(), 2, "{r}");
    assert_eq!(r["status"], "pending");
    let id = r["id"].as_str().unwrap().to_string();
    assert!(Queue::new(dir.path()).request(&id).unwrap().is_some(), "the request stays queued");
    assert_eq!(c.call_ok("check_request", json!({"id": id}))["status"], "pending");
    answer(dir.path(), &id, ResponseStatus::Approved, "yes", None);
    let r = c.call_ok("check_request", json!({"id": id}));
    assert_eq!((r["status"].as_str(), r["notes"].as_str()), (Some("approved"), Some("yes")));

    // Another bottle's request, a malformed id, or a broken answer never leak or approve.
    let other = Queue::new(dir.path()).file("b2", "ask_operator", json!({"question": "x"})).unwrap();
    for bad in [other.id.as_str(), "../../etc/passwd", "nope"] {
        let r = c.call("check_request", json!({"id": bad}));
        assert_eq!(r["is_error"], true, "{bad}: {r}");
        assert!(r["text"].as_str().unwrap().contains("no request with id"), "{r}");
    }
    let broken = Queue::new(dir.path()).file("b1", "request_egress", json!({"host": "a.com", "reason": "x"})).unwrap();
    std::fs::write(Queue::new(dir.path()).response_path(&broken.id), br#"{"status":"approved""#).unwrap();
    let r = c.call("check_request", json!({"id": broken.id}));
    assert_eq!(r["is_error"], true, "{r}");
    assert!(r["text"].as_str().unwrap().contains("unreadable"), "{r}");
    drop(c);
    server.stop().unwrap();
}

#[test]
fn invalid_arguments_are_tool_errors_that_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), 1));
    let mut c = PyClient::connect(&server.url(), Mode::Current);
    let cases = [
        ("request_egress", json!({"host": "not a host", "reason": "x"}), "is not a DNS name"),
        (
            "request_egress",
            json!({"host": "a.example.com", "port": 0, "reason": "x"}),
            "port 0 is not between 1 and 65535",
        ),
        ("request_egress", json!({"host": "a.example.com"}), "missing field `reason`"),
        ("ask_operator", json!({"question": ""}), "`question` must not be empty"),
        ("ask_operator", json!({"question": "q", "urgent": true}), "unknown field `urgent`"),
        ("request_capability", json!({"capability": "gpu"}), "missing field `reason`"),
        ("check_request", json!({}), "missing field `id`"),
        ("list_egress_routes", json!({}), "no --routes configured"),
    ];
    for (tool, args, frag) in cases {
        let r = c.call(tool, args.clone());
        assert_eq!(r["is_error"], true, "{tool} {args}: {r}");
        assert!(r["text"].as_str().unwrap().contains(frag), "{tool} {args}: {r}");
    }
    let filed = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(filed, 0, "invalid calls file nothing");
    drop(c);
    server.stop().unwrap();
}

/// A raw initialize POST with the given Host header; returns the status code.
fn initialize_with_host(addr: std::net::SocketAddr, host: &str) -> u16 {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[test]
fn host_header_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let default = Server::start(config(dir.path(), 1));
    let port = default.addr.port();
    assert_eq!(initialize_with_host(default.addr, &format!("127.0.0.1:{port}")), 200, "loopback: a published port");
    assert_eq!(initialize_with_host(default.addr, "10.77.0.2:9100"), 403, "default: only this bundle's addresses");
    let mut cfg = config(dir.path(), 1);
    cfg.allowed_hosts = vec!["bundle.internal".into()];
    let extra = Server::start(cfg);
    assert_eq!(initialize_with_host(extra.addr, "bundle.internal:9100"), 200, "--allowed-host adds a name");
    assert_eq!(initialize_with_host(extra.addr, "localhost"), 200, "and keeps the defaults");
    assert_eq!(initialize_with_host(extra.addr, "evil.example.com"), 403);
}

#[test]
fn shutdown_answers_waiting_calls_pending() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), 600));
    let mut c = PyClient::connect(&server.url(), Mode::Legacy);
    c.start_call("ask_operator", json!({"question": "still there?"}));
    let id = next_request(dir.path(), &mut Vec::new());
    server.stop().unwrap();
    let r = c.result();
    assert_eq!(r["is_error"], false, "{r}");
    let v: serde_json::Value = serde_json::from_str(r["text"].as_str().unwrap()).unwrap();
    assert_eq!(v, json!({"status": "pending", "id": id}));
    assert!(Queue::new(dir.path()).request(&id).unwrap().is_some(), "the request stays queued");
}

#[test]
fn an_agent_cannot_flood_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::new(dir.path());
    let first = q.file("b1", "ask_operator", json!({"question": "0"})).unwrap();
    for i in 1..supervise::server::MAX_UNANSWERED {
        q.file("b1", "ask_operator", json!({"question": i.to_string()})).unwrap();
    }
    let server = Server::start(config(dir.path(), 1));
    let mut c = PyClient::connect(&server.url(), Mode::Current);
    let r = c.call("ask_operator", json!({"question": "one more?"}));
    assert_eq!(r["is_error"], true, "{r}");
    assert!(r["text"].as_str().unwrap().contains("already waiting for the operator"), "{r}");
    // Once the operator answers one, the agent may ask again.
    answer(dir.path(), &first.id, ResponseStatus::Rejected, "", None);
    assert_eq!(c.call_ok("ask_operator", json!({"question": "now?"}))["status"], "pending");
}
