//! `cargo xtask bench egress`: requests/s and p50/p99 latency, side by side in one run, on
//! loopback against an nginx TLS upstream, for (a) direct HTTPS, (b) through egress-proxy
//! (release build, token injection + DLP on), (c) through mitmproxy 12 with a small allowlist +
//! header-injection addon, (d) nginx as a TLS-terminating reverse proxy (double TLS, the
//! practical limit on this box); keep-alive and a new connection per request; 1 and 64 clients;
//! body-less GETs, and POSTs of a 4 KiB and a 64 KiB JSON body (what an agent's API call
//! carries; egress-proxy holds and scans the whole body, nginx buffers it in memory); plus
//! egress-proxy's peak RSS. `--request get|post` runs only those rows. `--soak` instead runs 100k requests over 256 keep-alive
//! connections through egress-proxy and reports errors and RSS as it goes.
//!
//! Contenders take turns in slices (`--slices`), so load from elsewhere on the box falls on all
//! of them alike; each egress-proxy / nginx ratio is printed with how it moved from one round
//! of slices to the next (median and middle half), which says whether a difference is more
//! than this box's noise.
//!
//! The load generator is in here (hyper + rustls, HTTP/1.1), bounded by a time limit per
//! scenario (and by a request count when `--requests` asks). Certificates come from the
//! `openssl` CLI.

#![allow(clippy::print_stdout)] // a benchmark prints its table

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "bench-token-0123456789abcdef0123";

#[derive(clap::Parser, Debug)]
#[command(name = "bench egress")]
struct Opts {
    /// Seconds per scenario (upper bound).
    #[arg(long, default_value_t = 4)]
    secs: u64,
    /// Requests per contender and scenario at most, shared evenly by its slices (a slice that
    /// has sent its share ends before its time). Unset, slices end at their time only.
    #[arg(long)]
    requests: Option<u64>,
    /// Each contender's time is cut into this many slices, run in turns with the others.
    #[arg(long, default_value_t = 4)]
    slices: u32,
    /// Skip mitmproxy (it needs a Python 3.12 venv).
    #[arg(long)]
    no_mitm: bool,
    /// Only run contenders whose name contains this (e.g. `egress`, for profiling).
    #[arg(long)]
    only: Option<String>,
    /// Only this connection mode: `keep-alive` or `new`.
    #[arg(long)]
    mode: Option<String>,
    /// Only these requests: `get` (the body-less rows) or `post` (the JSON body rows).
    #[arg(long)]
    request: Option<String>,
    /// Soak instead: 100k requests over 256 keep-alive connections through egress-proxy.
    #[arg(long)]
    soak: bool,
}

/// A child process stopped on drop: SIGTERM first (nginx's master then stops its workers; a
/// SIGKILLed master would orphan them), SIGKILL after 5 s.
pub(crate) struct Proc(pub(crate) Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new("openssl").args(args)).map(|_| ())
}

/// CA `name`.crt/.key in `dir`.
pub(crate) fn ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    let p = |s: &str| dir.join(format!("{name}.{s}")).display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        &p("key"),
        "-out",
        &p("crt"),
    ])
}

/// Leaf `name`.crt/.key for 127.0.0.1 signed by CA `by`.
fn leaf(dir: &Path, name: &str, by: &str) -> anyhow::Result<()> {
    leaf_for(dir, name, by, "IP:127.0.0.1,DNS:up.test")
}

/// Leaf `name`.crt/.key with the subjectAltName `sans` (`IP:…,DNS:…`) signed by CA `by`.
pub(crate) fn leaf_for(dir: &Path, name: &str, by: &str, sans: &str) -> anyhow::Result<()> {
    let p = |n: &str, s: &str| dir.join(format!("{n}.{s}")).display().to_string();
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p(name, "key"),
        "-out",
        &p(name, "csr"),
    ])?;
    std::fs::write(dir.join(format!("{name}.ext")), format!("subjectAltName={sans}\n"))?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(name, "csr"),
        "-CA",
        &p(by, "crt"),
        "-CAkey",
        &p(by, "key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(name, "ext"),
        "-out",
        &p(name, "crt"),
    ])
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) async fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not start listening on port {port}")
}

