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
//! Flow: client → [`Proxy::serve_client`] → `outer` (the proxy's own port: absolute-form
//! `http://`, the magic host, or `CONNECT host:port` → [`tunnel`]: TLS with a minted leaf →
//! h1/h2) → [`request`] per request: admit → prepare → inspect ([`inspect`]) → [`verdict`] →
//! apply → forward (pooled upstream client, TLS verified; or the WebSocket relay in [`ws`]).
//! [`context::Ctx`] is the one request context the audit and deny calls share.

mod context;
mod inspect;
mod io;
mod request;
mod respond;
mod tunnel;
mod verdict;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::Secret;
use common::formats::Routes;
use common::formats::routes::Scheme;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use self::context::Ctx;
use self::io::{Tracked, idle, now_ms};
use crate::audit::Audit;
use crate::body::{self, ProxyBody};
use crate::config::Limits;
use crate::dlp::Engine;
use crate::policy::{Decision, RequestFacts, Via, decide};
use crate::tls::Mint;
use crate::upstream::{Pool, UpstreamClient};

/// The magic host answered by the proxy itself.
const MAGIC_HOST: &str = "_egress.local";

/// Routes plus what they need at runtime; swapped whole on reload.
pub(crate) struct Live {
    pub(crate) routes: Routes,
    pub(crate) dlp: Engine,
    /// Per route (same index): the auth header it injects and the value (none when the
    /// token is missing or not a valid header value, or the route is `http` without
    /// `insecure_auth`), built once per reload, not per request.
    pub(crate) auth: Vec<Option<(HeaderName, Option<HeaderValue>)>>,
}

impl Live {
    pub(crate) fn new(routes: Routes, tokens: &std::collections::HashMap<String, Secret>, dlp: Engine) -> Live {
        let auth = routes
            .routes
            .iter()
            .map(|route| {
                let a = route.auth.as_ref()?;
                let name = HeaderName::from_bytes(a.header.as_bytes()).ok()?;
                // Over cleartext only when the route says so: the token would cross the network
                // readable by anyone on the path.
                let injects = route.scheme == Scheme::Https || route.insecure_auth;
                let value = tokens.get(&a.token_env).filter(|_| injects).and_then(|token| {
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
        Live { routes, dlp, auth }
    }
}

/// The routes in force, swapped whole by a reload.
pub(crate) type LiveCell = RwLock<Arc<Live>>;

/// What one serving thread's connections use: its own upstream pool, everything else shared
/// with the other serving threads.
pub(crate) struct Proxy {
    pub(crate) live: Arc<LiveCell>,
    pub(crate) mint: Arc<Mint>,
    /// This serving thread's upstream connections.
    pub(crate) upstream: Arc<Pool>,
    pub(crate) ws_client: UpstreamClient,
    pub(crate) audit: Arc<Audit>,
    pub(crate) queue: Option<common::queue::Queue>,
    pub(crate) bottle: String,
    pub(crate) limits: Limits,
    /// Bytes (in KiB permits) of request bodies held for DLP across all requests.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    /// Fires when the proxy stops: connections finish what is in flight and close when idle.
    pub(crate) stopping: tokio_util::sync::CancellationToken,
}

/// Where a request is going.
#[derive(Debug)]
struct Target {
    /// Lowercase, IPv6 without brackets: what policy and the upstream connection use.
    host: String,
    /// As the agent wrote it (case kept: DLP reads encoded data in host labels).
    host_raw: String,
    port: u16,
    via: Via,
    sni: Option<String>,
    /// The upstream URI's scheme and authority, built once per connection (an error names
    /// why the authority does not parse).
    origin: Result<(http::uri::Scheme, http::uri::Authority), String>,
    /// `Host` for HTTP/1.1 upstreams: the authority, once per connection.
    host_header: Option<HeaderValue>,
    /// What DLP found in the host's labels, kept for the connection's next requests.
    host_hits: inspect::HostHits,
}

impl Target {
    fn new(host_raw: String, port: u16, https: bool, via: Via, sni: Option<String>) -> Target {
        let host = host_raw.to_ascii_lowercase();
        // `host[:port]`, IPv6 in brackets, the port left out when it is the scheme's default.
        let (scheme, default_port) =
            if https { (http::uri::Scheme::HTTPS, 443) } else { (http::uri::Scheme::HTTP, 80) };
        let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let authority = if port == default_port { bracketed } else { format!("{bracketed}:{port}") };
        let host_header = HeaderValue::from_str(&authority).ok();
        let origin = http::uri::Authority::try_from(authority).map(|a| (scheme, a)).map_err(|e| e.to_string());
        Target { host, host_raw, port, via, sni, origin, host_header, host_hits: inspect::HostHits::default() }
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

/// How many headers [`HOP_BY_HOP`] names.
const HOPS: usize = 8;

/// Headers that describe one hop and are never forwarded (`Connection` first: it names more).
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers and those `Connection` names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names finds the ones there (a message has one or none, mostly) instead
    // of a hashed removal of each.
    let mut present = [false; HOPS];
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == name) {
            present[i] = true;
        }
    }
    if present[0] {
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
    for (n, _) in HOP_BY_HOP.iter().zip(present).filter(|&(_, there)| there) {
        h.remove(n);
    }
}

impl Proxy {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
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
    pub(crate) async fn serve_client(
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
                _ => return Ctx::new(&self, &live, &auth, "CONNECT", "").deny("CONNECT target must be host:port"),
            };
            // The same name with its case kept (for DLP).
            let host_raw = req.uri().host().map_or_else(|| host.clone(), |h| unbracket(h).to_string());
            let facts =
                RequestFacts { via: Via::Connect, host: &host, port, sni: None, authorities: &[], request: None };
            if let Decision::Deny(d) = decide(&live.routes, &facts) {
                return Ctx::new(&self, &live, &host, "CONNECT", "").deny(&d.to_string());
            }
            let proxy = self.clone();
            tokio::spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(up) => {
                        let idle_timeout = proxy.limits.idle_timeout;
                        tokio::select! {
                            () = proxy.tunnel(up, host, host_raw, port) => {}
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
            (Some("http"), Some(h)) if h.eq_ignore_ascii_case(MAGIC_HOST) => magic(&live, &req),
            (Some("http"), Some(h)) => {
                let target =
                    Target::new(unbracket(h).to_string(), uri.port_u16().unwrap_or(80), false, Via::PlainHttp, None);
                self.handle(Arc::new(target), req).await
            }
            (Some(s), _) => {
                let host = uri.host().unwrap_or("");
                Ctx::new(&self, &live, host, req.method().as_str(), uri.path())
                    .deny(&format!("{s}:// requests must use CONNECT"))
            }
            _ => Ctx::new(&self, &live, "", req.method().as_str(), uri.path())
                .deny("not a proxy request (expected CONNECT or an absolute http:// URI)"),
        }
    }
}

/// A host without the brackets of an IPv6 literal.
fn unbracket(h: &str) -> &str {
    h.trim_start_matches('[').trim_end_matches(']')
}

/// The magic host's answers: `GET /health` and `GET /routes` (no token values in them).
fn magic(live: &Live, req: &Request<Incoming>) -> Response<ProxyBody> {
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

/// Reads and discards (bounded in size and time) a body that will not be forwarded, so the
/// client sees a clean 403 rather than a reset stream mid-upload.
async fn drain(b: Incoming) {
    if b.is_end_stream() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), body::collect(b, 1 << 20)).await;
}

/// The client's answer when the upstream request failed: 502 with the error chain.
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
