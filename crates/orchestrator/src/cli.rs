//! The `bot-bottle` command line: clap types only. Resolution into settings and execution live
//! in `commands/`, one file per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "bot-bottle", version, about = "Run coding agents unattended, each sealed in its own bottle")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch a bottle: the agent sealed in a container whose only way out is its bundle.
    Start(StartArgs),
    /// List this home's bottles.
    Ls(LsArgs),
    /// Stop a running bottle (by label or slug) and tear it down.
    Stop(StopArgs),
    /// Remove what bottles whose `bot-bottle` process is gone left behind: containers,
    /// networks, state and queues (never a live bottle's, never another home's).
    Cleanup(CleanupArgs),
    /// The sidecar image.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Answer the agents' requests: a terminal UI over every bottle's queue, or `list` / `answer`.
    Supervise(SuperviseArgs),
    /// Report what is missing on this host, and how to get it.
    Doctor,
    /// Print the JSON Schema of a manifest's front matter (for editors).
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The agent manifest (`agents/<AGENT>.md` in the home or in `./.bot-bottle/`).
    pub agent: Option<String>,
    /// Bottle manifests (`bottles/<NAME>.md` in the home), composed in order, later wins;
    /// default: the agent's `bottle`.
    #[arg(long = "bottle", value_name = "NAME")]
    pub bottles: Vec<String>,
    /// Where the agent runs.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// A name for this bottle in `ls` and `stop` (default: the agent's or bottle's name).
    #[arg(long)]
    pub label: Option<String>,
    /// A colour for this bottle's name in terminal output.
    #[arg(long)]
    pub color: Option<String>,
    /// Run without a terminal: the agent's stdout/stderr and exit code are this command's.
    #[arg(long, requires = "prompt")]
    pub headless: bool,
    /// Added to the agent manifest's prompt (after its body).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Print the launch plan and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Format of `--dry-run` output.
    #[arg(long, value_enum, default_value_t = Format::Text, requires = "dry_run")]
    pub format: Format,
    /// Directory holding the daemon binaries for the sidecar image (default: beside this
    /// executable).
    #[arg(long, env = "BOT_BOTTLE_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Base image of the sidecar image.
    #[arg(long, env = "BOT_BOTTLE_BASE_IMAGE", default_value = crate::image::DEFAULT_BASE_IMAGE)]
    pub base_image: String,
    /// Print how long each launch and teardown step took (stderr, one JSON line each).
    #[arg(long, env = "BOT_BOTTLE_TIMINGS")]
    pub timings: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Auto,
    Smolvm,
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The bottle's label or slug (see `bot-bottle ls`).
    pub label: String,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which manifest.
    #[arg(value_enum, default_value_t = SchemaKind::Bottle)]
    pub kind: SchemaKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Bottle,
    Agent,
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
    pub bin_dir: Option<PathBuf>,
    /// Base image for the sidecar (must exist locally; see docker/make-base-image).
    #[arg(long, env = "BOT_BOTTLE_BASE_IMAGE", default_value = crate::image::DEFAULT_BASE_IMAGE)]
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
