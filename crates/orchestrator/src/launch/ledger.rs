//! The teardown ledger: `state/<slug>/ledger.jsonl`, one line per completed launch step that
//! needs undoing, appended and synced to disk *before* the launch moves on. Teardown — on normal
//! exit, on a failure at any step, on a signal, or by `cleanup` after the launching process died —
//! replays it in reverse.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::manifest::types::ForgeKind;

/// How to undo one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub enum Undo {
    /// Remove a directory and everything in it.
    RemoveDir {
        path: PathBuf,
    },
    RemoveNetwork {
        id: String,
        name: String,
    },
    /// Stop (SIGTERM, then SIGKILL after `grace_secs`; 0 = at once) and remove.
    RemoveContainer {
        id: String,
        name: String,
        grace_secs: u64,
    },
    /// Stop and delete a smolvm machine.
    DeleteMachine {
        name: String,
    },
    /// Append the bundle's egress audit lines to the home's `audit.jsonl`.
    KeepAudit {
        from: PathBuf,
        to: PathBuf,
        bottle: String,
    },
    /// Delete a provisioned deploy key from its forge (always last in a teardown). The token is
    /// read again from host variable `token_ref`, never stored.
    /// Delete the deploy key titled `title`, found by listing the repository's keys: recorded
    /// before the key is registered, so a launch killed while the forge answers strands nothing
    /// (titles hold the bottle's slug, so they are unique).
    RevokeKeyTitled {
        kind: ForgeKind,
        api: String,
        repo: String,
        title: String,
        token_ref: String,
    },
    RevokeKey {
        kind: ForgeKind,
        api: String,
        repo: String,
        id: u64,
        title: String,
        token_ref: String,
    },
}

impl Undo {
    /// The kind of undo, for timings: `remove_container`, `remove_network`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            Undo::RemoveDir { .. } => "remove_dir",
            Undo::RemoveNetwork { .. } => "remove_network",
            Undo::RemoveContainer { .. } => "remove_container",
            Undo::DeleteMachine { .. } => "delete_machine",
            Undo::KeepAudit { .. } => "keep_audit",
            Undo::RevokeKey { .. } | Undo::RevokeKeyTitled { .. } => "revoke_key",
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Undo::RemoveDir { path } => format!("remove {}", path.display()),
            Undo::RemoveNetwork { name, .. } => format!("remove network {name}"),
            Undo::RemoveContainer { name, .. } => format!("remove container {name}"),
            Undo::DeleteMachine { name } => format!("delete machine {name}"),
            Undo::KeepAudit { to, .. } => format!("append the egress audit log to {}", to.display()),
            Undo::RevokeKey { api, repo, id, .. } => format!("revoke deploy key {id} of {repo} on {api}"),
            Undo::RevokeKeyTitled { api, repo, title, .. } => {
                format!("revoke deploy key \"{title}\" of {repo} on {api}")
            }
        }
    }
}

/// An open ledger.
pub struct Ledger {
    path: PathBuf,
    file: Mutex<File>,
    entries: Mutex<Vec<Undo>>,
}

impl Ledger {
    /// Creates the ledger file (the directory must exist).
    pub fn create(path: &Path) -> anyhow::Result<Ledger> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .with_context(|| format!("creating the ledger {}", path.display()))?;
        Ok(Ledger { path: path.to_path_buf(), file: Mutex::new(file), entries: Mutex::new(Vec::new()) })
    }

    /// Records one undo; on disk before this returns.
    pub fn record(&self, undo: Undo) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(&undo).expect("an undo serializes");
        line.push(b'\n');
        {
            let mut f = self.file.lock().expect("ledger lock");
            f.write_all(&line)
                .and_then(|()| f.sync_data())
                .with_context(|| format!("writing {}", self.path.display()))?;
        }
        self.entries.lock().expect("ledger lock").push(undo);
        Ok(())
    }

    /// Everything recorded, in order.
    pub fn entries(&self) -> Vec<Undo> {
        self.entries.lock().expect("ledger lock").clone()
    }

    /// Reads a ledger left by another process. A torn last line (the writer died mid-write) is
    /// skipped; other unreadable lines are errors.
    pub fn read(path: &Path) -> anyhow::Result<Vec<Undo>> {
        let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let lines: Vec<String> = BufReader::new(file)
            .lines()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", path.display()))?;
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(u) => out.push(u),
                Err(_) if i + 1 == lines.len() => {}
                Err(e) => anyhow::bail!("{}:{}: {e}", path.display(), i + 1),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_a_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let l = Ledger::create(&path).unwrap();
        l.record(Undo::RemoveDir { path: "/x".into() }).unwrap();
        l.record(Undo::RemoveNetwork { id: "n1".into(), name: "net".into() }).unwrap();
        assert_eq!(Ledger::read(&path).unwrap(), l.entries());
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"undo\":\"remove_con").unwrap();
        assert_eq!(Ledger::read(&path).unwrap().len(), 2);
        assert!(Ledger::create(&path).is_err(), "never reopened over an existing ledger");
    }
}
