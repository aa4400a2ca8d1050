//! egress-proxy: the bottle's only way out. A TLS-bumping forward proxy that allows only the
//! bottle's routes, strips what the agent sends as credentials and injects the real token,
//! scans what leaves (DLP) and blocks, redacts or holds it for the operator, and reloads its
//! routes live. Built directly on hyper + tokio-rustls + rcgen (see [`proxy`] for why not
//! hudsucker).
//!
//! Code map: `config` flags → validated [`Config`]; [`policy`] the pure decision;
//! `proxy` the plumbing (with the scanned WebSocket relay in `proxy/ws.rs`); `tls` leaf
//! minting and upstream trust; `upstream` the connection pool; `body` bounded collection and
//! decoding; `dlp` secret matching; `audit` the JSON-lines log; [`reload`] the routes watcher.
//! Only what the binary, the integration tests and the fuzz targets use is public.

#![warn(unreachable_pub)]

mod audit;
mod body;
mod config;
mod dlp;
pub mod policy;
mod proxy;
pub mod reload;
mod tls;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config, EnvFn};

use crate::proxy::{Live, Proxy};

/// Builds the live state (routes, tokens, DLP engine) from routes and tokens.
pub(crate) fn live(
    routes: common::formats::Routes,
    tokens: std::collections::HashMap<String, common::Secret>,
    extra: &[common::Secret],
) -> Live {
    let mut secrets: Vec<common::Secret> = tokens.values().cloned().collect();
    secrets.extend(extra.iter().cloned());
    Live::new(routes, &tokens, dlp::Engine::new(&secrets))
}

/// Serves until `shutdown` resolves, then drains connections for up to
/// [`common::shutdown::GRACE`].
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    serve(config, listener, shutdown, reload::hangup()).await
}

/// [`run`] with a SIGHUP stream created by the caller (the binary installs it before it
/// announces readiness, so an early SIGHUP reloads instead of killing the process).
///
/// Runtime shape, like nginx's worker per core: [`serving_threads`] threads, each a
/// single-threaded tokio runtime with its own upstream pool that serves its connections from
/// start to end, so a request never hops between threads. The caller's runtime accepts and
/// hands each connection to the serving thread with the fewest open ones, and watches the
/// routes. Routes, the CA, the audit log, the limits and the body budget are shared.
/// Measured against one multi-threaded tokio runtime (keep-alive, 64 clients, 2 CPUs): the
/// box idled 2% of the time instead of 5-6%, for 10% more requests per second; handing
/// connections out by count, rather than letting the threads race for `accept`, is what
/// removed the idling.
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
    let ws_client = upstream::client(upstream::Connector::new(tls::client_config(roots, &[b"http/1.1"])?, resolve));
    let max = limits.max_connections;
    let budget_kib = u32::try_from(limits.max_buffered_bytes / 1024).unwrap_or(u32::MAX) as usize;
    let live_routes = Arc::new(RwLock::new(Arc::new(live(routes, tokens, &extra_secrets))));
    let (mint, audit) = (Arc::new(mint), Arc::new(audit::Audit::new(bottle.clone(), audit)));
    let body_budget = Arc::new(tokio::sync::Semaphore::new(budget_kib));
    let threads = serving_threads();
    // `done`: the drain is over, close what is left. It also fires when this future is
    // dropped (a caller that stops polling it takes the serving threads down).
    let done = CancellationToken::new();
    let _done_guard = done.clone().drop_guard();
    let stopping = CancellationToken::new();
    let mut shards = Vec::with_capacity(threads);
    for i in 0..threads {
        let proxy = Proxy {
            live: live_routes.clone(),
            mint: mint.clone(),
            upstream: upstream::Pool::new(connector.clone(), (256 / threads).max(16), Duration::from_secs(60)),
            ws_client: ws_client.clone(),
            audit: audit.clone(),
            queue: queue.clone(),
            bottle: bottle.clone(),
            limits: limits.clone(),
            body_budget: body_budget.clone(),
            stopping: stopping.clone(),
        };
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a serving runtime")?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (count, done) = (open.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name(format!("egress-{i}"))
            .spawn(move || rt.block_on(shard(Arc::new(proxy), rx, count, done)))
            .context("starting a serving thread")?;
        shards.push(Shard { tx, open, thread });
    }
    let watcher = tokio::spawn(reload::watch(live_routes, routes_path, extra_secrets, env, hup));
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    tokio::pin!(shutdown);
    let mut next = 0;
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
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let to = fewest_open(&shards, next);
        next = (to + 1) % shards.len();
        // Off this runtime's poller; the serving thread registers it with its own.
        match stream.into_std() {
            Ok(stream) => {
                shards[to].open.fetch_add(1, Ordering::Relaxed);
                if shards[to].tx.send((stream, peer, permit)).is_err() {
                    tracing::error!("serving thread {to} has stopped; connection from {peer} dropped");
                }
            }
            Err(e) => tracing::warn!("taking the connection from {peer}: {e}"),
        }
    }
    drop(listener);
    watcher.abort();
    stopping.cancel();
    // The serving threads finish what they have; no more connections come.
    let threads: Vec<_> = shards.into_iter().map(|s| s.thread).collect();
    let drained = tokio::time::timeout(common::shutdown::GRACE, permits.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    done.cancel();
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    Ok(())
}

