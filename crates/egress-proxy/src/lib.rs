//! egress-proxy: the bottle's only way out. A TLS-bumping forward proxy that allows only the
//! bottle's routes, strips what the agent sends as credentials and injects the real token,
//! scans what leaves (DLP) and blocks, redacts or holds it for the operator, and reloads its
//! routes live. Built directly on hyper + tokio-rustls + rcgen (see [`proxy`] for why not
//! hudsucker).
//!
//! Code map: [`config`] flags → validated [`Config`]; [`policy`] the pure decision;
//! [`proxy`] the plumbing; [`tls`] leaf minting and upstream trust; [`upstream`] the
//! connection pool; [`body`] bounded collection and decoding; [`dlp`] secret matching; [`audit`] the
//! JSON-lines log; [`reload`] the routes watcher; [`ws`] the scanned WebSocket relay.

pub mod audit;
pub mod body;
pub mod config;
pub mod dlp;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod tls;
pub mod upstream;
pub mod ws;

use std::future::Future;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;

pub use config::{Args, Config};

use crate::proxy::{Live, Proxy};

/// Builds the live state (routes, tokens, DLP engine) from routes and tokens.
pub fn live(
    routes: common::formats::Routes,
    tokens: std::collections::HashMap<String, common::Secret>,
    extra: &[common::Secret],
) -> Live {
    let mut secrets: Vec<common::Secret> = tokens.values().cloned().collect();
    secrets.extend(extra.iter().cloned());
    Live::new(routes, tokens, dlp::Engine::new(&secrets))
}

/// Serves until `shutdown` resolves, then drains connections for up to
/// [`common::shutdown::GRACE`].
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    serve(config, listener, shutdown, reload::hangup()).await
}

/// [`run`] with a SIGHUP stream created by the caller (the binary installs it before it
/// announces readiness, so an early SIGHUP reloads instead of killing the process).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    hup: Option<tokio::signal::unix::Signal>,
) -> anyhow::Result<()> {
    let Config { routes_path, routes, tokens, extra_secrets, mint, roots, resolve, queue, bottle, audit, limits, env } =
        config;
    let resolve = Arc::new(resolve);
    let connector =
        upstream::Connector::new(tls::client_config(roots.clone(), &[b"h2", b"http/1.1"])?, resolve.clone());
    let ws_connector = upstream::Connector::new(tls::client_config(roots, &[b"http/1.1"])?, resolve);
    let max = limits.max_connections;
    let budget_kib = u32::try_from(limits.max_buffered_bytes / 1024).unwrap_or(u32::MAX) as usize;
    let proxy = Arc::new(Proxy {
        live: RwLock::new(Arc::new(live(routes, tokens, &extra_secrets))),
        mint,
        upstream: upstream::Pool::new(connector, 256, std::time::Duration::from_secs(60)),
        ws_client: upstream::client(ws_connector),
        audit: audit::Audit::new(bottle.clone(), audit),
        queue,
        bottle,
        limits,
        body_budget: Arc::new(tokio::sync::Semaphore::new(budget_kib)),
    });
    let watcher = tokio::spawn(reload::watch(proxy.clone(), routes_path, extra_secrets, env, hup));
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p?,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(proxy.clone().serve_client(stream, peer, Arc::new(permit)));
    }
    drop(listener);
    watcher.abort();
    let drained = tokio::time::timeout(common::shutdown::GRACE, permits.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    Ok(())
}
