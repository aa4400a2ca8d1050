//! Developer tasks that are programs rather than tests: `cargo xtask bench <what>`.
//! Each benchmark runs the contenders side by side in one run and prints ratios.

// Benchmarks drive real programs (the contenders, load generators, docker) directly.
#![allow(clippy::disallowed_methods)]

mod bench_aeb;
mod bench_egress;
mod bench_gate;
mod bench_launch;
mod bench_scan;
mod bench_throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "bot-bottle developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmarks that print side-by-side ratios.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Secret scanner: ours vs gitleaks vs kingfisher on a git history; `--throughput`: the DLP
    /// scan's bytes per second on prose and JSON.
    Scan {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// egress-proxy vs direct, nginx and mitmproxy.
    Egress {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A push through git-gate vs directly upstream.
    Gate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The agent-egress-bench corpus' proxy cases through egress-proxy (CORPUS: a checkout).
    Aeb {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `bot-bottle start --headless` to the agent's first command, and teardown, per step.
    Launch {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench(Bench::Scan { args }) => bench_scan::run(args),
        Cmd::Bench(Bench::Egress { args }) => bench_egress::run(args),
        Cmd::Bench(Bench::Gate { args }) => bench_gate::run(args),
        Cmd::Bench(Bench::Aeb { args }) => bench_aeb::run(args),
        Cmd::Bench(Bench::Launch { args }) => bench_launch::run(args),
    }
}
