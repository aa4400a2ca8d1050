//! Re-originating requests to upstreams over our own connector (TCP, then rustls with full
//! verification for `https`), ALPN h2 + http/1.1: [`Pool`] keeps idle HTTP/1.1 connections
//! and one shared h2 connection per upstream; plus a hyper-util pooled client, http/1.1 only,
//! for WebSocket upgrades (an upgrade needs an HTTP/1.1 connection).
//!
//! Why not the hyper-util pooled client for every request: per request it builds a lazy
//! connect future, and for HTTP/1.1 spawns a task that waits for the connection to be ready
//! again before it goes back to the pool. [`Pool`] instead puts the connection back the moment
//! the response body has been read to its end (measured: fewer CPU microseconds per proxied
//! request). A connection goes back only after a complete response; anything else drops it.
//!
//! Name resolution goes through the system resolver, except for `--resolve HOST=IP` overrides
//! (tests and benchmarks point names at loopback with them). A DNS answer that points inside
//! ([`is_internal`]: loopback, private, shared and link-local space, metadata addresses, ULA,
//! and the mapped, NAT64 and 6to4 forms of those) is never followed: the request is refused
//! with [`InternalAddress`]. A `--resolve` pin, or a route naming an IP literal, is the
//! operator saying so explicitly, and is followed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::ProxyBody;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pooled client type.
pub(crate) type UpstreamClient = Client<Connector, ProxyBody>;

/// Connects to upstreams.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: TlsConnector,
    resolve: Arc<HashMap<String, IpAddr>>,
}

/// A connection to an upstream, plain or TLS.
#[allow(clippy::large_enum_variant)] // one per upstream connection; boxing buys nothing
pub(crate) enum UpstreamIo {
    Plain(TokioIo<TcpStream>),
    Tls(TokioIo<TlsStream<TcpStream>>, bool),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Plain(_) => Connected::new(),
            UpstreamIo::Tls(_, true) => Connected::new().negotiated_h2(),
            UpstreamIo::Tls(_, false) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s, _) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s, _) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s, _) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s, _) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

impl Connector {
    pub(crate) fn new(tls: Arc<ClientConfig>, resolve: Arc<HashMap<String, IpAddr>>) -> Connector {
        Connector { tls: TlsConnector::from(tls), resolve }
    }

    async fn connect(self, uri: Uri) -> io::Result<UpstreamIo> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let host = uri.host().ok_or_else(|| bad(format!("no host in {uri}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addrs: Vec<SocketAddr> = if let Some(ip) = self.resolve.get(&host) {
            vec![SocketAddr::new(*ip, port)]
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            // A name from DNS must not lead inside: to this host's own services, the Docker
            // bridges and other bottles, or a metadata service. Only public answers are used.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port)).await?.collect();
            let (ok, bad): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.into_iter().partition(|a| !is_internal(a.ip()));
            if ok.is_empty() && !bad.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    InternalAddress { host: host.clone(), ip: bad[0].ip() },
                ));
            }
            ok
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolved to no address"));
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last = io::Error::new(e.kind(), format!("connecting to {host} ({addr}): {e}")),
                Err(_) => {
                    last = io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {host} ({addr}): timed out"))
                }
            }
        }
        let stream = stream.ok_or(last)?;
        let _ = stream.set_nodelay(true);
        if !tls {
            return Ok(UpstreamIo::Plain(TokioIo::new(stream)));
        }
        let name = ServerName::try_from(host.clone()).map_err(|e| bad(format!("{host}: {e}")))?;
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("TLS handshake with {host}: timed out")))?
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {host}: {e}")))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(UpstreamIo::Tls(TokioIo::new(tls), h2))
    }
}

/// A DNS answer that points inside: refused, never connected to.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {ip}, an internal address (only an operator's --resolve pin may lead there)")]
pub(crate) struct InternalAddress {
    host: String,
    ip: IpAddr,
}

