//! Command-line types of the `git-gate` binary (clap only) and the step that resolves
//! `serve`'s flags into a validated [`ServeConfig`], reporting every problem at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use common::formats::GitGateConfig;
use common::telemetry::LogFormat;

use crate::serve::ServeConfig;

#[derive(Parser, Debug)]
#[command(name = "git-gate", version, about = "The bottle's git server: mirror, secret-scanned pushes, SSH forwarding")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = common::consts::env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the configured repos over smart HTTP.
    Serve(ServeArgs),
    /// Scan files or git history for secrets (the engine pushes go through).
    Scan(crate::scan::ScanArgs),
    /// Git hooks the gate installs into its mirrors (not for direct use).
    #[command(hide = true, subcommand)]
    Hook(HookKind),
}

#[derive(Subcommand, Debug)]
pub enum HookKind {
    /// Policy, scan and upstream forwarding for one push.
    PreReceive,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "GIT_GATE_LISTEN")]
    pub listen: SocketAddr,
    /// git-gate config.json.
    #[arg(long, env = "GIT_GATE_CONFIG")]
    pub config: PathBuf,
    /// Where the mirrors live (created if missing).
    #[arg(long, env = "GIT_GATE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Supervise queue directory: a push whose only findings are low-confidence is held there
    /// for the operator (without a queue such a push is refused).
    #[arg(long, env = "GIT_GATE_SUPERVISE_QUEUE", requires = "bottle")]
    pub supervise_queue: Option<PathBuf>,
    /// The bottle's slug.
    #[arg(long, env = common::consts::env::BOTTLE)]
    pub bottle: Option<String>,
    /// Seconds a held push waits for the operator before it is refused.
    #[arg(long, env = "GIT_GATE_SUPERVISE_TIMEOUT", default_value_t = 300, value_name = "SECS")]
    pub supervise_timeout: u64,
}

impl ServeArgs {
    /// Loads and checks everything `serve` will need before binding: the config (every key
    /// problem, from the shared loader), the credential files it names, the data dir.
    pub fn resolve(&self) -> anyhow::Result<ServeConfig> {
        let config_path = std::path::absolute(&self.config)
            .map_err(|e| common::daemon::UsageError(format!("--config {}: {e}", self.config.display())))?;
        let gate = GitGateConfig::load(&config_path)?;
        let mut problems = Vec::new();
        for (i, r) in gate.repos.iter().enumerate() {
            if !r.is_ssh() {
                continue;
            }
            for (key, file) in [("identity_file", &r.identity_file), ("known_hosts_file", &r.known_hosts_file)] {
                if let Some(f) = file
                    && let Err(e) = std::fs::File::open(f)
                {
                    problems.push(format!(
                        "{}: repos[{i}].{key}: cannot read {}: {e}",
                        config_path.display(),
                        f.display()
                    ));
                }
            }
        }
        let data_dir = std::path::absolute(&self.data_dir)
            .map_err(|e| common::daemon::UsageError(format!("--data-dir {}: {e}", self.data_dir.display())))?;
        // Mirrors under the data dir are what gets served: config and credentials must be elsewhere.
        let mut private = vec![("--config", config_path.clone())];
        for r in &gate.repos {
            private.extend(r.identity_file.iter().map(|f| ("identity_file", f.clone())));
            private.extend(r.known_hosts_file.iter().map(|f| ("known_hosts_file", f.clone())));
        }
        for (what, f) in private {
            if std::path::absolute(&f).is_ok_and(|f| f.starts_with(&data_dir)) {
                problems.push(format!("{what} {} must not be inside --data-dir {}", f.display(), data_dir.display()));
            }
        }
        if let Some(q) = &self.supervise_queue
            && !q.is_dir()
        {
            problems.push(format!("--supervise-queue {}: not a directory", q.display()));
        }
        // The hold and the upstream push (up to 20 min) must fit in one push's 30 min bound.
        if !(1..=600).contains(&self.supervise_timeout) {
            problems.push(format!("--supervise-timeout {}: must be 1 to 600 seconds", self.supervise_timeout));
        }
        if let Err(e) = std::fs::create_dir_all(&data_dir) {
            problems.push(format!("--data-dir {}: {e}", data_dir.display()));
        }
        if !problems.is_empty() {
            return Err(common::daemon::UsageError(problems.join("\n")).into());
        }
        let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("locating the git-gate binary: {e}"))?;
        Ok(ServeConfig {
            gate,
            config_path,
            data_dir,
            exe,
            hold: match (&self.supervise_queue, &self.bottle) {
                (Some(queue), Some(bottle)) => Some(crate::hook::Hold {
                    queue: std::path::absolute(queue).unwrap_or_else(|_| queue.clone()),
                    bottle: bottle.clone(),
                    timeout_secs: self.supervise_timeout,
                }),
                _ => None,
            },
        })
    }
}
