//! The one shutdown signal: [`listen`] resolves on the first SIGTERM or SIGINT.
//!
//! Daemons pass it to their `run(config, listener, shutdown)` and drain connections under a
//! bounded grace period ([`GRACE`]) once it fires.

use std::time::Duration;

/// How long a daemon keeps draining in-flight work after the shutdown signal.
pub const GRACE: Duration = Duration::from_secs(5);

/// The shutdown future: resolves on the first SIGTERM or SIGINT. The handlers are installed
/// *now*, before the future is first polled: call it before announcing readiness, so a SIGTERM
/// sent right after `listening on ...` is never the default (fatal) action.
pub fn listen() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    })
}
