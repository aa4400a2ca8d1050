//! `bot-bottle supervise` end to end: the supervise MCP server (its library `run`, in-process)
//! driven by the official Python MCP SDK, answered by `bot-bottle supervise answer` run as a
//! separate process; the TUI driven in a tmux pseudo-terminal; and an approved
//! `request_egress` reaching a running `egress-proxy` process.

#[path = "../../../supervise/tests/it/client.rs"]
mod client;
#[path = "../../../supervise/tests/it/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use client::{Mode, PyClient};
use common::formats::{ResponseStatus, Routes};
use common::queue::Queue;
use harness::Server;
use orchestrator::home::Home;
use serde_json::{Value, json};

const BB: &str = env!("CARGO_BIN_EXE_bot-bottle");

/// A home with bottle `b1`: its queue dir and a routes.json holding one authenticated route.
fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    std::fs::create_dir_all(home.queue_dir("b1")).unwrap();
    std::fs::create_dir_all(home.egress_dir("b1")).unwrap();
    std::fs::write(
        home.routes_file("b1"),
        r#"{"version":1,"routes":[{"host":"api.example.com","auth":{"token_env":"EGRESS_TOKEN_0"}}]}"#,
    )
    .unwrap();
    (dir, home)
}

fn server(home: &Home, wait_secs: u64) -> Server {
    let mut cfg = harness::config(&home.queue_dir("b1"), wait_secs);
    cfg.routes = Some(home.routes_file("b1"));
    Server::start(cfg)
}

fn bb(home: &Home, args: &[&str]) -> Output {
    Command::new(BB).args(args).env("BOT_BOTTLE_HOME", home.root()).output().unwrap()
}

