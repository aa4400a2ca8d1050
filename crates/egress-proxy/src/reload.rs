//! Live reload of routes.json: polls the file every 250 ms (content hash, so an atomic rename,
//! an in-place rewrite and a bind-mounted directory all work the same way) and reloads on
//! SIGHUP. A file that does not parse, or names a token env var that is not set, keeps the last
//! good routes and is logged loudly (once per distinct bad content).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::Secret;
use common::formats::Routes;
use sha2::{Digest, Sha256};

use crate::config::EnvFn;
use crate::proxy::LiveCell;

pub(crate) const POLL: Duration = Duration::from_millis(250);

/// The outcome of one reload attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Unchanged,
    Reloaded,
    Rejected(String),
}

/// Loads routes and their tokens from `path`, or says why not.
pub(crate) fn load(path: &Path, env: &EnvFn) -> Result<(Routes, std::collections::HashMap<String, Secret>), String> {
    let routes = Routes::load(path).map_err(|e| e.to_string())?;
    let tokens =
        crate::config::read_tokens(&routes, &**env).map_err(|ps| format!("{}: {}", path.display(), ps.join("; ")))?;
    Ok((routes, tokens))
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// One check: reloads when the content differs from `last` (or `force`).
pub(crate) fn check(
    live: &LiveCell,
    path: &Path,
    extra: &[Secret],
    env: &EnvFn,
    last: &mut Option<[u8; 32]>,
    force: bool,
) -> Outcome {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let h = hash(format!("error:{e}").as_bytes());
            if *last == Some(h) && !force {
                return Outcome::Unchanged;
            }
            *last = Some(h);
            let msg = format!("{}: cannot read: {e}", path.display());
            tracing::error!("routes reload failed, keeping the last good routes: {msg}");
            return Outcome::Rejected(msg);
        }
    };
    let h = hash(&bytes);
    if *last == Some(h) && !force {
        return Outcome::Unchanged;
    }
    *last = Some(h);
    match load(path, env) {
        Ok((routes, tokens)) => {
            let n = routes.routes.len();
            *live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(crate::live(routes, tokens, extra));
            tracing::info!(routes = n, file = %path.display(), "routes reloaded");
            Outcome::Reloaded
        }
        Err(msg) => {
            tracing::error!("ROUTES RELOAD REJECTED, keeping the last good routes: {msg}");
            Outcome::Rejected(msg)
        }
    }
}

/// Starts listening for SIGHUP (must run inside a tokio runtime).
pub fn hangup() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::error!("cannot listen for SIGHUP: {e}"))
        .ok()
}

/// Runs forever: polls `path` and listens for SIGHUP.
pub(crate) async fn watch(
    live: Arc<LiveCell>,
    path: PathBuf,
    extra: Vec<Secret>,
    env: EnvFn,
    mut hup: Option<tokio::signal::unix::Signal>,
) {
    let mut last = std::fs::read(&path).ok().map(|b| hash(&b));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading routes");
                true
            }
        };
        check(&live, &path, &extra, &env, &mut last, force);
    }
}
