//! Test support: a bottle CA and an upstream CA (rcgen), a recording HTTPS/HTTP upstream
//! (h1 + h2, WebSocket echo), the proxy started in-process via `run` on 127.0.0.1:0, curl as a
//! real client, and a Rust client that drives CONNECT + TLS + h1/h2 by hand (so tests can lie in
//! SNI, `Host` and `:authority`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TOKEN: &str = "tok-live-9f8e7d6c5b4a39281706";
pub const AGENT_AUTH: &str = "Bearer agent-placeholder-credential";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA that can issue server certs.
pub struct Ca {
    pub pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        let key_pem = key.serialize_pem();
        Ca { pem: cert.pem(), key_pem, der: cert.der().clone(), issuer: Issuer::new(p, key) }
    }

    /// A leaf for `names` with its key.
    pub fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone(), self.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A recording upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Reads `req` whole and adds it to `seen`.
pub async fn note(seen: &Mutex<Vec<Seen>>, req: Request<Incoming>) -> Result<(), hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
    });
    Ok(())
}

/// What the test upstreams answer with.
pub type UpBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn full_body(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).boxed()
}

/// The request's headers as `name: value` lines, for the echo answers.
fn header_lines(headers: &http::HeaderMap) -> String {
    headers.iter().map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes()))).collect()
}

/// An upstream that hands back what it was sent (as httpbin's `/headers` does), in the forms a
/// response can take: `/echo` (plain body, and the `Authorization` it got in `x-echo-auth`),
/// `/echo/gzip` (gzip-encoded), `/echo/stream` (chunked, 5 bytes at a time with pauses, so
/// anything it echoes is split across chunks), `/echo/location` (a redirect with the
/// `Authorization` value percent-encoded in the URL).
fn echo(path: &str, headers: &http::HeaderMap) -> Response<UpBody> {
    use std::io::Write as _;
    let lines = header_lines(headers);
    let auth = headers.get("authorization").cloned().unwrap_or(http::HeaderValue::from_static("none"));
    let r = Response::builder().header("x-echo-auth", auth.clone());
    match path {
        "/echo/gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(lines.as_bytes()).unwrap();
            r.header("content-encoding", "gzip").body(full_body(e.finish().unwrap())).unwrap()
        }
        "/echo/stream" => {
            let chunks: Vec<Bytes> = lines.as_bytes().chunks(5).map(Bytes::copy_from_slice).collect();
            let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
                let next = it.next()?;
                tokio::time::sleep(Duration::from_millis(2)).await;
                Some((Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(next)), it))
            });
            r.body(http_body_util::StreamBody::new(stream).boxed()).unwrap()
        }
        "/echo/location" => {
            let encoded: String = auth.as_bytes().iter().map(|b| format!("%{b:02X}")).collect();
            r.status(StatusCode::FOUND)
                .header("location", format!("https://elsewhere.test/login?from={encoded}"))
                .body(full_body(Bytes::new()))
                .unwrap()
        }
        _ => r.body(full_body(lines)).unwrap(),
    }
}

