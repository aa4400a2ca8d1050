//! `cargo xtask bench aeb CORPUS [--mode strict|standard] [--no-netns] [--json]`: runs the
//! public agent-egress-bench corpus' `fetch_proxy` and `http_proxy` cases through the real
//! egress-proxy (release build) and reports, per case, what the proxy did and what the
//! upstream received.
//!
//! CORPUS is a checkout of <https://github.com/luckyPipewrench/agent-egress-bench> (the cases
//! are read from `CORPUS/cases/**/*.json`; nothing of it is kept in this repository):
//!
//! ```sh
//! git clone https://github.com/luckyPipewrench/agent-egress-bench /tmp/aeb
//! cargo xtask bench aeb /tmp/aeb
//! ```
//!
//! Every host a case names is allowed (one route each, on the scheme its URL says, DLP on in
//! `--mode`, strict by default), so only DLP decides; each name is pinned to a recording
//! upstream on 127.0.0.1 (TLS with a certificate for every name, or plain HTTP) that answers
//! with the case's `response_body` when it has one. IP-literal hosts (the SSRF cases) get no
//! route and no pin: the proxy's policy answers those. The client is curl, through the proxy;
//! a URL's port becomes the upstream's. Verdicts: `block` when the proxy answered 403 with its
//! `bot-bottle egress: blocked:` body and the upstream received nothing, `allow` when the
//! upstream's answer came back, `error` otherwise.
//!
//! Run as root, it re-runs itself in a network namespace of its own (`unshare --net`) where
//! only loopback exists, so no case can send a packet anywhere else whatever it names;
//! `--no-netns` skips that.
#![allow(clippy::print_stdout)] // a benchmark prints its table

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::bench_egress::{Proc, ca, free_port, leaf_for, sh, wait_port};

/// Set in the re-run inside the namespace.
const INSIDE: &str = "BOT_BOTTLE_AEB_INSIDE_NETNS";

struct Opts {
    corpus: PathBuf,
    mode: String,
    netns: bool,
    json: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts { corpus: PathBuf::new(), mode: "strict".into(), netns: true, json: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mode" => o.mode = it.next().context("--mode needs strict or standard")?.clone(),
            "--no-netns" => o.netns = false,
            "--json" => o.json = true,
            s if !s.starts_with('-') && o.corpus.as_os_str().is_empty() => o.corpus = PathBuf::from(s),
            other => {
                bail!("unknown argument {other:?} (expected CORPUS [--mode strict|standard] [--no-netns] [--json])")
            }
        }
    }
    ensure!(!o.corpus.as_os_str().is_empty(), "which corpus? (a checkout of luckyPipewrench/agent-egress-bench)");
    ensure!(matches!(o.mode.as_str(), "strict" | "standard"), "--mode is strict or standard");
    Ok(o)
}

/// One case, as much of it as the harness needs.
struct Case {
    id: String,
    category: String,
    input_type: String,
    expected: String,
    method: String,
    url: url_parts::Url,
    headers: Vec<(String, String)>,
    body: Option<String>,
    response_body: Option<String>,
}

/// A URL cut into the parts the harness changes (its port) and keeps.
mod url_parts {
    pub(super) struct Url {
        pub(super) https: bool,
        /// As written (case kept).
        pub(super) host: String,
        /// Path and query, as written.
        pub(super) rest: String,
    }

    pub(super) fn parse(url: &str) -> Option<Url> {
        let (https, after) =
            if let Some(a) = url.strip_prefix("https://") { (true, a) } else { (false, url.strip_prefix("http://")?) };
        let cut = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(cut);
        let host = if let Some(v6) = authority.strip_prefix('[') {
            format!("[{}]", v6.split(']').next()?)
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_string()
        };
        let rest = if rest.is_empty() { "/".to_string() } else { rest.to_string() };
        Some(Url { https, host, rest })
    }

    impl Url {
        /// Whether the host is an IP literal or a number a resolver would read as one.
        pub(super) fn numeric_host(&self) -> bool {
            self.host.starts_with('[')
                || self
                    .host
                    .rsplit('.')
                    .next()
                    .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x"))
        }

        pub(super) fn with_port(&self, port: u16) -> String {
            let scheme = if self.https { "https" } else { "http" };
            format!("{scheme}://{}:{port}{}", self.host, self.rest)
        }

        pub(super) fn as_written(&self) -> String {
            let scheme = if self.https { "https" } else { "http" };
            format!("{scheme}://{}{}", self.host, self.rest)
        }
    }
}