fn nginx(dir: &Path, name: &str, server: &str) -> anyhow::Result<Proc> {
    let conf = dir.join(format!("{name}.conf"));
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes auto; pid {d}/{name}.pid; error_log {d}/{name}.err warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 60s;\n\
               ssl_protocols TLSv1.2 TLSv1.3;\n\
               client_body_temp_path {d}/{name}-body; proxy_temp_path {d}/{name}-proxy;\n\
               client_body_buffer_size 1m;\n\
               fastcgi_temp_path {d}/{name}-fcgi; uwsgi_temp_path {d}/{name}-uwsgi; scgi_temp_path {d}/{name}-scgi;\n\
               ssl_session_cache shared:{name}:10m;\n\
               {server} }}\n"
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (apt install nginx)")?;
    Ok(Proc(child))
}

/// How the load generator reaches the upstream.
#[derive(Clone)]
struct Target {
    /// Where the TCP connection goes.
    addr: SocketAddr,
    /// `CONNECT` this authority first (forward proxies).
    connect: Option<String>,
    tls: tokio_rustls::TlsConnector,
    sni: ServerName<'static>,
    host: String,
}

fn client_tls(ca_pems: &[PathBuf]) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for p in ca_pems {
        let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(c?)?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// What the load generator's TLS handshake came to.
#[derive(Clone, Copy)]
struct Handshake {
    resumed: bool,
    tls13: bool,
}

/// Opens a connection and says how its TLS handshake went.
async fn open(t: &Target) -> anyhow::Result<(Sender, Handshake)> {
    let mut tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    if let Some(auth) = &t.connect {
        tcp.write_all(format!("CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n").as_bytes()).await?;
        // The proxy sends nothing after its CONNECT answer until the client speaks TLS, so
        // reading in chunks up to the blank line never eats tunnel bytes.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                bail!("proxy closed during CONNECT");
            }
            head.extend_from_slice(&buf[..n]);
        }
        if !head.ends_with(b"\r\n\r\n") {
            bail!("proxy sent bytes after its CONNECT answer");
        }
        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
            bail!("CONNECT refused: {}", String::from_utf8_lossy(&head));
        }
    }
    let tls = t.tls.connect(t.sni.clone(), tcp).await?;
    let hs = Handshake {
        resumed: tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        tls13: tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
    };
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok((send, hs))
}

/// One request: a GET, or a POST of `body` as JSON.
async fn one(send: &mut Sender, t: &Target, body: Option<&Bytes>) -> anyhow::Result<()> {
    send.ready().await?;
    let req = http::Request::builder()
        .uri("/bench")
        .header("host", &t.host)
        .header("authorization", "Bearer agent-placeholder");
    let req = match body {
        None => req.body(Full::default())?,
        Some(b) => req
            .method("POST")
            .header("content-type", "application/json")
            .header("content-length", b.len())
            .body(Full::new(b.clone()))?,
    };
    let resp = send.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if status != 200 {
        bail!("status {status}");
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u32>,
    first_error: Option<String>,
    /// TLS handshakes by the load generator: full and resumed.
    full: u64,
    resumed: u64,
    /// Handshakes that negotiated TLS 1.2 (the rest were TLS 1.3).
    tls12: u64,
    /// Slices that ended at the request cap rather than at their time.
    capped: u32,
}

impl Stats {
    /// Adds another run's counts (latencies unsorted until the caller sorts them).
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.secs += o.secs;
        self.lat_us.extend(o.lat_us);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.full += o.full;
        self.resumed += o.resumed;
        self.tls12 += o.tls12;
        self.capped += o.capped;
    }

    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.lat_us[i]) / 1000.0
    }
}