/// The refusal in an upstream error's chain, if that is what it was.
pub(crate) fn internal_address<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a InternalAddress> {
    let in_io = |io: &'a io::Error| io.get_ref().and_then(|i| i.downcast_ref::<InternalAddress>());
    let mut cur = Some(e);
    while let Some(err) = cur {
        let found = err.downcast_ref::<InternalAddress>().or_else(|| match err.downcast_ref::<UpstreamError>() {
            Some(UpstreamError::Connect(io)) => in_io(io),
            _ => err.downcast_ref::<io::Error>().and_then(in_io),
        });
        if found.is_some() {
            return found;
        }
        cur = err.source();
    }
    None
}

/// Addresses a DNS answer may not send the proxy to: anything not on the public internet.
/// IPv4: this network (0/8), private (10/8, 172.16/12, 192.168/16), shared address space
/// (100.64/10, where some clouds keep their metadata service), loopback, link-local
/// (169.254/16, the usual metadata address), IETF protocol assignments (192.0.0/24), benchmarking
/// (198.18/15), multicast, reserved (240/4) and broadcast. IPv6: unspecified, loopback,
/// unique-local (fc00::/7, `fd00:ec2::254` is a metadata address), link- and site-local,
/// multicast, discard-only (100::/64), local-use NAT64 (64:ff9b:1::/48); and IPv4 embedded in
/// IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses is judged as
/// the IPv4 address it reaches.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            a == 0
                || a == 10
                || a == 127
                || (a == 100 && (64..128).contains(&b))
                || (a == 169 && b == 254)
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 224
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                is_internal(IpAddr::V4(std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)))
            };
            match s {
                // ::/96: unspecified, loopback, and IPv4-compatible addresses.
                [0, 0, 0, 0, 0, 0, hi, lo] => (hi == 0 && lo <= 1) || embedded(hi, lo),
                // IPv4-mapped.
                [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded(hi, lo),
                // NAT64 well-known prefix, and the local-use prefix (RFC 8215).
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
                [0x64, 0xff9b, 1, ..] => true,
                // 6to4: the IPv4 address is in the second and third segments.
                [0x2002, hi, lo, ..] => embedded(hi, lo),
                // Discard-only.
                [0x100, 0, 0, 0, ..] => true,
                [first, ..] => {
                    (first & 0xfe00) == 0xfc00 // unique local
                        || (first & 0xffc0) == 0xfe80 // link-local
                        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                        || (first & 0xff00) == 0xff00 // multicast
                }
            }
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UpstreamIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// Why an upstream request failed (the message names the step).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("{0}")]
    Connect(io::Error),
    #[error("http handshake")]
    Handshake(#[source] hyper::Error),
    #[error("request")]
    Send(#[source] hyper::Error),
    #[error("bad upstream URI {0}")]
    Uri(String),
}

type Key = (Scheme, Authority);

/// The pool's maps, looked up three times a request: `Authority` hashes a byte at a time, which
/// std's SipHash makes about 2% of the proxy's instructions per request (callgrind); foldhash is
/// as randomly seeded and a fraction of that.
type PoolMap<V> = HashMap<Key, V, foldhash::fast::RandomState>;

/// An idle HTTP/1.1 connection and when it went idle.
struct Idle {
    tx: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// Upstream connections: idle HTTP/1.1 ones (most recent first) and one h2 connection per
/// upstream, shared by concurrent requests.
pub(crate) struct Pool {
    connector: Connector,
    h1: Mutex<PoolMap<Vec<Idle>>>,
    h2: Mutex<PoolMap<http2::SendRequest<ProxyBody>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream::Pool")
    }
}

impl Pool {
    /// A pool over `connector`; a background task (ending with the pool) closes connections
    /// idle for longer than `idle_timeout`. Call inside a tokio runtime.
    pub(crate) fn new(connector: Connector, max_idle_per_host: usize, idle_timeout: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            connector,
            h1: Mutex::new(PoolMap::default()),
            h2: Mutex::new(PoolMap::default()),
            max_idle_per_host,
            idle_timeout,
        });
        tokio::spawn(reap(Arc::downgrade(&pool)));
        pool
    }

    /// Sends `req` (absolute URI) upstream and returns the response.
    pub(crate) async fn request(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
            return Err(UpstreamError::Uri(uri.to_string()));
        };
        let key: Key = (scheme, authority);
        let h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner()).get(&key).filter(|t| !t.is_closed()).cloned();
        if let Some(mut tx) = h2 {
            if tx.ready().await.is_ok() {
                // h2 carries the authority in `:authority`.
                req.headers_mut().remove(header::HOST);
                return Self::send_h2(tx, req).await;
            }
            self.drop_h2(&key);
        }
        // HTTP/1.1: origin-form request line and a Host header.
        if !req.headers().contains_key(header::HOST) {
            let host = HeaderValue::from_str(key.1.as_str()).map_err(|_| UpstreamError::Uri(uri.to_string()))?;
            req.headers_mut().insert(header::HOST, host);
        }
        *req.uri_mut() = Uri::from(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        loop {
            let Some(mut tx) = self.checkout(&key) else { break };
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.returning(key, tx, resp)),
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection had closed. Try the next one.
                    Some(r) => req = r,
                    None => return Err(UpstreamError::Send(e.into_error())),
                },
            }
        }
        let io = self.connector.clone().connect(uri.clone()).await.map_err(UpstreamError::Connect)?;
        if let UpstreamIo::Tls(_, true) = io {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(UpstreamError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("upstream h2 connection: {e}");
                }
            });
            self.h2.lock().unwrap_or_else(|p| p.into_inner()).insert(key, tx.clone());
            // Back to absolute form: h2 takes :scheme and :authority from the URI.
            *req.uri_mut() = uri;
            req.headers_mut().remove(header::HOST);
            return Self::send_h2(tx, req).await;
        }
        let (mut tx, conn) = http1::handshake(io).await.map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection: {e}");
            }
        });
        let resp = tx.send_request(req).await.map_err(UpstreamError::Send)?;
        Ok(self.returning(key, tx, resp))
    }

    async fn send_h2(
        mut tx: http2::SendRequest<ProxyBody>,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let resp = tx.send_request(req).await.map_err(UpstreamError::Send)?;
        let (p, b) = resp.into_parts();
        Ok(Response::from_parts(p, crate::body::boxed(b)))
    }

    fn drop_h2(&self, key: &Key) {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if h2.get(key).is_some_and(|t| t.is_closed()) {
            h2.remove(key);
        }
    }

    /// The most recently idled open connection for `key`, if any.
    fn checkout(&self, key: &Key) -> Option<http1::SendRequest<ProxyBody>> {
        let mut h1 = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let list = h1.get_mut(key)?;
        while let Some(idle) = list.pop() {
            if !idle.tx.is_closed() && idle.since.elapsed() < self.idle_timeout {
                return Some(idle.tx);
            }
        }
        None
    }

    fn checkin(&self, key: Key, tx: http1::SendRequest<ProxyBody>) {
        if tx.is_closed() {
            return;
        }
        let mut h1 = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let list = h1.entry(key).or_default();
        if list.len() < self.max_idle_per_host {
            list.push(Idle { tx, since: Instant::now() });
        }
    }

    /// The response with a body that puts the connection back once read to its end.
    fn returning(
        self: &Arc<Self>,
        key: Key,
        tx: http1::SendRequest<ProxyBody>,
        resp: Response<Incoming>,
    ) -> Response<ProxyBody> {
        let (p, inner) = resp.into_parts();
        if inner.is_end_stream() {
            // No body to read (204, 304, HEAD, length 0): the connection is free already.
            self.checkin(key, tx);
            return Response::from_parts(p, crate::body::boxed(inner));
        }
        let body = Returning { inner, back: Some((Arc::downgrade(self), key, tx)) };
        Response::from_parts(p, crate::body::boxed(body))
    }

    fn prune(&self) {
        let fresh = |i: &Idle| !i.tx.is_closed() && i.since.elapsed() < self.idle_timeout;
        let mut h1 = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        h1.retain(|_, list| {
            list.retain(fresh);
            !list.is_empty()
        });
        drop(h1);
        self.h2.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, t| !t.is_closed());
    }
}

