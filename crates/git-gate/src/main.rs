//! `git-gate` binary: parse flags (exit 64 on bad usage) → tracing → validate the whole config
//! (exit 64 naming file and key) → bind → `listening on IP:PORT` → serve until SIGTERM/SIGINT.
//! `scan` and the hidden `hook pre-receive` are dispatched to the library.

use std::process::ExitCode;

use anyhow::Context;
use git_gate::cli::{Cli, Command, HookKind, ServeArgs};

fn main() -> ExitCode {
    let cli: Cli = common::daemon::parse_args();
    match cli.command {
        Command::Serve(args) => {
            common::telemetry::init(cli.log_format);
            common::daemon::exit_code(serve(args))
        }
        Command::Scan(args) => git_gate::scan::run_scan(args),
        Command::Hook(HookKind::PreReceive) => git_gate::hook::pre_receive(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding --listen {}", args.listen))?;
        let shutdown = common::shutdown::listen().context("installing SIGTERM/SIGINT handlers")?;
        // Ready means the mirrors and their hooks are in place; a hook that cannot run is
        // bad configuration (exit 64): restarting cannot fix it.
        let prepared = git_gate::prepare(&config).await.map_err(|e| match e {
            git_gate::serve::ServeError::Mirror(m @ git_gate::mirror::MirrorError::HookNotExecutable { .. }) => {
                anyhow::Error::new(common::daemon::UsageError(m.to_string()))
            }
            e => anyhow::Error::new(e),
        })?;
        common::daemon::announce(listener.local_addr().context("reading the bound address")?);
        git_gate::serve(config, prepared, listener, shutdown).await.context("git-gate serve")
    })
}
