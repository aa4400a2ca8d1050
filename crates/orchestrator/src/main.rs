//! `bot-bottle`: the orchestrator CLI. One tokio runtime; `commands::run` does the work.
//!
//! Exit codes: what the command says (for `start`, the agent's own exit code, or 128 + the
//! signal that stopped it); 64 for bad usage or bad manifests; 1 for other failures.

use std::process::ExitCode;
use std::time::Duration;

use orchestrator::cli::Cli;

fn main() -> ExitCode {
    let cli: Cli = common::daemon::parse_args();
    common::telemetry::init(common::telemetry::LogFormat::Text);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(orchestrator::commands::run(cli));
    // A blocked read of the terminal (an interactive agent that ended) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            let usage = err.chain().any(|e| {
                e.is::<common::daemon::UsageError>()
                    || e.is::<orchestrator::manifest::ManifestError>()
                    || e.is::<orchestrator::plan::PlanError>()
            });
            ExitCode::from(if usage { common::daemon::EXIT_USAGE } else { common::daemon::EXIT_FAILURE })
        }
    }
}