fn bb_ok(home: &Home, args: &[&str]) -> String {
    let out = bb(home, args);
    assert!(out.status.success(), "bot-bottle {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `bot-bottle supervise list --json` (bounded) until a pending request shows up.
fn wait_listed(home: &Home) -> Value {
    for _ in 0..200 {
        let list: Value = serde_json::from_str(&bb_ok(home, &["supervise", "list", "--json"])).unwrap();
        if let Some(first) = list.as_array().unwrap().first() {
            return first.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no pending request listed");
}

fn routes_hosts(home: &Home) -> Vec<String> {
    Routes::load(&home.routes_file("b1")).unwrap().routes.into_iter().map(|r| r.host).collect()
}

#[test]
fn every_tool_answered_by_the_cli_from_another_process() {
    let (_d, home) = home();
    let server = server(&home, 60);
    let mut c = PyClient::connect(&server.url(), Mode::Current);
    assert_eq!(c.list_tools().len(), 5);

    c.start_call("ask_operator", json!({"question": "which branch?"}));
    let item = wait_listed(&home);
    assert_eq!((item["bottle"].as_str(), item["tool"].as_str()), (Some("b1"), Some("ask_operator")));
    assert_eq!(item["arguments"]["question"], "which branch?");
    let text = bb_ok(&home, &["supervise", "list"]);
    assert!(text.contains("which branch?") && text.contains(item["id"].as_str().unwrap()), "{text}");
    let id = item["id"].as_str().unwrap().to_string();
    let said = bb_ok(&home, &["supervise", "answer", &id, "--approve", "--notes", "use main"]);
    assert_eq!(said.trim(), format!("approved {id} (ask_operator from bottle b1)"));
    let r = c.result();
    assert_eq!(r["structured"], json!({"status": "approved", "id": id, "tool": "ask_operator", "notes": "use main"}));

    c.start_call("request_egress", json!({"host": "pypi.org", "paths": ["/simple/"], "reason": "pip install"}));
    let id = wait_listed(&home)["id"].as_str().unwrap().to_string();
    let said = bb_ok(&home, &["supervise", "answer", &id, "--approve"]);
    assert!(said.contains("route added to"), "{said}");
    assert_eq!(c.result()["structured"]["status"], "approved");
    assert_eq!(routes_hosts(&home), ["api.example.com", "pypi.org"]);
    let shown = c.call_ok("list_egress_routes", json!({}));
    assert_eq!(shown["routes"][1]["host"], "pypi.org");
    assert_eq!(shown["routes"][1]["matches"][0]["paths"][0]["value"], "/simple/");
    assert!(!shown.to_string().contains("EGRESS_TOKEN_0"), "no token names or values: {shown}");

    c.start_call("request_egress", json!({"host": "*.example.org", "reason": "mirrors"}));
    let id = wait_listed(&home)["id"].as_str().unwrap().to_string();
    let granted = r#"{"host":"files.example.org","methods":["GET"],"reason":"mirrors"}"#;
    bb_ok(&home, &["supervise", "answer", &id, "--approve", "--arguments", granted, "--notes", "one host, GET only"]);
    let r = c.result();
    assert_eq!(r["structured"]["status"], "modified");
    assert_eq!(r["structured"]["arguments"]["host"], "files.example.org");
    assert_eq!(routes_hosts(&home), ["api.example.com", "pypi.org", "files.example.org"]);

    c.start_call("request_capability", json!({"capability": "sudo", "reason": "apt-get"}));
    let id = wait_listed(&home)["id"].as_str().unwrap().to_string();
    bb_ok(&home, &["supervise", "answer", &id, "--reject", "--notes", "use the image"]);
    let r = c.result();
    assert_eq!(
        (r["structured"]["status"].as_str(), r["structured"]["notes"].as_str()),
        (Some("rejected"), Some("use the image"))
    );
    assert_eq!(c.call_ok("check_request", json!({"id": id}))["status"], "rejected");

    // Every request seen and every answer given, once each, in audit.jsonl.
    let audit = std::fs::read_to_string(home.audit_log()).unwrap();
    let events: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.iter().filter(|e| *e == "supervise.request").count(), 4, "{audit}");
    assert_eq!(events.iter().filter(|e| *e == "supervise.answer").count(), 4, "{audit}");
    assert_eq!(bb_ok(&home, &["supervise", "list"]).trim(), "no pending requests");
}

#[test]
fn old_protocol_client_and_pending_then_check_request() {
    let (_d, home) = home();
    let server = server(&home, 1);
    let mut c = PyClient::connect(&server.url(), Mode::V20241105);
    assert_eq!(c.protocol_version(), "2024-11-05");
    let r = c.call_ok("ask_operator", json!({"question": "ship it?"}));
    assert_eq!(r["status"], "pending");
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(wait_listed(&home)["id"], id.as_str(), "still queued after the timeout");
    bb_ok(&home, &["supervise", "answer", &id, "--approve", "--notes", "yes"]);
    let r = c.call_ok("check_request", json!({"id": id}));
    assert_eq!((r["status"].as_str(), r["notes"].as_str()), (Some("approved"), Some("yes")));
}

#[test]
fn cli_errors_name_the_problem() {
    let (_d, home) = home();
    let out = bb(&home, &["supervise", "answer", "0123abc", "--approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no request \"0123abc\" in any bottle queue"));
    let q = Queue::new(home.queue_dir("b1"));
    let req = q.file("b1", "request_egress", json!({"host": "a.example.com", "reason": "x"})).unwrap();
    let out = bb(&home, &["supervise", "answer", &req.id, "--approve", "--arguments", "{not json"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--arguments: not JSON"));
    let out = bb(
        &home,
        &[
            "supervise",
            "answer",
            &req.id,
            "--approve",
            "--arguments",
            r#"{"host":"a.example.com","port":0,"reason":"x"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 0 is not between 1 and 65535"));
    let out = bb(&home, &["supervise", "answer", &req.id]);
    assert_eq!(out.status.code(), Some(64), "one of --approve/--reject is required");
    assert!(q.response(&req.id).unwrap().is_none(), "no failed attempt answered anything");
}

/// A tmux session (own server socket) running the TUI; the server is killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(home: &Home, editor: &Path) -> Tmux {
        let socket = format!("bb-test-{}-{}", std::process::id(), uuid_ish());
        let cmd = format!("{BB} supervise");
        let ok = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "200", "-y", "40", &cmd])
            .env("BOT_BOTTLE_HOME", home.root())
            .env("EDITOR", editor)
            .env_remove("VISUAL")
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux is needed for the TUI test");
        assert!(ok.success());
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, text: &str) -> String {
        for _ in 0..200 {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{text:?} never appeared; screen:\n{}", self.screen());
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["-L", &self.socket, "send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    fn alive(&self) -> bool {
        Command::new("tmux").args(["-L", &self.socket, "has-session"]).output().unwrap().status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn wait_answer(q: &Queue, id: &str) -> common::formats::QueueResponse {
    for _ in 0..200 {
        if let Some(r) = q.response(id).unwrap() {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("request {id} was never answered");
}

#[test]
fn tui_lists_and_answers_in_a_pty() {
    let (dir, home) = home();
    // The "editor" the operator uses for modify: rewrites the host in the arguments file.
    let editor = dir.path().join("edit.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/wide.example.net/narrow.example.net/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let q = Queue::new(home.queue_dir("b1"));
    let ask = q.file("b1", "ask_operator", json!({"question": "favourite colour?"})).unwrap();
    let tui = Tmux::start(&home, &editor);
    tui.wait_for("favourite colour?");
    tui.wait_for("1 pending");
    tui.keys(&["a"]);
    tui.wait_for("approve notes>");
    tui.keys(&["-l", "blue"]);
    tui.keys(&["Enter"]);
    let r = wait_answer(&q, &ask.id);
    assert_eq!((r.status, r.notes.as_str()), (ResponseStatus::Approved, "blue"));
    tui.wait_for("0 pending");

    // A request arriving while the TUI runs shows up by itself; reject it with a reason.
    let cap = q.file("b1", "request_capability", json!({"capability": "gpu", "reason": "train"})).unwrap();
    tui.wait_for("gpu — train");
    tui.keys(&["r"]);
    tui.keys(&["-l", "not here"]);
    tui.keys(&["Enter"]);
    let r = wait_answer(&q, &cap.id);
    assert_eq!((r.status, r.notes.as_str()), (ResponseStatus::Rejected, "not here"));

    // Modify: $EDITOR edits the arguments, the route added is the edited one.
    let egress = q.file("b1", "request_egress", json!({"host": "wide.example.net", "reason": "x"})).unwrap();
    tui.wait_for("wide.example.net — x");
    tui.keys(&["m"]);
    tui.wait_for("modify notes>");
    tui.keys(&["-l", "narrowed"]);
    tui.keys(&["Enter"]);
    let r = wait_answer(&q, &egress.id);
    assert_eq!(r.status, ResponseStatus::Modified);
    assert_eq!(r.arguments.unwrap()["host"], "narrow.example.net");
    assert_eq!(routes_hosts(&home), ["api.example.com", "narrow.example.net"]);
    tui.wait_for("route added to");

    tui.keys(&["q"]);
    for _ in 0..100 {
        if !tui.alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the TUI did not quit on q");
}

/// A one-response-per-connection HTTP upstream on 127.0.0.1.
/// A CA (`<name>.crt`, `<name>.key` in `dir`), minted in-process; its issuer signs leaves.
fn make_ca(dir: &Path, name: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    std::fs::write(dir.join(format!("{name}.crt")), p.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    rcgen::Issuer::new(p, key)
}

/// An HTTPS upstream for `host` (the workspace's stand-in, `tests/fixtures/upstream.py`): its
/// port, the CA its certificate chains to, and the process (killed on drop by the caller).
fn tls_upstream(dir: &Path, host: &str) -> (u16, PathBuf, std::process::Child) {
    let issuer = make_ca(dir, "up-ca");
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("up.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("up.key"), key.serialize_pem()).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upstream.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["--cert", &p("up.crt"), "--key", &p("up.key"), "--record", &p("up.jsonl"), "--ready", &p("up.port")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        if let Ok(port) = std::fs::read_to_string(dir.join("up.port")) {
            break port.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the stand-in upstream did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    (port, dir.join("up-ca.crt"), child)
}

/// One HTTPS request through the proxy (curl, trusting the bottle CA); returns the status the
/// proxy or the upstream gave (a refused CONNECT is the proxy's) and the body.
fn via_proxy(proxy: std::net::SocketAddr, ca: &Path, method: &str, host: &str, port: u16) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-X", method, "-x", &format!("http://{proxy}"), "--cacert"])
        .arg(ca)
        .args(["-o", "-", "-w", "\n%{http_connect} %{http_code}", &format!("https://{host}:{port}/pkg")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, codes) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let (connect, code) = codes.split_once(' ').unwrap_or(("0", "0"));
    let status = match (connect.parse().unwrap_or(0), code.parse().unwrap_or(0)) {
        (c, 0) if c != 200 => c,
        (_, code) => code,
    };
    (status, body.to_string())
}

fn egress_proxy_bin() -> PathBuf {
    let bin = Path::new(BB).with_file_name("egress-proxy");
    assert!(bin.exists(), "{} is missing: `cargo build -p egress-proxy` first", bin.display());
    bin
}

#[test]
fn approved_egress_is_allowed_by_a_running_proxy_without_restart() {
    let (dir, home) = home();
    make_ca(dir.path(), "ca");
    let (ca_key, ca_crt) = (dir.path().join("ca.key"), dir.path().join("ca.crt"));
    let host = "pkg.example.org";
    let (up, up_ca, mut upstream) = tls_upstream(dir.path(), host);
    let mut proxy = Command::new(egress_proxy_bin())
        .args(["--listen", "127.0.0.1:0", "--bottle", "b1", "--resolve", &format!("{host}=127.0.0.1")])
        .arg("--upstream-ca")
        .arg(&up_ca)
        .arg("--routes")
        .arg(home.routes_file("b1"))
        .arg("--ca-cert")
        .arg(&ca_crt)
        .arg("--ca-key")
        .arg(&ca_key)
        .env("EGRESS_TOKEN_0", "test-token-value")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(proxy.stdout.take().unwrap()), &mut line).unwrap();
    let proxy_addr: std::net::SocketAddr = line.trim().strip_prefix("listening on ").expect(&line).parse().unwrap();

    let (status, body) = via_proxy(proxy_addr, &ca_crt, "GET", host, up);
    assert_eq!(status, 403, "blocked before approval: {body}");
    let record = || std::fs::read_to_string(dir.path().join("up.jsonl")).unwrap_or_default();
    assert_eq!(record(), "", "the upstream received nothing before approval");

    let server = server(&home, 60);
    let mut c = PyClient::connect(&server.url(), Mode::Current);
    c.start_call(
        "request_egress",
        json!({"host": host, "port": up, "methods": ["GET"], "reason": "fetch the package"}),
    );
    let id = wait_listed(&home)["id"].as_str().unwrap().to_string();
    let approved_at = Instant::now();
    bb_ok(&home, &["supervise", "answer", &id, "--approve"]);
    assert_eq!(c.result()["structured"]["status"], "approved");
    let mut allowed = None;
    for _ in 0..200 {
        let (status, body) = via_proxy(proxy_addr, &ca_crt, "GET", host, up);
        if status == 200 {
            allowed = Some((approved_at.elapsed(), body));
            break;
        }
        assert_eq!(status, 403, "only blocked or allowed: {body}");
        std::thread::sleep(Duration::from_millis(25));
    }
    // The route is exactly what was asked: GET only.
    let (post_status, _) = via_proxy(proxy_addr, &ca_crt, "POST", host, up);
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = upstream.kill();
    let _ = upstream.wait();
    let (took, body) = allowed.expect("the proxy never allowed the approved host");
    assert_eq!(body, r#"{"ok": true, "path": "/pkg"}"#);
    assert_eq!(post_status, 403, "a method the request did not ask for stays blocked");
    let methods: Vec<String> = record()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["method"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(methods, ["GET"], "the upstream's own record: the approved GET only");
    eprintln!("measured: approved route live in the running proxy after {took:?}");
}
