//! The proxy plumbing: gathers request facts, asks [`crate::policy::decide`], and applies the
//! answer. It never decides anything itself.
//!
//! Why not hudsucker: hudsucker 0.25 forwards a tunnel whose first bytes are not TLS as a raw
//! TCP stream (unscanned, uninjected, undecided) and mints leaf certificates from the client's
//! SNI. Here the leaf is always minted for the CONNECT target, a ClientHello whose SNI differs is
//! dropped, and non-TLS bytes in a tunnel are dropped — except on a CONNECT to port 80, where
//! they are parsed as HTTP and every request goes through the same decision, injection and DLP
//! as any other (nothing is ever relayed as raw bytes).
//!
//! Flow: client → (absolute-form `http://` | `CONNECT host:port` → TLS with a minted leaf →
//! h1/h2) → [`Proxy::handle`] per request → decide → strip credentials → DLP (whole body held,
//! bounded, decoded) → inject token → pooled upstream client (TLS verified) → response.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Secret;
use common::formats::Routes;
use common::formats::routes::DlpAction;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::audit::{Audit, Event};
use crate::body::{self, BodyError, ProxyBody};
use crate::config::Limits;
use crate::dlp::{self, Engine, Hit};
use crate::policy::{Decision, Deny, RequestFacts, RequestLine, Via, decide};
use crate::tls::Mint;
use crate::upstream::{Pool, UpstreamClient};

/// The magic host answered by the proxy itself.
pub const MAGIC_HOST: &str = "_egress.local";

/// Routes plus what they need at runtime; swapped whole on reload.
pub struct Live {
    pub routes: Routes,
    pub tokens: std::collections::HashMap<String, Secret>,
    pub dlp: Engine,
    /// Per route (same index): the auth header it injects and the value (none when the
    /// token is missing or not a valid header value), built once per reload, not per request.
    pub auth: Vec<Option<(HeaderName, Option<HeaderValue>)>>,
}

impl Live {
    pub fn new(routes: Routes, tokens: std::collections::HashMap<String, Secret>, dlp: Engine) -> Live {
        let auth = routes
            .routes
            .iter()
            .map(|route| {
                let a = route.auth.as_ref()?;
                let name = HeaderName::from_bytes(a.header.as_bytes()).ok()?;
                let value = tokens.get(&a.token_env).and_then(|token| {
                    let value = if a.scheme.is_empty() {
                        token.expose().to_string()
                    } else {
                        format!("{} {}", a.scheme, token.expose())
                    };
                    let mut v = HeaderValue::from_str(&value).ok()?;
                    v.set_sensitive(true);
                    Some(v)
                });
                Some((name, value))
            })
            .collect();
        Live { routes, tokens, dlp, auth }
    }
}

/// The routes in force, swapped whole by a reload.
pub type LiveCell = RwLock<Arc<Live>>;

/// What one serving thread's connections use: its own upstream pool, everything else shared
/// with the other serving threads.
pub struct Proxy {
    pub live: Arc<LiveCell>,
    pub mint: Arc<Mint>,
    /// This serving thread's upstream connections.
    pub upstream: Arc<Pool>,
    pub ws_client: UpstreamClient,
    pub audit: Arc<Audit>,
    pub queue: Option<common::queue::Queue>,
    pub bottle: String,
    pub limits: Limits,
    /// Bytes (in KiB permits) of request bodies held for DLP across all requests.
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Fires when the proxy stops: connections finish what is in flight and close when idle.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// Where a request is going.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    via: Via,
    sni: Option<String>,
    /// The upstream URI's scheme and authority, built once per connection (an error names
    /// why the authority does not parse).
    origin: Result<(http::uri::Scheme, http::uri::Authority), String>,
    /// `Host` for HTTP/1.1 upstreams: the authority, once per connection.
    host_header: Option<HeaderValue>,
}

