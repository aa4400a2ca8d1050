//! `bot-bottle`: the orchestrator CLI. Exit codes: 0 ok, 1 failure, 64 bad usage.

use std::process::ExitCode;

use orchestrator::cli::{Cli, Command};
use orchestrator::home::Home;

fn main() -> ExitCode {
    let cli: Cli = common::daemon::parse_args();
    common::telemetry::init(common::telemetry::LogFormat::Text);
    common::daemon::exit_code(run(cli))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Image(cmd) => orchestrator::image::run(cmd),
        Command::Supervise(args) => orchestrator::supervise::run(&Home::from_env()?, args),
        Command::Doctor => orchestrator::doctor::run(),
    }
}
