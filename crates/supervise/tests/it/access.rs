//! supervise answers only its own bottle: a request naming a foreign Host, carrying a foreign
//! Origin, or (with `--auth-token-file`) lacking the bearer token is refused on every method
//! and path, and nothing lands in the queue. Tried as a DNS-rebinding page or a neighbouring
//! bottle would: Host with a port, a trailing dot, other case; `Origin: null`; the token in the
//! query, of the wrong length, under another scheme; the GET and DELETE of an open session.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;

use crate::client::{Mode, PyClient};
use crate::harness::{Server, config_with, next_request};

/// A raw HTTP/1.1 request; returns the status, the response headers (lowercase names) and body.
fn http(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    // An SSE stream stays open: what arrived within the timeout is enough.
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_string())
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");
const VERSION: (&str, &str) = ("MCP-Protocol-Version", "2025-06-18");

fn initialize(addr: SocketAddr, host: &str, extra: &[(&str, &str)]) -> (u16, Option<String>) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let mut headers = vec![("Host", host), JSON, ACCEPT];
    headers.extend_from_slice(extra);
    let (code, head, _) = http(addr, "POST", "/mcp", &headers, body);
    let session = head.lines().find_map(|l| l.strip_prefix("mcp-session-id:")).map(|v| v.trim().to_string());
    (code, session)
}

/// A session set up with `good` headers (initialize + initialized).
fn session(addr: SocketAddr, host: &str, good: &[(&str, &str)]) -> String {
    let (code, sid) = initialize(addr, host, good);
    assert_eq!(code, 200, "initialize with the right headers");
    let sid = sid.expect("a session id");
    let mut headers = vec![("Host", host), JSON, ACCEPT, VERSION, ("Mcp-Session-Id", sid.as_str())];
    headers.extend_from_slice(good);
    let (code, _, _) =
        http(addr, "POST", "/mcp", &headers, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert!(code == 202 || code == 200, "initialized: {code}");
    sid
}

/// tools/call ask_operator in session `sid` with exactly these headers (plus the JSON ones).
fn ask(addr: SocketAddr, target: &str, sid: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut all = vec![JSON, ACCEPT, VERSION, ("Mcp-Session-Id", sid)];
    all.extend_from_slice(headers);
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ask_operator","arguments":{"question":"may I?"}}}"#;
    let (code, _, body) = http(addr, "POST", target, &all, body);
    (code, body)
}

fn queued(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".request.json"))
        .count()
}

/// A fresh random token (hex), made at test time.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

