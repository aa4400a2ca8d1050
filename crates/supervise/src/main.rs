//! `supervise`: parse flags → tracing → validate → bind → announce → serve until SIGTERM/SIGINT.
//! Exit codes: 0 after a signal, 64 bad flags or config, 1 anything else.

use std::process::ExitCode;

use anyhow::Context;
use common::daemon::UsageError;
use supervise::Args;

fn main() -> ExitCode {
    let args: Args = common::daemon::parse_args();
    common::telemetry::init(args.log_format);
    common::daemon::exit_code(run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let bottle_env = std::env::var(common::consts::env::BOTTLE).ok();
    let (addr, config) = args.validate(bottle_env).map_err(|e| UsageError(e.to_string()))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        tracing::info!(bottle = %config.bottle, queue = %config.queue_dir.display(), "supervise listening on {local}");
        let shutdown = common::shutdown::listen().context("installing signal handlers")?;
        common::daemon::announce(local);
        supervise::run(config, listener, shutdown).await.context("serving MCP")
    })
}
