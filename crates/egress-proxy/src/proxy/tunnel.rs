//! Inside an allowed `CONNECT`: TLS with a leaf minted for the CONNECT target (a ClientHello
//! whose SNI names another host is dropped), or on port 80 plain HTTP; either way hyper parses
//! every request (h1 or h2) and each goes through [`Proxy::handle`]. Any other bytes are dropped:
//! nothing in a tunnel is ever relayed raw.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::context::Ctx;
use super::io::Prefixed;
use super::{Proxy, Target};
use crate::audit::Event;
use crate::policy::{Deny, Via};

impl Proxy {
    /// Serves what the client sends inside an allowed `CONNECT host:port`.
    /// `host` is lowercase; `host_raw` the same name as the agent wrote it.
    pub(super) async fn tunnel(
        self: Arc<Self>,
        up: hyper::upgrade::Upgraded,
        host: String,
        host_raw: String,
        port: u16,
    ) {
        let live = self.live();
        let ctx = Ctx::new(&self, &live, &host, "CONNECT", "");
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
                Ok(Err(e)) => return ctx.audit(Event::Deny, &format!("bad TLS ClientHello in tunnel: {e}")),
                Err(_) => return tracing::debug!(%host, "tunnel: TLS ClientHello timed out"),
            };
            let sni = start.client_hello().server_name().map(str::to_ascii_lowercase);
            if let Some(s) = &sni
                && *s != host
            {
                let reason = Deny::SniMismatch { sni: s.clone(), host: host.clone() }.to_string();
                tracing::info!(%host, "denied: {}", super::context::sanitize(&live, &reason));
                return ctx.audit(Event::Deny, &reason);
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
            let target = Target::new(host_raw, port, true, Via::Tls, sni);
            self.clone().serve_inner(TokioIo::new(tls), target).await;
        } else if port == 80 {
            let target = Target::new(host_raw, port, false, Via::PlainHttp, None);
            self.clone().serve_inner(TokioIo::new(io), target).await;
        } else {
            let reason = format!("non-TLS bytes in a CONNECT tunnel to {host}:{port}");
            tracing::info!(%host, "denied: {reason}");
            ctx.audit(Event::Deny, &reason);
        }
    }

    /// Serves HTTP (h1 or h2) on a tunnel's stream, every request through [`Proxy::handle`].
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
}