/// Serving threads by default at most: one bottle's agent does not need more (each thread
/// proxies ~20k keep-alive requests/s), and every bottle on a large host has its own proxy.
const MAX_DEFAULT_THREADS: usize = 4;

/// How many serving threads: `TOKIO_WORKER_THREADS` when set to a positive number (the knob a
/// multi-threaded tokio runtime reads), else one per CPU this process may use, at most
/// [`MAX_DEFAULT_THREADS`].
pub fn serving_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_DEFAULT_THREADS))
}

type Handoff = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

/// A serving thread as the acceptor sees it.
struct Shard {
    tx: tokio::sync::mpsc::UnboundedSender<Handoff>,
    /// Its open connections.
    open: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

/// The shard with the fewest open connections; ties go to the first from `start` on, so
/// connections that arrive together are dealt out in turn.
fn fewest_open(shards: &[Shard], start: usize) -> usize {
    fewest(shards.len(), start, |k| shards[k].open.load(Ordering::Relaxed))
}

/// The index below `n` with the smallest `load`, the first from `start` on among equals.
fn fewest(n: usize, start: usize, load: impl Fn(usize) -> usize) -> usize {
    (0..n).map(|k| (start + k) % n).min_by_key(|&k| load(k)).unwrap_or(0)
}

/// One serving thread's work: serves the connections handed to it until the acceptor hangs
/// up and `done` fires, then returns (its runtime drops whatever is still open). `open`
/// counts its live connections.
async fn shard(
    proxy: Arc<Proxy>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
    open: Arc<AtomicUsize>,
    done: CancellationToken,
) {
    while let Some((stream, peer, permit)) = rx.recv().await {
        let (proxy, open) = (proxy.clone(), Open(open.clone()));
        tokio::spawn(async move {
            let _open = open;
            match TcpStream::from_std(stream) {
                Ok(stream) => proxy.serve_client(stream, peer, Arc::new(permit)).await,
                Err(e) => tracing::warn!("registering the connection from {peer}: {e}"),
            }
        });
    }
    done.cancelled().await;
}

/// One open connection on a serving thread's count, however its task ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::fewest;

    #[test]
    fn connections_go_to_the_least_busy_thread_and_ties_take_turns() {
        let mut open = [0usize; 3];
        let mut next = 0;
        let mut order = Vec::new();
        for _ in 0..6 {
            let to = fewest(open.len(), next, |k| open[k]);
            next = (to + 1) % open.len();
            open[to] += 1;
            order.push(to);
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        // Thread 1 lost its connections: it gets the next ones until it catches up.
        open = [5, 1, 4];
        let picks: Vec<usize> = (0..5)
            .map(|_| {
                let to = fewest(open.len(), 0, |k| open[k]);
                open[to] += 1;
                to
            })
            .collect();
        assert_eq!(picks, [1, 1, 1, 1, 2]);
        assert_eq!(fewest(1, 0, |_| 9), 0);
    }
}