async fn load(t: &Target, clients: usize, keepalive: bool, body: Option<Bytes>, time: Duration, max: u64) -> Stats {
    let budget = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + time;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let t = t.clone();
        let budget = budget.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            let mut conn: Option<Sender> = None;
            while budget.fetch_add(1, Ordering::Relaxed) < max && Instant::now() < deadline {
                let t0 = Instant::now();
                let r = async {
                    let mut c = match conn.take() {
                        Some(c) => c,
                        None => {
                            let (c, hs) = open(&t).await?;
                            s.tls12 += u64::from(!hs.tls13);
                            if hs.resumed {
                                s.resumed += 1;
                            } else {
                                s.full += 1;
                            }
                            c
                        }
                    };
                    one(&mut c, &t, body.as_ref()).await?;
                    if keepalive {
                        conn = Some(c);
                    }
                    anyhow::Ok(())
                }
                .await;
                match r {
                    Ok(()) => {
                        s.ok += 1;
                        s.lat_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert_with(|| format!("{e:#}"));
                        conn = None;
                    }
                }
            }
            s
        }));
    }
    let mut all = Stats::default();
    for task in tasks {
        if let Ok(s) = task.await {
            all.merge(s);
        }
    }
    // The clients ran side by side: the run took the wall time, not the sum of theirs.
    all.secs = start.elapsed().as_secs_f64();
    all.capped = u32::from(budget.load(Ordering::Relaxed) >= max);
    all.lat_us.sort_unstable();
    all
}

/// A contender's time in one scenario, summed over its slices.
#[derive(Default)]
struct Acc {
    stats: Stats,
    /// CPU ticks of the proxy, the upstream and the load generator.
    ticks: [u64; 3],
    /// The box's idle and total CPU ticks.
    idle: u64,
    total: u64,
    /// Requests per second in each slice, in the order they ran.
    slice_rps: Vec<f64>,
}

/// One line of the table, kept for the ratios printed under it.
struct Row {
    name: String,
    clients: usize,
    keepalive: bool,
    body_size: usize,
    rps: f64,
    p50: f64,
    proxy_us: f64,
    slice_rps: Vec<f64>,
}

/// How far the ratio of `a` to `b` moved from slice to slice: each slice of `a` against the
/// slice of `b` in the same round (they ran back to back, so load from elsewhere on the box
/// falls on both alike), as ` (per slice: median M, middle half Q1-Q3)`. Empty with fewer than
/// four slices.
fn spread(a: &Row, b: &Row) -> String {
    let mut r: Vec<f64> = a.slice_rps.iter().zip(&b.slice_rps).filter(|(_, y)| **y > 0.0).map(|(x, y)| x / y).collect();
    if r.len() < 4 {
        return String::new();
    }
    r.sort_by(f64::total_cmp);
    let at = |q: usize| r[(r.len() - 1) * q / 4];
    format!(" (per slice: median {:.2}, middle half {:.2}-{:.2})", at(2), at(1), at(3))
}

/// The request column: `GET`, or `POST 4K` for a POST of a 4 KiB JSON body.
fn request_label(body_size: usize) -> String {
    if body_size == 0 { "GET".into() } else { format!("POST {}K", body_size / 1024) }
}

