//! `egress-proxy` binary: parse flags (exit 64 on bad ones) → tracing → validate the whole
//! config (exit 64 naming file/key) → bind → announce → run until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;
use egress_proxy::{Args, Config};

/// mimalloc, not glibc's malloc: a request allocates dozens of small buffers (hyper, rustls,
/// the DLP scan), and with glibc's allocator their malloc and free are about a tenth of the
/// proxy's own instructions per 4 KiB POST (callgrind), a third of that with mimalloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Args = common::daemon::parse_args();
    common::telemetry::init(args.log_format);
    common::daemon::exit_code(real_main(args))
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let config = Config::from_args(&args).context("invalid egress-proxy configuration")?;
    // This runtime only watches routes and signals; the serving threads run their own (see `serve`).
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let hup = egress_proxy::reload::hangup();
        let shutdown = common::shutdown::listen().context("installing SIGTERM/SIGINT handlers")?;
        common::daemon::announce(addr);
        egress_proxy::serve(config, listener, shutdown, hup).await
    })
}