impl Target {
    fn new(host: String, port: u16, https: bool, via: Via, sni: Option<String>) -> Target {
        // `host[:port]`, IPv6 in brackets, the port left out when it is the scheme's default.
        let (scheme, default_port) =
            if https { (http::uri::Scheme::HTTPS, 443) } else { (http::uri::Scheme::HTTP, 80) };
        let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let authority = if port == default_port { bracketed } else { format!("{bracketed}:{port}") };
        let host_header = HeaderValue::from_str(&authority).ok();
        let origin = http::uri::Authority::try_from(authority).map(|a| (scheme, a)).map_err(|e| e.to_string());
        Target { host, port, via, sni, origin, host_header }
    }
}

fn forbidden(reason: &str) -> Response<ProxyBody> {
    text(StatusCode::FORBIDDEN, format!("bot-bottle egress: blocked: {reason}\n"))
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Plain request bodies up to this size are scanned on the serving thread; larger ones (a scan
/// of megabytes takes milliseconds) and encoded ones (decoding may inflate them to the body
/// limit) on the blocking pool.
const SCAN_INLINE_MAX: usize = 64 * 1024;

/// Headers that describe one hop and are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

fn is_ws_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
        && req.headers().contains_key(header::UPGRADE)
}

/// Monotonic milliseconds since the first call, for activity tracking.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A stream that records when it last moved bytes either way.
pub struct Tracked<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once `last` has not moved for `idle`.
async fn idle(last: Arc<AtomicU64>, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let quiet = now_ms().saturating_sub(last.load(Ordering::Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet + 10)).await;
    }
}

/// A stream with some bytes already read from it put back in front.
struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    // Forwarded so rustls can hand several TLS records to one writev on the hot path.
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What DLP found in one request, by location.
struct Inspection {
    url: Vec<Hit>,
    headers: Vec<(HeaderName, usize, Vec<Hit>)>,
    body: Vec<Hit>,
}

impl Inspection {
    fn is_clean(&self) -> bool {
        self.url.is_empty() && self.headers.is_empty() && self.body.is_empty()
    }

    /// A summary without values: `rule in url; rule in header x-foo; rule in body`.
    fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for h in &self.url {
            parts.push(format!("{} in url", h.rule_id));
        }
        for (name, _, hits) in &self.headers {
            for h in hits {
                parts.push(format!("{} in header {name}", h.rule_id));
            }
        }
        for h in &self.body {
            parts.push(format!("{} in body", h.rule_id));
        }
        parts.dedup();
        parts.join("; ")
    }

    fn findings_json(&self) -> serde_json::Value {
        let mut out = Vec::new();
        let mut push = |loc: String, h: &Hit| {
            out.push(serde_json::json!({"rule_id": h.rule_id, "location": loc, "secret_redacted": h.redacted}));
        };
        for h in &self.url {
            push("url".into(), h);
        }
        for (name, _, hits) in &self.headers {
            for h in hits {
                push(format!("header {name}"), h);
            }
        }
        for h in &self.body {
            push("body".into(), h);
        }
        serde_json::Value::Array(out)
    }
}

impl Proxy {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Redacts anything DLP would flag before a client-supplied string goes to the audit log.
    fn sanitize(live: &Live, s: &str) -> String {
        let hits = live.dlp.scan(
            &[common::formats::routes::DlpDetector::KnownSecrets, common::formats::routes::DlpDetector::TokenPatterns],
            s.as_bytes(),
        );
        if hits.is_empty() {
            s.to_string()
        } else {
            String::from_utf8_lossy(&dlp::redact(s.as_bytes(), &hits, b"[REDACTED]")).into_owned()
        }
    }

    fn audit(&self, live: &Live, event: Event, host: &str, method: &str, path: &str, reason: &str) {
        if live.routes.log == 0 || (event == Event::Allow && live.routes.log < 2) {
            return;
        }
        self.audit.record(
            live.routes.log,
            event,
            &Self::sanitize(live, host),
            method,
            &Self::sanitize(live, path),
            &Self::sanitize(live, reason),
        );
    }

