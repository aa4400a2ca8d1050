//! The `bot-bottle` command line: clap types only. Resolution into settings and execution live
//! in the modules named by each command.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bot-bottle", version, about = "Run coding agents unattended, each sealed in its own bottle")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The sidecar image.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Answer the agents' requests: a terminal UI over every bottle's queue, or `list` / `answer`.
    Supervise(SuperviseArgs),
    /// Report what is missing on this host, and how to get it.
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// (Re)build the sidecar image from docker/ and the daemon binaries; a no-op when nothing changed.
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Directory holding the daemon binaries (default: the directory of this executable).
    #[arg(long, env = "BOT_BOTTLE_BIN_DIR")]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Base image for the sidecar (must exist locally; see docker/make-base-image).
    #[arg(long, env = "BOT_BOTTLE_BASE_IMAGE", default_value = "debian:bookworm-slim")]
    pub base_image: String,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[command(subcommand)]
    pub command: Option<SuperviseCmd>,
}

#[derive(Debug, Subcommand)]
pub enum SuperviseCmd {
    /// List pending requests from every bottle's queue, oldest first.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Answer one request.
    Answer {
        /// The request id (from `list`).
        id: String,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        #[arg(long)]
        reject: bool,
        /// Notes for the agent (a reason, an answer to its question).
        #[arg(long)]
        notes: Option<String>,
        /// Approve with edited arguments (JSON object): the answer becomes "modified".
        #[arg(long, requires = "approve")]
        arguments: Option<String>,
    },
}
