//! Inside an allowed `CONNECT`: TLS with a leaf minted for the CONNECT target (a ClientHello
//! whose SNI names another host is dropped), or on port 80 plain HTTP; either way hyper parses
//! every request (h1 or h2) and each goes through [`Proxy::handle`]. Any other bytes are dropped:
//! nothing in a tunnel is ever relayed raw.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};

use super::context::Ctx;
use super::{Proxy, Target};
use crate::audit::Event;
use crate::policy::{Deny, Via};

/// The read buffer of a tunnel's client side: a TLS record's most.
const READ_BUFFER: usize = 16 * 1024;

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
        // Read in up to 16 KiB at a time: TLS reads ask for 4 KiB, so a request of a record or
        // more (a 4 KiB body and its head) would otherwise take a read syscall per 4 KiB. The
        // first byte is looked at in the buffer, and left there.
        let mut io = BufReader::with_capacity(READ_BUFFER, TokioIo::new(up));
        let first = match tokio::time::timeout(self.limits.header_timeout, io.fill_buf()).await {
            Ok(Ok(buf)) => buf.first().copied(),
            Ok(Err(e)) => return tracing::debug!(%host, "tunnel read: {e}"),
            Err(_) => return tracing::debug!(%host, "tunnel: client sent nothing in time"),
        };
        let Some(first) = first else { return };
        if first == 0x16 {
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start = match tokio::time::timeout(self.limits.header_timeout, acceptor).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return ctx.audit(Event::Deny, format_args!("bad TLS ClientHello in tunnel: {e}")),
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