/// A JSON request body of exactly `size` bytes shaped like an agent's API call: a model name,
/// a few settings and messages of English prose (deterministic; no credential-shaped text).
fn json_body(size: usize) -> Bytes {
    const WORDS: &[&str] = &[
        "the",
        "request",
        "returns",
        "a",
        "list",
        "of",
        "files",
        "in",
        "repository",
        "and",
        "we",
        "should",
        "check",
        "each",
        "function",
        "before",
        "changing",
        "its",
        "signature",
        "because",
        "callers",
        "depend",
        "on",
        "this",
        "behaviour",
        "when",
        "tests",
        "run",
        "against",
        "module",
        "error",
        "handling",
        "path",
        "configuration",
        "value",
        "is",
        "read",
        "from",
        "environment",
        "at",
        "startup",
        "so",
        "that",
        "server",
        "can",
        "reload",
        "without",
        "restart",
        "please",
        "summarise",
        "what",
        "changed",
        "since",
        "last",
        "commit",
        "with",
        "examples",
    ];
    let tail = r#""}]}"#;
    let mut out = String::with_capacity(size + 16);
    out.push_str(
        r#"{"model":"bench-model-1","max_tokens":1024,"temperature":0.2,"messages":[{"role":"user","content":""#,
    );
    let (mut x, mut words, mut turn) = (0x2545_f491u32, 0, 0);
    // Words while they fit; a new message every 60 words when there is room for its head.
    loop {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let word = WORDS[x as usize % WORDS.len()];
        let room = size - tail.len() - out.len();
        if words == 60 && room > 64 {
            turn += 1;
            let role = if turn % 2 == 0 { "user" } else { "assistant" };
            out.push_str(&format!(r#""}},{{"role":"{role}","content":""#));
            words = 0;
            continue;
        }
        if word.len() + 1 > room {
            break;
        }
        out.push_str(word);
        out.push(if x % 11 == 0 { '.' } else { ' ' });
        words += 1;
    }
    while out.len() < size - tail.len() {
        out.push(' ');
    }
    out.push_str(tail);
    debug_assert_eq!(out.len(), size);
    Bytes::from(out)
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Clock ticks per second of /proc times.
fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        sh(Command::new("getconf").arg("CLK_TCK")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(100)
    })
}

/// (idle, total) ticks of the whole box from /proc/stat.
fn box_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (idle, v.iter().take(8).sum())
}

/// (user + system ticks, parent pid) of one process, its exited threads included.
fn stat_ticks(pid: u32) -> Option<(u64, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm) ": state ppid ... utime (index 11) stime (index 12).
    let f: Vec<&str> = s.get(s.rfind(')')? + 2..)?.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ticks, f.get(1)?.parse().ok()?))
}

/// CPU ticks of `pid` plus its live children (nginx's master and its workers).
fn cpu_ticks(pid: u32) -> u64 {
    let mut total = stat_ticks(pid).map_or(0, |(t, _)| t);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some((t, ppid)) = stat_ticks(child)
                && ppid == pid
            {
                total += t;
            }
        }
    }
    total
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let opts = <Opts as clap::Parser>::try_parse_from(std::iter::once("bench-egress".to_string()).chain(args))?;
    let root = workspace_root();
    // EGRESS_PROXY_BIN: a prebuilt binary instead (e.g. one built with frame pointers for perf).
    let proxy_bin = if let Some(bin) = std::env::var_os("EGRESS_PROXY_BIN").filter(|b| !b.is_empty()) {
        PathBuf::from(bin)
    } else {
        eprintln!("building egress-proxy (release)...");
        sh(Command::new("cargo").current_dir(&root).args(["build", "--release", "-q", "-p", "egress-proxy"]))?;
        let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        target_dir.join("release/egress-proxy")
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(bench(opts, proxy_bin, root))
}

