//! The operator's bot-bottle home (`$BOT_BOTTLE_HOME`, default `~/.bot-bottle/`) and where each
//! thing lives in it.
//!
//! ```text
//! bottles/<name>.md  agents/<name>.md  state/<slug>/  queue/<slug>/  audit.jsonl  cache/
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$BOT_BOTTLE_HOME`, else `$HOME/.bot-bottle`.
    pub fn from_env() -> anyhow::Result<Home> {
        if let Some(p) = std::env::var_os(common::consts::env::HOME).filter(|p| !p.is_empty()) {
            return Ok(Home::new(p));
        }
        let home =
            std::env::var_os("HOME").filter(|p| !p.is_empty()).context("neither BOT_BOTTLE_HOME nor HOME is set")?;
        Ok(Home::new(Path::new(&home).join(".bot-bottle")))
    }

    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn bottles_dir(&self) -> PathBuf {
        self.root.join("bottles")
    }

    pub fn agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }

    /// Per-bottle state: CA, routes, git-gate config and keys.
    pub fn state_dir(&self, slug: &str) -> PathBuf {
        self.root.join("state").join(slug)
    }

    /// The directory mounted read-only at `/etc/bot-bottle/egress` in the bundle.
    pub fn egress_dir(&self, slug: &str) -> PathBuf {
        self.state_dir(slug).join("egress")
    }

    /// The bottle's live `routes.json` (rewritten atomically; the proxy reloads it).
    pub fn routes_file(&self, slug: &str) -> PathBuf {
        self.egress_dir(slug).join("routes.json")
    }

    /// Every bottle's supervise queue lives under here, one directory per slug.
    pub fn queues_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    pub fn queue_dir(&self, slug: &str) -> PathBuf {
        self.queues_dir().join(slug)
    }

    /// Append-only JSON lines: every supervise request and answer, every launch and teardown.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
}