async fn record(seen: Arc<Mutex<Vec<Seen>>>, mut req: Request<Incoming>) -> Result<Response<UpBody>, hyper::Error> {
    let ws = req.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let on_upgrade = ws.then(|| hyper::upgrade::on(&mut req));
    let path = req.uri().path().to_string();
    let echoed = (path.starts_with("/echo") && !ws).then(|| echo(&path, req.headers()));
    // `/echo/ws`: the WebSocket first says the `Authorization` it got, in one unmasked text frame.
    let greeting = (ws && path == "/echo/ws").then(|| {
        let auth = req.headers().get("authorization").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
        let mut f = vec![0x81, u8::try_from(auth.len()).unwrap()];
        f.extend(auth);
        f
    });
    note(&seen, req).await?;
    if let Some(resp) = echoed {
        return Ok(resp);
    }
    if let Some(up) = on_upgrade {
        tokio::spawn(async move {
            if let Ok(up) = up.await {
                let mut io = TokioIo::new(up);
                if let Some(f) = greeting
                    && io.write_all(&f).await.is_err()
                {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "test")
            .body(full_body(Bytes::new()))
            .unwrap());
    }
    Ok(Response::new(full_body(Bytes::from_static(b"upstream ok"))))
}

/// Starts a TLS upstream with a cert for `names` from `ca`, speaking `alpn`.
pub async fn tls_upstream(ca: &Ca, names: &[&str], alpn: &[&[u8]]) -> Upstream {
    tls_upstream_on(ca, names, alpn, "127.0.0.1:0").await
}

/// [`tls_upstream`] listening on `bind` (`[::]:0` answers on every address of the host).
pub async fn tls_upstream_on(ca: &Ca, names: &[&str], alpn: &[&[u8]], bind: &str) -> Upstream {
    let (chain, key) = ca.leaf(names);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { break };
            let acceptor = acceptor.clone();
            let seen = s2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req| record(seen.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream { addr, seen }
}

/// Starts a plain-http upstream.
pub async fn plain_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { break };
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| record(seen.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, seen }
}

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub routes: PathBuf,
    pub audit: PathBuf,
    pub queue: PathBuf,
    pub ca_pem_path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Proxy {
    /// Asks the proxy to stop, as SIGTERM does.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Waits until `run` has returned.
    pub async fn finished(&mut self) {
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}

/// The standard test world: one upstream CA, the names tests use, all resolved to loopback.
pub const NAMES: &[&str] = &[
    "api.test",
    "other.test",
    "ws.test",
    "a.wild.test",
    "b.wild.test",
    "redact.test",
    "hold.test",
    "doh.test",
    "std.test",
    "127.0.0.1",
];

pub async fn start_proxy(routes_json: &str, upstream_ca: &Ca, env: &[(&str, &str)], extra: &[&str]) -> Proxy {
    start_proxy_with(routes_json, upstream_ca, env, extra, true).await
}

pub async fn start_proxy_with(
    routes_json: &str,
    upstream_ca: &Ca,
    env: &[(&str, &str)],
    extra: &[&str],
    with_queue: bool,
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let bottle = Ca::new("bottle test CA");
    let ca_crt = dir.path().join("ca.crt");
    let ca_key = dir.path().join("ca.key");
    std::fs::write(&ca_crt, &bottle.pem).unwrap();
    std::fs::write(&ca_key, &bottle.key_pem).unwrap();
    let up_ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&up_ca, &upstream_ca.pem).unwrap();
    std::fs::create_dir(dir.path().join("egress")).unwrap();
    let routes = dir.path().join("egress/routes.json");
    std::fs::write(&routes, routes_json).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let queue = dir.path().join("queue");
    std::fs::create_dir(&queue).unwrap();
    let mut args: Vec<String> = vec![
        "egress-proxy".into(),
        "--listen=127.0.0.1:0".into(),
        format!("--routes={}", routes.display()),
        format!("--ca-cert={}", ca_crt.display()),
        format!("--ca-key={}", ca_key.display()),
        format!("--upstream-ca={}", up_ca.display()),
        format!("--audit-log={}", audit.display()),
        "--bottle=test-bottle".into(),
        "--supervise-timeout=20s".into(),
    ];
    if with_queue {
        args.push(format!("--supervise-queue={}", queue.display()));
    }
    for n in NAMES.iter().filter(|n| !n.starts_with(char::is_numeric)) {
        args.push(format!("--resolve={n}=127.0.0.1"));
    }
    args.push("--resolve=plain.test=127.0.0.1".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args = egress_proxy::Args::try_parse_from(args).unwrap();
    let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let map2 = map.clone();
    let config = egress_proxy::Config::build(&args, Arc::new(move |k: &str| map2.get(k).cloned()), map.into_iter())
        .unwrap_or_else(|e| panic!("config: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        egress_proxy::run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let ca_pem_path = dir.path().join("bottle-ca.pem");
    std::fs::write(&ca_pem_path, &bottle.pem).unwrap();
    Proxy { addr, dir, routes, audit, queue, ca_pem_path, stop: Some(tx), task: Some(task) }
}

/// Runs curl through the proxy; returns (status, body). `args` go before the URL.
pub async fn curl(proxy: &Proxy, url: &str, args: &[&str]) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code} %{http_connect}", "-x"])
        .arg(format!("http://{}", proxy.addr))
        .arg("--cacert")
        .arg(&proxy.ca_pem_path)
        .args(args)
        .arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = s.rsplit_once('\n').unwrap_or(("", &s));
    let (code, connect) = codes.trim().split_once(' ').unwrap_or((codes, "000"));
    if code == "000" && connect != "000" && connect != "200" {
        return (connect.parse().unwrap_or(0), body.to_string());
    }
    if code == "000" {
        return (0, format!("curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    (code.parse().unwrap_or(0), body.to_string())
}

/// Opens `CONNECT target` through the proxy; returns the stream after a 200, or the status line
/// and body of a refusal.
pub async fn connect(proxy: &Proxy, target: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            return Err(String::from_utf8_lossy(&head).into_owned());
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        let mut rest = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut rest))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        Err(format!("{head}{}", String::from_utf8_lossy(&rest[..n])))
    }
}

/// TLS over a tunnel with the given SNI (trusting `ca_pem`) and ALPN.
pub async fn tls(
    stream: TcpStream,
    ca_pem: &std::path::Path,
    sni: &str,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_pem).unwrap();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, stream).await
}

/// Sends one request over CONNECT `target` with `sni`, h2 or h1; returns (status, body).
pub async fn rust_request<B>(
    proxy: &Proxy,
    target: &str,
    sni: &str,
    h2: bool,
    req: Request<B>,
) -> Result<(StatusCode, String), String>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let s = connect(proxy, target).await?;
    let tls =
        tls(s, &proxy.ca_pem_path, sni, if h2 { b"h2" } else { b"http/1.1" }).await.map_err(|e| format!("tls: {e}"))?;
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The world the bypass tests (issue 12's list) share: a token-injecting route (DLP on, strict),
/// the same with DLP off, a route with a `/v1/` prefix, and an `https` route whose upstream
/// really speaks plain HTTP (the cleartext trap).
pub struct World {
    pub up: Upstream,
    pub plain: Upstream,
    pub proxy: Proxy,
}

pub async fn bypass_world() -> World {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    let plain = plain_upstream().await;
    let (p, plain_p) = (up.port(), plain.port());
    let routes = format!(
        r#"{{"version":1,"routes":[
        {{"host":"api.test","port":{p},"auth":{{"token_env":"EGRESS_TOKEN_0"}}}},
        {{"host":"other.test","port":{p},"auth":{{"token_env":"EGRESS_TOKEN_0"}},"dlp":false}},
        {{"host":"b.wild.test","port":{p},"matches":[{{"paths":[{{"type":"prefix","value":"/v1/"}}]}}]}},
        {{"host":"plain.test","port":{plain_p},"auth":{{"token_env":"EGRESS_TOKEN_0"}}}}
    ]}}"#
    );
    let proxy = start_proxy(&routes, &ca, &[("EGRESS_TOKEN_0", TOKEN)], &[]).await;
    World { up, plain, proxy }
}

/// `s` with every byte percent-encoded, hex digits upper case where `upper` says so.
pub fn percent_all(s: &str, upper: impl Fn(usize) -> bool) -> String {
    s.bytes().enumerate().map(|(i, b)| if upper(i) { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect()
}

/// A 403 from the proxy, the token nowhere in it, and nothing at the upstream.
pub fn assert_refused(w: &World, what: &str, (code, body): (u16, String)) {
    assert_eq!(code, 403, "{what}: {body}");
    assert!(body.starts_with("bot-bottle egress: blocked: "), "{what}: {body}");
    assert!(!body.contains(TOKEN), "{what}: {body}");
    assert_eq!(w.up.count(), 0, "{what}: the upstream got {:?}", w.up.seen());
}