fn load(corpus: &Path) -> anyhow::Result<Vec<Case>> {
    let mut files = Vec::new();
    let mut dirs = vec![corpus.join("cases")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&f)?).with_context(|| format!("parsing {}", f.display()))?;
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        if !matches!(s("transport").as_str(), "fetch_proxy" | "http_proxy") {
            continue;
        }
        let p = &v["payload"];
        let Some(url) = p["url"].as_str().and_then(url_parts::parse) else {
            bail!("{}: no http(s) URL in the payload", f.display());
        };
        let mut headers: Vec<(String, String)> = p["headers"]
            .as_object()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default();
        if let Some(ct) = p["content_type"].as_str() {
            headers.push(("Content-Type".into(), ct.into()));
        }
        out.push(Case {
            id: s("id"),
            category: s("category"),
            input_type: s("input_type"),
            expected: s("expected_verdict"),
            method: p["method"].as_str().unwrap_or("GET").to_string(),
            url,
            headers,
            body: p["body"].as_str().map(String::from),
            response_body: p["response_body"].as_str().map(String::from),
        });
    }
    Ok(out)
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(&args)?;
    if o.netns && std::env::var_os(INSIDE).is_none() {
        let st = Command::new("unshare")
            .args(["--net", "--"])
            .arg(std::env::current_exe()?)
            .args(["bench", "aeb"])
            .args(&args)
            .env(INSIDE, "1")
            .status()
            .context("running unshare --net (util-linux; needs root, or pass --no-netns)")?;
        ensure!(st.success(), "the run inside the network namespace failed");
        return Ok(());
    }
    if std::env::var_os(INSIDE).is_some() {
        let st = Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
        ensure!(st.success(), "bringing loopback up in the namespace");
    }
    let cases = load(&o.corpus)?;
    ensure!(!cases.is_empty(), "no fetch_proxy/http_proxy cases under {}", o.corpus.join("cases").display());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
    let bin = match std::env::var_os("EGRESS_PROXY_BIN").filter(|b| !b.is_empty()) {
        Some(b) => PathBuf::from(b),
        None => {
            eprintln!("building egress-proxy (release)...");
            sh(Command::new(env!("CARGO")).current_dir(&root).args([
                "build",
                "--release",
                "-q",
                "-p",
                "egress-proxy",
            ]))?;
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from)
                .join("release/egress-proxy")
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_cases(o, cases, bin))
}

/// What the recording upstream answers, and how many requests it received.
#[derive(Default)]
struct Upstream {
    answer: Mutex<Bytes>,
    received: AtomicUsize,
}

async fn serve(up: Arc<Upstream>, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let (up, tls) = (up.clone(), tls.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let up = up.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    up.received.fetch_add(1, Ordering::SeqCst);
                    let body = up.answer.lock().map(|b| b.clone()).unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
            }
        });
    }
}

fn tls_acceptor(dir: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut &std::fs::read(dir.join("up.crt"))?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &std::fs::read(dir.join("up.key"))?[..])?.context("upstream key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// One case's outcome.
struct Outcome {
    verdict: &'static str,
    status: u16,
    reason: String,
    arrived: usize,
}

async fn run_cases(o: Opts, cases: Vec<Case>, bin: PathBuf) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let d = dir.display().to_string();
    // Every DNS name a case uses, lower-cased: the routes, the pins, the certificate.
    let names: BTreeSet<String> =
        cases.iter().filter(|c| !c.url.numeric_host()).map(|c| c.url.host.to_ascii_lowercase()).collect();
    ca(dir, "upca")?;
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    leaf_for(dir, "up", "upca", &sans.join(","))?;
    ca(dir, "bottle")?;
    let up = Arc::new(Upstream::default());
    let tls_port = free_port()?;
    let plain_port = free_port()?;
    tokio::spawn(serve(up.clone(), TcpListener::bind(("127.0.0.1", tls_port)).await?, Some(tls_acceptor(dir)?)));
    tokio::spawn(serve(up.clone(), TcpListener::bind(("127.0.0.1", plain_port)).await?, None));
    let mut routes = Vec::new();
    for n in &names {
        for (https, port) in [(true, tls_port), (false, plain_port)] {
            let scheme = if https { "https" } else { "http" };
            routes.push(serde_json::json!({"host": n, "port": port, "scheme": scheme, "dlp": {"mode": o.mode}}));
        }
    }
    std::fs::create_dir(dir.join("egress"))?;
    std::fs::write(dir.join("egress/routes.json"), serde_json::json!({"version": 1, "routes": routes}).to_string())?;
    let eg_port = free_port()?;
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("--listen=127.0.0.1:{eg_port}"))
        .arg(format!("--routes={d}/egress/routes.json"))
        .arg(format!("--ca-cert={d}/bottle.crt"))
        .arg(format!("--ca-key={d}/bottle.key"))
        .arg(format!("--upstream-ca={d}/upca.crt"))
        .arg(format!("--audit-log={d}/audit.jsonl"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for n in &names {
        cmd.arg(format!("--resolve={n}=127.0.0.1"));
    }
    let _proxy = Proc(cmd.spawn().with_context(|| format!("starting {}", bin.display()))?);
    wait_port(eg_port, "egress-proxy").await?;

    let mut results = Vec::new();
    for c in &cases {
        *up.answer.lock().map_err(|_| anyhow::anyhow!("poisoned"))? =
            Bytes::from(c.response_body.clone().unwrap_or_else(|| "ok\n".into()));
        let before = up.received.load(Ordering::SeqCst);
        let url = if c.url.numeric_host() {
            c.url.as_written()
        } else {
            c.url.with_port(if c.url.https { tls_port } else { plain_port })
        };
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "15", "-o", "-", "-w", "\n%{http_code}", "--path-as-is", "-x"])
            .arg(format!("http://127.0.0.1:{eg_port}"))
            .arg("--cacert")
            .arg(dir.join("bottle.crt"))
            .args(["-X", &c.method]);
        for (k, v) in &c.headers {
            curl.arg("-H").arg(format!("{k}: {v}"));
        }
        if let Some(b) = &c.body {
            let f = dir.join(format!("{}.body", c.id));
            std::fs::write(&f, b)?;
            curl.arg("--data-binary").arg(format!("@{}", f.display()));
        }
        curl.arg(&url);
        let out = tokio::task::spawn_blocking(move || curl.output()).await??;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        let status: u16 = code.trim().parse().unwrap_or(0);
        let arrived = up.received.load(Ordering::SeqCst) - before;
        let blocked_body = body.starts_with("bot-bottle egress: blocked: ");
        let verdict = match (status, blocked_body, arrived) {
            (403, true, 0) => "block",
            (200..=299, false, 1..) => "allow",
            _ => "error",
        };
        let reason = if blocked_body {
            body.trim_start_matches("bot-bottle egress: blocked: ").trim().to_string()
        } else {
            String::new()
        };
        results.push(Outcome { verdict, status, reason, arrived });
    }
    report(&o, &cases, &results);
    Ok(())
}