/// Closes idle connections past their time, until the pool is gone.
async fn reap(pool: Weak<Pool>) {
    let every = pool.upgrade().map_or(Duration::from_secs(10), |p| (p.idle_timeout / 4).max(Duration::from_secs(1)));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.prune();
    }
}

/// A response body that returns its HTTP/1.1 connection to the pool after the last byte.
struct Returning {
    inner: Incoming,
    back: Option<(Weak<Pool>, Key, http1::SendRequest<ProxyBody>)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((pool, key, tx)) = self.back.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.checkin(key, tx);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &r {
            None => self.give_back(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.give_back(),
            Some(Ok(_)) => {}
            // A broken response: the connection is not reused.
            Some(Err(_)) => self.back = None,
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A pooled client over `connector`.
pub(crate) fn client(connector: Connector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal table: every range the DNS answer may not lead to, its edges, and public
    /// neighbours that must stay reachable.
    #[test]
    fn internal_addresses() {
        let internal: &[(&str, &[&str])] = &[
            ("this network", &["0.0.0.0", "0.1.2.3", "0.255.255.255"]),
            ("RFC 1918", &["10.0.0.0", "10.255.255.255", "172.16.0.0", "172.31.255.255", "192.168.0.1"]),
            ("Docker bridges and host gateway", &["172.17.0.1", "172.18.0.2", "192.168.65.254"]),
            ("shared address space", &["100.64.0.0", "100.100.100.200", "100.127.255.255"]),
            ("loopback", &["127.0.0.1", "127.9.9.9"]),
            ("link-local and metadata", &["169.254.169.254", "169.254.0.1"]),
            ("IETF and benchmarking", &["192.0.0.192", "198.18.0.1", "198.19.255.255"]),
            ("multicast, reserved, broadcast", &["224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255"]),
            ("unspecified and loopback v6", &["::", "::1"]),
            ("unique local", &["fd00:ec2::254", "fc00::1", "fdff:ffff::1"]),
            ("link-local, site-local, multicast v6", &["fe80::1", "febf::1", "fec0::1", "ff02::1"]),
            ("IPv4-mapped", &["::ffff:127.0.0.1", "::ffff:10.0.0.7", "::ffff:169.254.169.254"]),
            ("IPv4-compatible", &["::10.0.0.7", "::127.0.0.1"]),
            ("NAT64", &["64:ff9b::a00:7", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::1"]),
            ("6to4", &["2002:a00:7::1", "2002:a9fe:a9fe::"]),
            ("discard-only", &["100::1"]),
        ];
        let public: &[(&str, &[&str])] = &[
            ("public v4", &["1.1.1.1", "8.8.8.8", "93.184.216.34", "198.51.100.7", "223.255.255.255"]),
            ("edges of private v4 ranges", &["9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0"]),
            ("more edges", &["172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0", "169.253.255.255"]),
            ("benchmarking edges", &["198.17.255.255", "198.20.0.0"]),
            ("public v6", &["2606:2800:220:1::1", "2001:4860:4860::8888", "fbff::1", "fe7f::1"]),
            ("public v4 embedded", &["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "::8.8.8.8"]),
        ];
        for (range, ips) in internal {
            for ip in *ips {
                assert!(is_internal(ip.parse().unwrap()), "{ip} ({range}) is internal");
            }
        }
        for (range, ips) in public {
            for ip in *ips {
                assert!(!is_internal(ip.parse().unwrap()), "{ip} ({range}) is public");
            }
        }
    }

    #[test]
    fn the_refusal_is_found_in_an_error_chain() {
        let refused = InternalAddress { host: "a.test".into(), ip: "10.0.0.7".parse().unwrap() };
        let io = io::Error::new(io::ErrorKind::PermissionDenied, refused);
        let up = UpstreamError::Connect(io);
        assert!(internal_address(&up).is_some());
        assert!(internal_address(&UpstreamError::Uri("x".into())).is_none());
        assert!(up.to_string().contains("10.0.0.7, an internal address"), "{up}");
    }
}