async fn bench(opts: Opts, proxy_bin: PathBuf, root: PathBuf) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    ca(dir, "upca")?;
    leaf(dir, "up", "upca")?;
    ca(dir, "bottle")?;
    leaf(dir, "rp", "bottle")?;
    let d = dir.display();

    // The upstream: nginx TLS, a tiny fixed answer.
    let up_port = free_port()?;
    let up = nginx(
        dir,
        "upstream",
        &format!(
            "server {{ listen 127.0.0.1:{up_port} ssl; ssl_certificate {d}/up.crt; ssl_certificate_key {d}/up.key;\n\
             location / {{ return 200 \"ok\\n\"; }} }}"
        ),
    )?;
    // (d) nginx TLS-terminating reverse proxy to the same upstream, verifying it.
    let rp_port = free_port()?;
    let rp = nginx(
        dir,
        "rproxy",
        &format!(
            "upstream up {{ server 127.0.0.1:{up_port}; keepalive 128; }}\n\
             server {{ listen 127.0.0.1:{rp_port} ssl; ssl_certificate {d}/rp.crt; ssl_certificate_key {d}/rp.key;\n\
             location / {{ proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
               proxy_set_header Authorization \"Bearer {TOKEN}\";\n\
               proxy_ssl_verify on; proxy_ssl_trusted_certificate {d}/upca.crt; proxy_ssl_name up.test;\n\
               proxy_ssl_session_reuse on; }} }}"
        ),
    )?;
    // (b) egress-proxy: one route with token injection; DLP on (the default).
    let eg_port = free_port()?;
    std::fs::create_dir(dir.join("egress"))?;
    std::fs::write(
        dir.join("egress/routes.json"),
        format!(
            r#"{{"version":1,"routes":[{{"host":"127.0.0.1","port":{up_port},"auth":{{"token_env":"EGRESS_TOKEN_0"}}}}]}}"#
        ),
    )?;
    let mut eg_cmd = Command::new(&proxy_bin);
    // EGRESS_PROXY_THREADS: the proxy's tokio worker count (runtime-shape experiments).
    if let Some(n) = std::env::var_os("EGRESS_PROXY_THREADS") {
        eg_cmd.env("TOKIO_WORKER_THREADS", n);
    }
    let eg = Proc(
        eg_cmd
            .arg(format!("--listen=127.0.0.1:{eg_port}"))
            .arg(format!("--routes={d}/egress/routes.json"))
            .arg(format!("--ca-cert={d}/bottle.crt"))
            .arg(format!("--ca-key={d}/bottle.key"))
            .arg(format!("--upstream-ca={d}/upca.crt"))
            .arg(format!("--audit-log={d}/audit.jsonl"))
            .env("EGRESS_TOKEN_0", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting egress-proxy")?,
    );
    let eg_pid = eg.0.id();
    // (c) mitmproxy 12 with an allowlist + injection addon.
    let mitm = if opts.no_mitm || opts.soak {
        None
    } else {
        let bin = sh(Command::new(root.join("scripts/venv")).args(["bench-mitm", "3.12", "mitmproxy==12.*"]))?;
        let port = free_port()?;
        std::fs::write(
            dir.join("addon.py"),
            format!(
                "from mitmproxy import http\n\
                 ALLOWED = {{('127.0.0.1', {up_port})}}\n\
                 def request(flow: http.HTTPFlow) -> None:\n\
                 \x20   if (flow.request.host, flow.request.port) not in ALLOWED:\n\
                 \x20       flow.response = http.Response.make(403, b'blocked', {{'content-type': 'text/plain'}})\n\
                 \x20       return\n\
                 \x20   flow.request.headers.pop('proxy-authorization', None)\n\
                 \x20   flow.request.headers['authorization'] = 'Bearer {TOKEN}'\n"
            ),
        )?;
        std::fs::create_dir(dir.join("mitm"))?;
        let child = Command::new(Path::new(bin.trim()).join("mitmdump"))
            .args(["-q", "--listen-host", "127.0.0.1", "--listen-port", &port.to_string()])
            .args([
                "--set",
                &format!("confdir={d}/mitm"),
                "--set",
                &format!("ssl_verify_upstream_trusted_ca={d}/upca.crt"),
            ])
            .args(["-s", &format!("{d}/addon.py")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mitmdump")?;
        Some((Proc(child), port))
    };
    wait_port(up_port, "nginx upstream").await?;
    wait_port(rp_port, "nginx reverse proxy").await?;
    wait_port(eg_port, "egress-proxy").await?;
    let authority = format!("127.0.0.1:{up_port}");
    let sni = ServerName::try_from("127.0.0.1")?.to_owned();
    let mut targets: Vec<(&str, Target)> = vec![
        (
            "direct",
            Target {
                addr: authority.parse()?,
                connect: None,
                tls: client_tls(&[dir.join("upca.crt")])?,
                sni: sni.clone(),
                host: authority.clone(),
            },
        ),
        (
            "egress-proxy",
            Target {
                addr: format!("127.0.0.1:{eg_port}").parse()?,
                connect: Some(authority.clone()),
                tls: client_tls(&[dir.join("bottle.crt")])?,
                sni: sni.clone(),
                host: authority.clone(),
            },
        ),
    ];
    // Whose CPU time counts as "the proxy" for each contender.
    let mut proxy_pids: Vec<Option<u32>> = vec![None, Some(eg_pid)];
    if let Some((child, port)) = &mitm {
        proxy_pids.push(Some(child.0.id()));
        wait_port(*port, "mitmdump").await?;
        let ca = dir.join("mitm/mitmproxy-ca-cert.pem");
        for _ in 0..100 {
            if ca.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        targets.push((
            "mitmproxy 12",
            Target {
                addr: format!("127.0.0.1:{port}").parse()?,
                connect: Some(authority.clone()),
                tls: client_tls(&[ca])?,
                sni: sni.clone(),
                host: authority.clone(),
            },
        ));
    }
    proxy_pids.push(Some(rp.0.id()));
    targets.push((
        "nginx double-TLS",
        Target {
            addr: format!("127.0.0.1:{rp_port}").parse()?,
            connect: None,
            tls: client_tls(&[dir.join("bottle.crt")])?,
            sni: sni.clone(),
            host: format!("127.0.0.1:{rp_port}"),
        },
    ));
    // Sanity: every contender answers 200 before measuring.
    for (name, t) in &targets {
        let (mut s, _) = open(t).await.with_context(|| format!("{name}: first connection"))?;
        one(&mut s, t, None).await.with_context(|| format!("{name}: first request"))?;
        one(&mut s, t, Some(&json_body(4096))).await.with_context(|| format!("{name}: first POST"))?;
    }

    if opts.soak {
        return soak(&targets[1].1, eg_pid).await;
    }

    println!(
        "egress bench: {} s{} per contender and scenario in {} interleaved slices; HTTP/1.1 GET or POST of JSON, 3-byte answer; loopback, {} CPUs",
        opts.secs,
        opts.requests.map(|r| format!(" / {r} requests max")).unwrap_or_default(),
        opts.slices.max(1),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<18} {:>9} {:>7} {:>10} {:>10} {:>9} {:>9} {:>7} {:>10} {:>10} {:>10} {:>13} {:>4} {:>5}",
        "contender",
        "request",
        "clients",
        "conn",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "proxy us",
        "upstrm us",
        "loadgen us",
        "full/resumed",
        "tls",
        "idle%"
    );
    println!(
        "(us = CPU microseconds per request, user + system, of the proxy, the nginx upstream, the load generator)"
    );
    let mut table: Vec<Row> = Vec::new();
    // Slices that ended at the request cap, of all slices run.
    let (mut capped, mut ran) = (0, 0);
    let slices = opts.slices.max(1);
    let slice = Duration::from_millis(opts.secs * 1000 / u64::from(slices));
    // Each slice's share of `--requests`, if it caps them.
    let share = opts.requests.map_or(u64::MAX, |r| r / u64::from(slices));
    // (keep-alive, clients, POST body size or 0 for a GET)
    let scenarios = [(true, 64, 0), (true, 1, 0), (false, 64, 0), (false, 1, 0), (true, 64, 4096), (true, 64, 65536)];
    for (keepalive, clients, body_size) in scenarios {
        if opts.mode.as_deref().is_some_and(|m| (m == "new") == keepalive)
            || opts.request.as_deref().is_some_and(|r| (r == "get") != (body_size == 0))
        {
            continue;
        }
        let body = (body_size > 0).then(|| json_body(body_size));
        let chosen: Vec<usize> =
            (0..targets.len()).filter(|&i| opts.only.as_deref().is_none_or(|o| targets[i].0.contains(o))).collect();
        // Contenders take turns, one slice each, so load from elsewhere on the box falls on
        // all of them alike. CPU ticks: proxy, upstream, load generator.
        let mut acc: Vec<Acc> = chosen.iter().map(|_| Acc::default()).collect();
        for _ in 0..slices {
            for (k, &i) in chosen.iter().enumerate() {
                let (t, proxy_pid) = (&targets[i].1, proxy_pids[i]);
                // The load generator's own process only: the proxies are its children.
                let me = || stat_ticks(std::process::id()).map_or(0, |(t, _)| t);
                let before = [proxy_pid.map_or(0, cpu_ticks), cpu_ticks(up.0.id()), me()];
                let box_before = box_ticks();
                let s = load(t, clients, keepalive, body.clone(), slice, share).await;
                let box_after = box_ticks();
                let after = [proxy_pid.map_or(0, cpu_ticks), cpu_ticks(up.0.id()), me()];
                let a = &mut acc[k];
                a.slice_rps.push(s.rps());
                a.stats.merge(s);
                a.idle += box_after.0 - box_before.0;
                a.total += box_after.1 - box_before.1;
                for j in 0..3 {
                    a.ticks[j] += after[j] - before[j];
                }
            }
        }
        for (k, Acc { stats: mut s, ticks, idle, total, slice_rps }) in acc.into_iter().enumerate() {
            let (name, proxy_pid) = (targets[chosen[k]].0, proxy_pids[chosen[k]]);
            s.lat_us.sort_unstable();
            let per_req = |i: usize| {
                let us = ticks[i] as f64 * 1e6 / clk_tck() as f64 / s.ok.max(1) as f64;
                if i == 0 && proxy_pid.is_none() { "-".to_string() } else { format!("{us:.1}") }
            };
            println!(
                "{:<18} {:>9} {:>7} {:>10} {:>10.0} {:>9.3} {:>9.3} {:>7} {:>10} {:>10} {:>10} {:>13} {:>4} {:>5.1}{}",
                name,
                request_label(body_size),
                clients,
                if keepalive { "keep-alive" } else { "new" },
                s.rps(),
                s.pct(0.5),
                s.pct(0.99),
                s.errors,
                per_req(0),
                per_req(1),
                per_req(2),
                format!("{}/{}", s.full, s.resumed),
                match (s.tls12, s.full + s.resumed) {
                    (0, _) => "1.3",
                    (n, all) if n == all => "1.2",
                    _ => "mix",
                },
                idle as f64 * 100.0 / total.max(1) as f64,
                s.first_error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default()
            );
            let proxy_us = ticks[0] as f64 * 1e6 / clk_tck() as f64 / s.ok.max(1) as f64;
            capped += s.capped;
            ran += slices;
            table.push(Row {
                name: name.to_string(),
                clients,
                keepalive,
                body_size,
                rps: s.rps(),
                p50: s.pct(0.5),
                proxy_us,
                slice_rps,
            });
        }
    }
    if let Some(r) = opts.requests
        && capped > 0
    {
        println!(
            "note: {capped} of {ran} slices ended at the request cap ({share} a slice, --requests {r}) before their {:.2} s: \
             those rows ran for less time than asked, and each slice's new connections weigh more in them",
            slice.as_secs_f64()
        );
    }
    let find = |n: &str, c: usize, k: bool, b: usize| {
        table.iter().find(|r| r.name == n && r.clients == c && r.keepalive == k && r.body_size == b)
    };
    let get = |n: &str, c: usize, k: bool| find(n, c, k, 0).map(|r| (r.rps, r.p50));
    println!();
    for (k, label) in [(true, "keep-alive"), (false, "new connection")] {
        if let (Some(eg), Some(ng)) = (find("egress-proxy", 64, k, 0), find("nginx double-TLS", 64, k, 0)) {
            print!("{label}, 64 clients: egress-proxy / nginx double-TLS = {:.2}x{}", eg.rps / ng.rps, spread(eg, ng));
            if let Some(m) = get("mitmproxy 12", 64, k) {
                print!("; egress-proxy / mitmproxy = {:.1}x", eg.rps / m.0);
            }
            println!();
        }
        if let (Some(eg), Some(dr), Some(ng)) =
            (get("egress-proxy", 1, k), get("direct", 1, k), get("nginx double-TLS", 1, k))
        {
            println!(
                "{label}, 1 client: added p50 vs direct: egress-proxy {:+.3} ms, nginx double-TLS {:+.3} ms",
                eg.1 - dr.1,
                ng.1 - dr.1
            );
        }
    }
    for size in [4096, 65536] {
        if let (Some(eg), Some(ng)) = (find("egress-proxy", 64, true, size), find("nginx double-TLS", 64, true, size)) {
            println!(
                "{}, keep-alive, 64 clients: egress-proxy / nginx double-TLS = {:.2}x{}; CPU us/request egress-proxy {:.1}, nginx double-TLS {:.1}",
                request_label(size),
                eg.rps / ng.rps,
                spread(eg, ng),
                eg.proxy_us,
                ng.proxy_us
            );
        }
    }
    println!("egress-proxy peak RSS: {:.1} MB", rss_kb(eg_pid, "VmHWM:") as f64 / 1024.0);
    drop(eg);
    Ok(())
}

async fn soak(t: &Target, pid: u32) -> anyhow::Result<()> {
    const TOTAL: u64 = 100_000;
    const CONNS: usize = 256;
    // BENCH_SOAK_BATCHES: more batches of TOTAL/4 requests, to tell growth from a plateau.
    let batches: u32 = std::env::var("BENCH_SOAK_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    println!(
        "soak: {} requests over {CONNS} keep-alive connections through egress-proxy, in {batches} batches",
        TOTAL / 4 * u64::from(batches)
    );
    println!("{:>8} {:>10} {:>8} {:>10}", "batch", "req/s", "errors", "RSS MB");
    let mut total_err = 0;
    let mut rss = Vec::new();
    for batch in 1..=batches {
        let s = load(t, CONNS, true, None, Duration::from_secs(600), TOTAL / 4).await;
        total_err += s.errors;
        let now = rss_kb(pid, "VmRSS:") as f64 / 1024.0;
        rss.push(now);
        println!(
            "{:>8} {:>10.0} {:>8} {:>10.1}{}",
            batch,
            s.rps(),
            s.errors,
            now,
            s.first_error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default()
        );
    }
    println!(
        "soak: {} errors; RSS after each quarter {:?} MB; peak {:.1} MB",
        total_err,
        rss.iter().map(|r| (r * 10.0).round() / 10.0).collect::<Vec<_>>(),
        rss_kb(pid, "VmHWM:") as f64 / 1024.0
    );
    if total_err > 0 {
        bail!("soak had {total_err} errors");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Row, json_body, spread};

    fn row(slice_rps: &[f64]) -> Row {
        let rps = slice_rps.iter().sum::<f64>() / slice_rps.len() as f64;
        Row {
            name: String::new(),
            clients: 64,
            keepalive: true,
            body_size: 0,
            rps,
            p50: 0.0,
            proxy_us: 0.0,
            slice_rps: slice_rps.to_vec(),
        }
    }

    #[test]
    fn the_spread_pairs_slices_of_one_round() {
        // Rounds where the box was busy slow both alike: the ratio is 1.0 in each.
        let a = row(&[100.0, 50.0, 120.0, 80.0, 90.0]);
        let b = row(&[100.0, 50.0, 120.0, 80.0, 90.0]);
        assert_eq!(spread(&a, &b), " (per slice: median 1.00, middle half 1.00-1.00)");
        // Ratios 0.9, 1.0, 1.1, 1.2, 2.0 (an outlier): the middle half leaves the outlier out.
        let a = row(&[90.0, 100.0, 110.0, 120.0, 200.0]);
        let b = row(&[100.0; 5]);
        assert_eq!(spread(&a, &b), " (per slice: median 1.10, middle half 1.00-1.20)");
        // Too few slices to say, or a contender with no slices: nothing.
        assert_eq!(spread(&row(&[1.0, 2.0, 3.0]), &row(&[1.0, 2.0, 3.0])), "");
        assert_eq!(spread(&a, &row(&[])), "");
    }

    #[test]
    fn json_bodies_are_valid_json_of_the_asked_size() {
        for size in [300, 1000, 4096, 4097, 65536] {
            let b = json_body(size);
            assert_eq!(b.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{size}: {e}"));
            assert!(v["messages"].as_array().is_some_and(|m| !m.is_empty()));
        }
    }
}