#[test]
fn a_foreign_host_or_origin_is_refused_by_default_and_files_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config_with(dir.path(), 1, &[]));
    let addr = server.addr;
    let local = format!("127.0.0.1:{}", addr.port());
    let sid = session(addr, &local, &[]);
    let mut failures = Vec::new();
    for (what, headers) in [
        ("a rebinding page's name", vec![("Host", "evil.example")]),
        ("with the port", vec![("Host", &*format!("evil.example:{}", addr.port()))]),
        ("with a trailing dot", vec![("Host", "evil.example.")]),
        ("in capitals", vec![("Host", "EVIL.EXAMPLE")]),
        ("a name under localhost", vec![("Host", "evil.localhost")]),
        ("another bundle's address", vec![("Host", "10.77.0.3:9100")]),
        ("a foreign Origin", vec![("Host", &*local), ("Origin", "http://evil.example")]),
        ("Origin: null", vec![("Host", &*local), ("Origin", "null")]),
        (
            "an Origin naming loopback under another name",
            vec![("Host", &*local), ("Origin", "http://127.0.0.1.nip.io")],
        ),
    ] {
        let (code, body) = ask(addr, "/mcp", &sid, &headers);
        if code != 403 && code != 400 {
            failures.push(format!("{what}: status {code}, {body}"));
        }
        if queued(dir.path()) != 0 {
            failures.push(format!("{what}: a request landed in the queue"));
            for e in std::fs::read_dir(dir.path()).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
    }
    // An absolute-form request target names its host as well.
    let (code, _) = ask(addr, "http://evil.example/mcp", &sid, &[("Host", &local)]);
    if code != 403 {
        failures.push(format!("absolute-form target: status {code}"));
    }
    assert!(failures.is_empty(), "{} way(s) through:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(queued(dir.path()), 0);

    // Loopback under any name and case, with or without port, is this bundle (a published port).
    for host in [local.as_str(), "localhost", "LOCALHOST.", "[::1]:9100"] {
        assert_eq!(initialize(addr, host, &[]).0, 200, "{host}");
    }
    let (code, body) = ask(addr, "/mcp", &sid, &[("Host", "localhost."), ("Origin", &format!("http://{local}"))]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(queued(dir.path()), 1, "the allowed request is filed");
}

#[test]
fn without_the_token_every_request_is_refused_and_files_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("q");
    std::fs::create_dir(&queue).unwrap();
    let token = random_token();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let server = Server::start(config_with(&queue, 1, &["--auth-token-file", token_file.to_str().unwrap()]));
    let addr = server.addr;
    let host = format!("127.0.0.1:{}", addr.port());
    let bearer = format!("Bearer {token}");
    let good = [("Host", host.as_str()), ("Authorization", bearer.as_str())];
    assert_eq!(initialize(addr, &host, &[]).0, 401, "initialize without a token");
    let sid = session(addr, &host, &[("Authorization", &bearer)]);

    let same_length = format!("Bearer {}", "0".repeat(token.len()));
    let shorter = format!("Bearer {}", &token[..token.len() - 1]);
    let longer = format!("Bearer {token}0");
    let basic = format!("Basic {token}");
    let mut failures = Vec::new();
    for (what, target, headers) in [
        ("no Authorization", "/mcp".to_string(), vec![("Host", host.as_str())]),
        ("a wrong token of the same length", "/mcp".into(), vec![("Host", &*host), ("Authorization", &*same_length)]),
        ("a prefix of the token", "/mcp".into(), vec![("Host", &*host), ("Authorization", &*shorter)]),
        ("the token and more", "/mcp".into(), vec![("Host", &*host), ("Authorization", &*longer)]),
        ("the token under Basic", "/mcp".into(), vec![("Host", &*host), ("Authorization", &*basic)]),
        ("the bare token", "/mcp".into(), vec![("Host", &*host), ("Authorization", &*token)]),
        ("the token in the query", format!("/mcp?access_token={token}"), vec![("Host", &*host)]),
        ("the token in another header", "/mcp".into(), vec![("Host", &*host), ("X-Api-Key", &*token)]),
        ("the token but a foreign Host", "/mcp".into(), vec![("Host", "evil.example"), ("Authorization", &*bearer)]),
    ] {
        let (code, body) = ask(addr, &target, &sid, &headers);
        if !matches!(code, 401 | 403) {
            failures.push(format!("{what}: status {code}, {body}"));
        }
        if queued(&queue) != 0 {
            failures.push(format!("{what}: a request landed in the queue"));
        }
    }
    // Every method and path: the session's GET stream and DELETE, and paths that are not /mcp.
    let sid_h = ("Mcp-Session-Id", sid.as_str());
    for (method, path) in [("GET", "/mcp"), ("DELETE", "/mcp"), ("GET", "/"), ("POST", "/other"), ("OPTIONS", "/mcp")] {
        let (code, head, _) = http(addr, method, path, &[("Host", &host), ACCEPT, VERSION, sid_h], "");
        if code != 401 || !head.contains("www-authenticate: bearer") {
            failures.push(format!("{method} {path} without a token: status {code}"));
        }
    }
    assert!(failures.is_empty(), "{} way(s) through:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(queued(&queue), 0, "nothing was filed");

    // The session survived the refused DELETE, and the token opens it.
    let (code, body) = ask(addr, "/mcp", &sid, &good);
    assert_eq!(code, 200, "{body}");
    assert_eq!(queued(&queue), 1);

    // A real MCP client (the official SDK) with the token works; every request it makes (POST,
    // the GET stream, the closing DELETE) carries it.
    let mut seen: Vec<String> = std::fs::read_dir(&queue)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".request.json").to_string())
        .collect();
    let mut c = PyClient::connect_with_token(&server.url(), Mode::Current, &token);
    c.start_call("ask_operator", json!({"question": "with a token"}));
    next_request(&queue, &mut seen);
    assert_eq!(c.result()["is_error"], false);
    drop(c);
    server.stop().unwrap();
}
