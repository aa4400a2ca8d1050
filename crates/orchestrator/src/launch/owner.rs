//! Who launched a bottle: `<pid>:<start time>` of the `bot-bottle` process (the start time, from
//! `/proc/<pid>/stat`, tells a live owner from a recycled pid), and the bottle's record in
//! `state/<slug>/bottle.json`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::plan::{Backend, BottlePlan};

/// This process's owner id.
pub fn current() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

/// Field 22 of `/proc/<pid>/stat` (clock ticks since boot), `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process an owner id names is still running.
pub fn alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else { return false };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    start_time(pid) == Some(start)
}

/// The pid part of an owner id.
pub fn pid(owner: &str) -> Option<i32> {
    owner.split_once(':')?.0.parse().ok()
}

/// `state/<slug>/bottle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub slug: String,
    pub label: String,
    pub backend: Backend,
    pub owner: String,
    pub created_at: String,
    pub agent: Option<PathBuf>,
    pub bottles: Vec<String>,
    pub headless: bool,
}

impl Record {
    pub fn for_plan(plan: &BottlePlan, owner: &str, created_at: &str) -> Record {
        Record {
            slug: plan.slug.clone(),
            label: plan.label.clone(),
            backend: plan.backend,
            owner: owner.to_string(),
            created_at: created_at.to_string(),
            agent: plan.manifests.agent.clone(),
            bottles: plan.manifests.bottles.clone(),
            headless: !plan.agent.interactive,
        }
    }

    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("bottle.json")
    }

    pub fn read(state_dir: &Path) -> anyhow::Result<Record> {
        let path = Self::path(state_dir);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
    }

    pub fn write(&self, state_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(state_dir);
        common::atomic::write_json(&path, self).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = current();
        assert!(alive(&me), "{me}");
        let (p, start) = me.split_once(':').unwrap();
        assert!(!alive(&format!("{p}:{}", start.parse::<u64>().unwrap() + 1)), "a recycled pid is not the owner");
        assert!(!alive("999999999:1"));
        assert!(!alive("garbage"));
        assert_eq!(pid(&me), Some(std::process::id() as i32));
    }
}
