//! Re-originating requests to upstreams: a hyper-util pooled client over our own connector
//! (TCP, then rustls with full verification for `https`), ALPN h2 + http/1.1; plus an
//! http/1.1-only client for WebSocket upgrades (an upgrade needs an HTTP/1.1 connection).
//!
//! Name resolution goes through the system resolver, except for `--resolve HOST=IP` overrides
//! (tests and benchmarks point names at loopback with them). A DNS answer that points at
//! loopback, link-local (cloud metadata) or unspecified addresses is refused.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
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
pub type UpstreamClient = Client<Connector, ProxyBody>;

/// Connects to upstreams.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    resolve: Arc<HashMap<String, IpAddr>>,
}

/// A connection to an upstream, plain or TLS.
#[allow(clippy::large_enum_variant)] // one per upstream connection; boxing buys nothing
pub enum UpstreamIo {
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
    pub fn new(tls: Arc<ClientConfig>, resolve: Arc<HashMap<String, IpAddr>>) -> Connector {
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
            // A name from DNS must not lead to this host's own services or to link-local
            // (cloud metadata) addresses: a route naming a wildcard domain must not become a
            // way into the bundle. Routes that name an IP, and --resolve, are explicit.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port)).await?.collect();
            let (ok, bad): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.into_iter().partition(|a| !is_internal(a.ip()));
            if ok.is_empty() && !bad.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to {} (loopback, link-local or unspecified): refused", bad[0].ip()),
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

/// Addresses a DNS answer may not send the proxy to.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
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

/// A pooled client over `connector`.
pub fn client(connector: Connector) -> UpstreamClient {
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

    #[test]
    fn internal_addresses() {
        for ip in
            ["127.0.0.1", "127.9.9.9", "169.254.169.254", "0.0.0.0", "::1", "fe80::1", "::ffff:127.0.0.1", "224.0.0.1"]
        {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "10.0.0.1", "2606:2800:220:1::1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
