//! Developer tasks that are programs rather than tests: `cargo xtask bench <what>`.

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
    Bench {
        /// Which benchmark.
        what: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bench { what } => anyhow::bail!("unknown benchmark {what:?}"),
    }
}