/// Whether a case is about data leaving (an exfiltration case), rather than the policy's own
/// answers (SSRF, IP literals) or prompt injection in a response (not what DLP claims).
fn group(c: &Case) -> &'static str {
    if c.input_type == "response_content" {
        "response"
    } else if c.url.numeric_host() || c.category.contains("ssrf") {
        "ssrf"
    } else {
        "exfiltration"
    }
}

fn report(o: &Opts, cases: &[Case], results: &[Outcome]) {
    if o.json {
        for (c, r) in cases.iter().zip(results) {
            let line = serde_json::json!({
                "case_id": c.id, "tool": "bot-bottle egress-proxy", "expected_verdict": c.expected,
                "actual_verdict": r.verdict, "score": if r.verdict == c.expected { "pass" } else if r.verdict == "error" { "error" } else { "fail" },
                "evidence": {"http_status": r.status, "upstream_received": r.arrived, "reason": r.reason}, "notes": group(c),
            });
            println!("{line}");
        }
        return;
    }
    println!("agent-egress-bench fetch_proxy/http_proxy cases through egress-proxy, dlp.mode {}", o.mode);
    println!("{:<42} {:<13} {:<6} {:<6} {:>4} {:>4}  reason", "case", "group", "expect", "got", "http", "up");
    for (c, r) in cases.iter().zip(results) {
        let mark = if r.verdict == c.expected { " " } else { "*" };
        println!(
            "{mark}{:<41} {:<13} {:<6} {:<6} {:>4} {:>4}  {}",
            c.id,
            group(c),
            c.expected,
            r.verdict,
            r.status,
            r.arrived,
            r.reason.chars().take(110).collect::<String>()
        );
    }
    println!();
    for g in ["exfiltration", "ssrf", "response"] {
        let in_group: Vec<(&Case, &Outcome)> = cases.iter().zip(results).filter(|(c, _)| group(c) == g).collect();
        let blocks: Vec<_> = in_group.iter().filter(|(c, _)| c.expected == "block").collect();
        let allows: Vec<_> = in_group.iter().filter(|(c, _)| c.expected == "allow").collect();
        let contained = blocks.iter().filter(|(_, r)| r.verdict == "block").count();
        let false_pos = allows.iter().filter(|(_, r)| r.verdict == "block").count();
        let errors = in_group.iter().filter(|(_, r)| r.verdict == "error").count();
        println!(
            "{g:<13} containment {contained}/{} blocked, false positives {false_pos}/{} benign blocked, {errors} errors",
            blocks.len(),
            allows.len()
        );
        let missed: Vec<&str> =
            blocks.iter().filter(|(_, r)| r.verdict != "block").map(|(c, _)| c.id.as_str()).collect();
        if !missed.is_empty() {
            println!("{:<13} not contained: {}", "", missed.join(", "));
        }
    }
}