    fn deny(&self, live: &Live, host: &str, method: &str, path: &str, reason: &str) -> Response<ProxyBody> {
        tracing::info!(host = %Self::sanitize(live, host), method, "denied: {}", Self::sanitize(live, reason));
        self.audit(live, Event::Deny, host, method, path, reason);
        forbidden(&Self::sanitize(live, reason))
    }

    /// Fires when the proxy stops. A connection polls it on every wake-up, so it is a oneshot
    /// (an atomic check once its waker is set); a small task per connection waits on the
    /// shared token and ends with the connection.
    fn stop_signal(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut tx = tx;
            tokio::select! {
                () = stopping.cancelled() => { let _ = tx.send(()); }
                () = tx.closed() => {}
            }
        });
        rx
    }

    /// Serves one accepted client connection.
    pub async fn serve_client(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let _ = stream.set_nodelay(true);
        let last = Arc::new(AtomicU64::new(now_ms()));
        let io = TokioIo::new(Tracked { inner: stream, last: last.clone() });
        let proxy = self.clone();
        let last2 = last.clone();
        let svc = service_fn(move |req| {
            let proxy = proxy.clone();
            let last = last2.clone();
            let permit = permit.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.outer(req, last, permit).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(self.limits.max_header_bytes)
            .serve_connection(io, svc)
            .with_upgrades();
        tokio::pin!(conn);
        let stop = self.stop_signal();
        let served = async {
            tokio::select! {
                r = conn.as_mut() => return r,
                _ = stop => conn.as_mut().graceful_shutdown(),
            }
            conn.await
        };
        tokio::select! {
            r = served => if let Err(e) = r { tracing::debug!(%peer, "client connection: {e}") },
            () = idle(last, self.limits.idle_timeout) => tracing::debug!(%peer, "client connection idle, closed"),
        }
    }

    /// A request on the proxy's own port: CONNECT, absolute-form http, or the magic host.
    async fn outer(
        self: Arc<Self>,
        req: Request<Incoming>,
        last: Arc<AtomicU64>,
        permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    ) -> Response<ProxyBody> {
        let live = self.live();
        if req.method() == Method::CONNECT {
            let auth = req.uri().authority().map(|a| a.as_str().to_string()).unwrap_or_default();
            let (host, port) = match crate::policy::split_authority(&auth) {
                Some((h, Some(p))) => (h, p),
                _ => return self.deny(&live, &auth, "CONNECT", "", "CONNECT target must be host:port"),
            };
            let facts =
                RequestFacts { via: Via::Connect, host: &host, port, sni: None, authorities: &[], request: None };
            match decide(&live.routes, &facts) {
                Decision::Deny(d) => return self.deny(&live, &host, "CONNECT", "", &d.to_string()),
                Decision::Allow { .. } => {}
            }
            let proxy = self.clone();
            tokio::spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(up) => {
                        let idle_timeout = proxy.limits.idle_timeout;
                        tokio::select! {
                            () = proxy.tunnel(up, host, port) => {}
                            () = idle(last, idle_timeout) => tracing::debug!("tunnel idle, closed"),
                        }
                    }
                    Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
                }
                drop(permit);
            });
            return Response::new(body::empty());
        }
        let uri = req.uri().clone();
        match (uri.scheme_str(), uri.host()) {
            (Some("http"), Some(h)) if h.eq_ignore_ascii_case(MAGIC_HOST) => self.magic(&live, &req),
            (Some("http"), Some(h)) => {
                let host = h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
                let target = Target::new(host, uri.port_u16().unwrap_or(80), false, Via::PlainHttp, None);
                self.handle(Arc::new(target), req).await
            }
            (Some(s), _) => {
                let host = uri.host().unwrap_or("").to_string();
                self.deny(&live, &host, req.method().as_str(), uri.path(), &format!("{s}:// requests must use CONNECT"))
            }
            _ => {
                let path = uri.path().to_string();
                self.deny(
                    &live,
                    "",
                    req.method().as_str(),
                    &path,
                    "not a proxy request (expected CONNECT or an absolute http:// URI)",
                )
            }
        }
    }

    fn magic(&self, live: &Live, req: &Request<Incoming>) -> Response<ProxyBody> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => text(StatusCode::OK, "ok".into()),
            (&Method::GET, "/routes") => {
                let json = serde_json::to_string_pretty(&live.routes).unwrap_or_else(|_| "{}".into());
                let mut r = Response::new(body::full(json));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            _ => text(StatusCode::NOT_FOUND, "not found: _egress.local serves GET /health and GET /routes\n".into()),
        }
    }

    /// Inside an allowed CONNECT: TLS (minted leaf for the target) or, on port 80, plain HTTP.
    async fn tunnel(self: Arc<Self>, up: hyper::upgrade::Upgraded, host: String, port: u16) {
        let live = self.live();
        let mut io = TokioIo::new(up);
        let mut first = [0u8; 1];
        let n = match tokio::time::timeout(self.limits.header_timeout, io.read(&mut first)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return tracing::debug!(%host, "tunnel read: {e}"),
            Err(_) => return tracing::debug!(%host, "tunnel: client sent nothing in time"),
        };
        if n == 0 {
            return;
        }
        let io = Prefixed { prefix: Bytes::copy_from_slice(&first[..n]), inner: io };
        if first[0] == 0x16 {
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start = match tokio::time::timeout(self.limits.header_timeout, acceptor).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.audit(
                        &live,
                        Event::Deny,
                        &host,
                        "CONNECT",
                        "",
                        &format!("bad TLS ClientHello in tunnel: {e}"),
                    );
                    return;
                }
                Err(_) => return tracing::debug!(%host, "tunnel: TLS ClientHello timed out"),
            };
            let sni = start.client_hello().server_name().map(str::to_ascii_lowercase);
            if let Some(s) = &sni
                && *s != host
            {
                let reason = Deny::SniMismatch { sni: s.clone(), host: host.clone() }.to_string();
                tracing::info!(%host, "denied: {}", Self::sanitize(&live, &reason));
                self.audit(&live, Event::Deny, &host, "CONNECT", "", &reason);
                return;
            }
            let config = match self.mint.config_for(&host) {
                Ok(c) => c,
                Err(e) => return tracing::error!("{e}"),
            };
            let tls = match tokio::time::timeout(self.limits.header_timeout, start.into_stream(config)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return tracing::debug!(%host, "TLS handshake with client: {e}"),
                Err(_) => return tracing::debug!(%host, "TLS handshake with client timed out"),
            };
            let target = Target::new(host, port, true, Via::Connect, sni);
            self.serve_inner(TokioIo::new(tls), target).await;
        } else if port == 80 {
            let target = Target::new(host, port, false, Via::Connect, None);
            self.serve_inner(TokioIo::new(io), target).await;
        } else {
            let reason = format!("non-TLS bytes in a CONNECT tunnel to {host}:{port}");
            tracing::info!(%host, "denied: {reason}");
            self.audit(&live, Event::Deny, &host, "CONNECT", "", &reason);
        }
    }

    async fn serve_inner<I>(self: Arc<Self>, io: TokioIo<I>, target: Target)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let target = Arc::new(target);
        let svc = service_fn(move |req| {
            let proxy = proxy.clone();
            let target = target.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(target, req).await) }
        });
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(self.limits.max_header_bytes);
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.limits.max_header_bytes as u32)
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let conn = b.serve_connection_with_upgrades(io, svc);
        tokio::pin!(conn);
        let stop = self.stop_signal();
        tokio::select! {
            r = conn.as_mut() => if let Err(e) = r { tracing::debug!("tunnel connection: {e}") },
            _ = stop => {
                // Stopping: finish the requests in flight, close when idle (h2: GOAWAY).
                conn.as_mut().graceful_shutdown();
                if let Err(e) = conn.await {
                    tracing::debug!("tunnel connection: {e}");
                }
            }
        }
    }

    /// One request to a target: decide, strip, scan, inject, forward.
    async fn handle(self: Arc<Self>, target: Arc<Target>, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let live = self.live();
        // Owned copies that outlive `req` (cheap: a standard method and a shared URI).
        let method_owned = req.method().clone();
        let method = method_owned.as_str();
        let uri_owned = req.uri().clone();
        let path = uri_owned.path();
        let mut authorities: Vec<std::borrow::Cow<'_, str>> =
            req.headers().get_all(header::HOST).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
        if let Some(a) = uri_owned.authority() {
            authorities.push(a.as_str().into());
        }
        let auth_refs: Vec<&str> = authorities.iter().map(|a| a.as_ref()).collect();
        let facts = RequestFacts {
            via: target.via,
            host: &target.host,
            port: target.port,
            sni: target.sni.as_deref(),
            authorities: &auth_refs,
            request: Some(RequestLine { method, path, headers: req.headers() }),
        };
        let route_idx = match decide(&live.routes, &facts) {
            Decision::Allow { route } => route,
            Decision::Deny(d) => {
                let resp = self.deny(&live, &target.host, method, path, &d.to_string());
                drain(req.into_body()).await;
                return resp;
            }
        };
        let route = &live.routes.routes[route_idx];
        let ws = is_ws_upgrade(&req);
        let inbound_upgrade = ws.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, incoming) = req.into_parts();
        let ws_headers =
            ws.then(|| (parts.headers.get(header::UPGRADE).cloned(), parts.headers.get(header::CONNECTION).cloned()));
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts.headers.remove(header::PROXY_AUTHORIZATION);
        if route.auth.is_some() {
            parts.headers.remove(header::AUTHORIZATION);
            if let Some((n, _)) = &live.auth[route_idx] {
                parts.headers.remove(n);
            }
        }
        let pq = parts.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // Set when DLP redacts the URL.
        let mut pq_redacted: Option<String> = None;

        // DLP: URL, headers (the injected one is added afterwards), whole body.
        let mut body_out: ProxyBody;
        let mut held = false;
        if let Some(dlp_cfg) = route.dlp.config() {
            let detectors = &dlp_cfg.outbound;
            let mut insp = Inspection { url: Vec::new(), headers: Vec::new(), body: Vec::new() };
            // One scan over the URL and every header value, joined by newlines (no rule or
            // known secret spans a newline), then each hit is mapped back to its segment.
            let mut head_text = Vec::with_capacity(256);
            head_text.extend_from_slice(target.host.as_bytes());
            head_text.extend_from_slice(pq.as_str().as_bytes());
            for (_, value) in parts.headers.iter() {
                head_text.push(b'\n');
                head_text.extend_from_slice(value.as_bytes());
            }
            let hits = live.dlp.scan(detectors, &head_text);
            if !hits.is_empty() {
                // (start, end) of the URL and of each header value in `head_text`.
                let mut segments: Vec<(usize, usize)> = vec![(0, target.host.len() + pq.as_str().len())];
                for (_, value) in parts.headers.iter() {
                    let start = segments.last().map_or(0, |s| s.1) + 1;
                    segments.push((start, start + value.len()));
                }
                let names: Vec<(&HeaderName, &HeaderValue)> = parts.headers.iter().collect();
                let mut per_header: Vec<Vec<Hit>> = vec![Vec::new(); names.len()];
                for mut h in hits {
                    let seg = segments.partition_point(|&(start, _)| start <= h.start).saturating_sub(1);
                    let (start, end) = segments[seg];
                    h.end = h.end.min(end);
                    if seg == 0 {
                        // Offsets relative to `pq`; a hit in the host ends up at or near 0.
                        h.start = h.start.saturating_sub(target.host.len());
                        h.end = h.end.saturating_sub(target.host.len());
                        insp.url.push(h);
                    } else {
                        h.start -= start;
                        h.end -= start;
                        per_header[seg - 1].push(h);
                    }
                }
                for (i, hits) in per_header.into_iter().enumerate() {
                    if hits.is_empty() {
                        continue;
                    }
                    let (name, value) = names[i];
                    let idx = parts.headers.get_all(name).iter().position(|v| v == value).unwrap_or(0);
                    insp.headers.push((name.clone(), idx, hits));
                }
            }
            let mut body_bytes = Bytes::new();
            let mut decoded: Option<Vec<u8>> = None;
            let mut _reservation = None;
            if !incoming.is_end_stream() {
                let max = self.limits.max_body_bytes;
                let declared = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                if declared.is_some_and(|n| n > max) {
                    let e = BodyError::TooLarge(max);
                    self.audit(&live, Event::Deny, &target.host, method, path, &e.to_string());
                    drain(incoming).await;
                    return text(StatusCode::PAYLOAD_TOO_LARGE, format!("bot-bottle egress: blocked: {e}\n"));
                }
                // Room for the raw body and, when encoded, its decoded form.
                let encoded = parts.headers.contains_key(header::CONTENT_ENCODING);
                let need = declared.unwrap_or(max) + if encoded { max } else { 0 };
                let kib = u32::try_from(need.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
                match tokio::time::timeout(self.limits.header_timeout, self.body_budget.clone().acquire_many_owned(kib))
                    .await
                {
                    Ok(Ok(p)) => _reservation = Some(p),
                    _ => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "bot-bottle egress: busy: too many request bodies held for scanning\n".into(),
                        );
                    }
                }
                body_bytes = match body::collect(incoming, max).await {
                    Ok(b) => b,
                    Err(e @ BodyError::TooLarge(_)) => {
                        self.audit(&live, Event::Deny, &target.host, method, path, &e.to_string());
                        return text(StatusCode::PAYLOAD_TOO_LARGE, format!("bot-bottle egress: blocked: {e}\n"));
                    }
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("bot-bottle egress: {e}\n")),
                };
                let encs = parts
                    .headers
                    .get_all(header::CONTENT_ENCODING)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .flat_map(|v| body::encodings(&v))
                    .collect::<Vec<_>>();
                // An encoded body may inflate up to the body limit whatever its size on the wire.
                let offload = body_bytes.len() > SCAN_INLINE_MAX || !encs.is_empty();
                let work = {
                    let (live, detectors, raw) = (live.clone(), detectors.clone(), body_bytes.clone());
                    let max = self.limits.max_body_bytes;
                    move || -> Result<(Option<Vec<u8>>, Vec<Hit>), String> {
                        let plain = if encs.is_empty() {
                            None
                        } else {
                            Some(body::decode(&raw, &encs, max).map_err(|e| e.to_string())?)
                        };
                        let hits = live.dlp.scan(&detectors, plain.as_deref().unwrap_or(&raw));
                        Ok((plain, hits))
                    }
                };
                // A large body is decoded and scanned on the blocking pool: this serving
                // thread has other connections to keep moving meanwhile.
                let scanned = if offload {
                    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(format!("scanning the body: {e}")))
                } else {
                    work()
                };
                match scanned {
                    Ok((plain, hits)) => (decoded, insp.body) = (plain, hits),
                    Err(e) => return self.deny(&live, &target.host, method, path, &e),
                }
            }
            if !insp.is_clean() {
                let summary = insp.summary();
                let audit_path = {
                    let red = dlp::redact(pq.as_str().as_bytes(), &insp.url, b"[REDACTED]");
                    let s = String::from_utf8_lossy(&red).into_owned();
                    s.split('?').next().unwrap_or("").to_string()
                };
                match dlp_cfg.on_match {
                    DlpAction::Block => {
                        return self.deny(&live, &target.host, method, &audit_path, &format!("dlp: {summary}"));
                    }
                    DlpAction::Redact => {
                        if insp.url.iter().any(|h| h.end == 0) {
                            return self.deny(
                                &live,
                                &target.host,
                                method,
                                &audit_path,
                                &format!("dlp: {summary} (host cannot be redacted)"),
                            );
                        }
                        if !insp.url.is_empty() {
                            pq_redacted = Some(
                                String::from_utf8_lossy(&dlp::redact(
                                    pq.as_str().as_bytes(),
                                    &insp.url,
                                    b"%5BREDACTED%5D",
                                ))
                                .into_owned(),
                            );
                        }
                        for (name, idx, hits) in &insp.headers {
                            let values: Vec<HeaderValue> = parts.headers.get_all(name).iter().cloned().collect();
                            parts.headers.remove(name);
                            for (i, v) in values.into_iter().enumerate() {
                                let v = if i == *idx {
                                    HeaderValue::from_bytes(&dlp::redact(v.as_bytes(), hits, b"[REDACTED]"))
                                        .unwrap_or(HeaderValue::from_static("[REDACTED]"))
                                } else {
                                    v
                                };
                                parts.headers.append(name.clone(), v);
                            }
                        }
                        if !insp.body.is_empty() {
                            let src = decoded.take().unwrap_or_else(|| body_bytes.to_vec());
                            let red = dlp::redact(&src, &insp.body, b"[REDACTED]");
                            parts.headers.remove(header::CONTENT_ENCODING);
                            body_bytes = Bytes::from(red);
                        }
                        self.audit(&live, Event::Redact, &target.host, method, &audit_path, &format!("dlp: {summary}"));
                    }
                    DlpAction::Supervise => {
                        held = true;
                        let Some(queue) = &self.queue else {
                            return self.deny(
                                &live,
                                &target.host,
                                method,
                                &audit_path,
                                &format!("dlp: {summary} (supervise: no queue configured)"),
                            );
                        };
                        let args = serde_json::json!({
                            "host": target.host, "port": target.port, "method": method, "path": audit_path,
                            "findings": insp.findings_json(),
                        });
                        let filed = match queue.file(&self.bottle, "egress_dlp", args) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::error!("filing a supervise request: {e}");
                                return self.deny(
                                    &live,
                                    &target.host,
                                    method,
                                    &audit_path,
                                    &format!("dlp: {summary} (supervise: cannot file the request)"),
                                );
                            }
                        };
                        self.audit(
                            &live,
                            Event::Hold,
                            &target.host,
                            method,
                            &audit_path,
                            &format!("dlp: {summary} (held as {})", filed.id),
                        );
                        match queue.wait(&filed.id, self.limits.supervise_timeout).await {
                            Ok(Some(r)) if r.status.is_yes() => {
                                self.audit(
                                    &live,
                                    Event::Allow,
                                    &target.host,
                                    method,
                                    &audit_path,
                                    &format!("operator approved {}", filed.id),
                                );
                            }
                            Ok(Some(_)) => {
                                return self.deny(
                                    &live,
                                    &target.host,
                                    method,
                                    &audit_path,
                                    &format!("dlp: {summary} (operator rejected {})", filed.id),
                                );
                            }
                            Ok(None) => {
                                return self.deny(
                                    &live,
                                    &target.host,
                                    method,
                                    &audit_path,
                                    &format!("dlp: {summary} (no operator answer for {} in time)", filed.id),
                                );
                            }
                            Err(e) => {
                                tracing::error!("reading the operator's answer: {e}");
                                return self.deny(
                                    &live,
                                    &target.host,
                                    method,
                                    &audit_path,
                                    &format!("dlp: {summary} (unreadable answer for {})", filed.id),
                                );
                            }
                        }
                    }
                }
            }
            if !body_bytes.is_empty() {
                parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_bytes.len()));
            }
            body_out = body::full(body_bytes);
        } else {
            body_out = body::boxed(incoming);
        }
        if !held && live.routes.log >= 2 {
            self.audit(&live, Event::Allow, &target.host, method, path, &format!("route {route_idx}"));
        }

        if let Some((name, Some(value))) = &live.auth[route_idx] {
            parts.headers.insert(name.clone(), value.clone());
        }
        let rebuilt = (|| -> Result<Uri, String> {
            let pq = match pq_redacted {
                Some(s) => http::uri::PathAndQuery::try_from(s).map_err(|e| e.to_string())?,
                None => pq,
            };
            let (scheme, authority) = target.origin.clone()?;
            let mut up = http::uri::Parts::default();
            up.scheme = Some(scheme);
            up.authority = Some(authority);
            up.path_and_query = Some(pq);
            Uri::from_parts(up).map_err(|e| e.to_string())
        })();
        parts.uri = match rebuilt {
            Ok(u) => u,
            Err(e) => return self.deny(&live, &target.host, method, path, &format!("cannot rebuild the URI: {e}")),
        };
        parts.version = Version::HTTP_11;
        if let Some(h) = &target.host_header {
            // The pool drops it again for an h2 upstream (`:authority` says it there).
            parts.headers.insert(header::HOST, h.clone());
        }

        if let (Some(inbound), Some((upg, conn))) = (inbound_upgrade, ws_headers) {
            if let Some(u) = upg {
                parts.headers.insert(header::UPGRADE, u);
            }
            parts.headers.insert(header::CONNECTION, conn.unwrap_or(HeaderValue::from_static("upgrade")));
            // No permessage-deflate: compressed frames could not be scanned.
            parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
            body_out = body::empty();
            let out = Request::from_parts(parts, body_out);
            return match self.ws_client.request(out).await {
                Ok(resp)
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                        && resp.headers().contains_key(header::SEC_WEBSOCKET_EXTENSIONS) =>
                {
                    // An extension nobody offered (compression, say): its frames could not be
                    // scanned, and the client would have to fail the connection anyway.
                    let why = "upstream accepted the websocket with an extension that was not offered";
                    self.audit(&live, Event::Deny, &target.host, method, path, why);
                    text(StatusCode::BAD_GATEWAY, format!("bot-bottle egress: {why}\n"))
                }
                Ok(mut resp) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        let upstream = hyper::upgrade::on(&mut resp);
                        let proxy = self.clone();
                        let live = live.clone();
                        let detectors = route.dlp.config().map(|c| c.outbound.clone());
                        let (host, m, p) = (target.host.clone(), method.to_string(), path.to_string());
                        tokio::spawn(async move {
                            let (Ok(a), Ok(b)) = (inbound.await, upstream.await) else { return };
                            let (a_read, mut a_write) = tokio::io::split(TokioIo::new(a));
                            let (mut b_read, b_write) = tokio::io::split(TokioIo::new(b));
                            let max = proxy.limits.max_body_bytes;
                            let up =
                                crate::ws::client_to_upstream(a_read, b_write, &live.dlp, detectors.as_deref(), max);
                            let down = tokio::io::copy(&mut b_read, &mut a_write);
                            tokio::select! {
                                r = up => match r {
                                    Ok(crate::ws::Stop::Finding(ids)) => {
                                        proxy.audit(&live, Event::Deny, &host, &m, &p, &format!("dlp: {ids} in websocket frame; connection closed"));
                                    }
                                    Ok(crate::ws::Stop::Refused(why)) => proxy.audit(&live, Event::Deny, &host, &m, &p, &why),
                                    Ok(crate::ws::Stop::Closed) => {}
                                    Err(e) => tracing::debug!(%host, "websocket relay: {e}"),
                                },
                                _ = down => {}
                            }
                        });
                    }
                    let (p, b) = resp.into_parts();
                    Response::from_parts(p, body::boxed(b))
                }
                Err(e) => upstream_error(&target.host, &e),
            };
        }

        let out = Request::from_parts(parts, body_out);
        match self.upstream.request(out).await {
            Ok(resp) => {
                let (mut p, b) = resp.into_parts();
                strip_hop_by_hop(&mut p.headers);
                Response::from_parts(p, b)
            }
            Err(e) => upstream_error(&target.host, &e),
        }
    }
}

/// Reads and discards (bounded in size and time) a body that will not be forwarded, so the
/// client sees a clean 403 rather than a reset stream mid-upload.
async fn drain(b: Incoming) {
    if b.is_end_stream() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), body::collect(b, 1 << 20)).await;
}

fn upstream_error(host: &str, e: &dyn std::error::Error) -> Response<ProxyBody> {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    tracing::warn!(%host, "upstream request failed: {msg}");
    text(StatusCode::BAD_GATEWAY, format!("bot-bottle egress: upstream {host}: {msg}\n"))
}
