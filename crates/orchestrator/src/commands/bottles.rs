//! `bot-bottle ls`, `stop` and `cleanup`: the home's bottles, found by their state directories
//! and by the labels on their Docker objects.
//!
//! A bottle is *live* while the `bot-bottle` process that launched it runs (its owner id,
//! `<pid>:<start time>`, in `bottle.json` and on every object); otherwise whatever it left is an
//! orphan. `cleanup` removes orphans only, and only this home's (the `bot-bottle.home` label):
//! never another bottle's, never another home's.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::consts::label;
use serde::Serialize;

use super::start::say;
use crate::cli::{CleanupArgs, LsArgs, StopArgs};
use crate::engine::Engine;
use crate::engine::docker::DockerEngine;
use crate::home::Home;
use crate::launch::ledger::Ledger;
use crate::launch::owner::{self, Record};
use crate::launch::{self, Timings};
use crate::plan::home_id;

/// How long a state directory without a record may be young before it counts as abandoned
/// (a launch writes its record right after creating the directory).
const RECORDLESS_GRACE: Duration = Duration::from_secs(60);

/// One bottle of this home, as `ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub slug: String,
    pub label: String,
    pub status: &'static str,
    pub backend: String,
    pub agent: Option<String>,
    pub bottles: Vec<String>,
    pub created_at: String,
    pub containers: Vec<String>,
}

/// The home's bottles: every state directory, and every labelled object without one.
async fn entries(home: &Home, engine: Option<&dyn Engine>) -> anyhow::Result<Vec<Entry>> {
    let mut by_slug: BTreeMap<String, Entry> = BTreeMap::new();
    for (slug, record) in states(home)? {
        let entry = match record {
            Some(r) => Entry {
                slug: slug.clone(),
                label: r.label,
                status: if owner::alive(&r.owner) { "running" } else { "orphaned" },
                backend: r.backend.to_string(),
                agent: r.agent.and_then(|a| a.file_stem().map(|s| s.to_string_lossy().into_owned())),
                bottles: r.bottles,
                created_at: r.created_at,
                containers: Vec::new(),
            },
            None => Entry {
                slug: slug.clone(),
                label: slug.clone(),
                status: "incomplete",
                backend: String::new(),
                agent: None,
                bottles: Vec::new(),
                created_at: String::new(),
                containers: Vec::new(),
            },
        };
        by_slug.insert(slug, entry);
    }
    if let Some(engine) = engine {
        let ours = format!("{}={}", label::HOME, home_id(home.root()));
        for c in engine.containers(&ours).await? {
            let Some(slug) = c.labels.get(label::SLUG) else { continue };
            let e = by_slug.entry(slug.clone()).or_insert_with(|| Entry {
                slug: slug.clone(),
                label: slug.clone(),
                status: if c.labels.get(label::OWNER).is_some_and(|o| owner::alive(o)) {
                    "running"
                } else {
                    "orphaned"
                },
                backend: "docker".into(),
                agent: None,
                bottles: Vec::new(),
                created_at: String::new(),
                containers: Vec::new(),
            });
            e.containers.push(c.name);
        }
    }
    Ok(by_slug.into_values().collect())
}

/// `state/<slug>/` directories and their records (`None` when unreadable or not written yet).
fn states(home: &Home) -> anyhow::Result<Vec<(String, Option<Record>)>> {
    let dir = home.root().join("state");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let slug = entry.file_name().to_string_lossy().into_owned();
        out.push((slug, Record::read(&entry.path()).ok()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub async fn ls(args: LsArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await.ok();
    let list = entries(home, engine.as_ref().map(|e| e as &dyn Engine)).await?;
    let out = if args.json {
        serde_json::to_string_pretty(&list).expect("json") + "\n"
    } else if list.is_empty() {
        "no bottles\n".to_string()
    } else {
        let mut s =
            format!("{:<28} {:<20} {:<10} {:<8} {:<14} {}\n", "SLUG", "LABEL", "STATUS", "BACKEND", "AGENT", "CREATED");
        for e in &list {
            s.push_str(&format!(
                "{:<28} {:<20} {:<10} {:<8} {:<14} {}\n",
                e.slug,
                e.label,
                e.status,
                e.backend,
                e.agent.as_deref().unwrap_or("-"),
                e.created_at
            ));
        }
        s
    };
    print(&out);
    Ok(ExitCode::SUCCESS)
}

pub async fn stop(args: StopArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await?;
    let list = entries(home, Some(&engine)).await?;
    let matching: Vec<&Entry> = list.iter().filter(|e| e.label == args.label || e.slug == args.label).collect();
    let entry = match matching.as_slice() {
        [] => bail!("no bottle labelled {:?} (see `bot-bottle ls`)", args.label),
        [one] => *one,
        many => bail!(
            "{} bottles are labelled {:?}: stop one by slug ({})",
            many.len(),
            args.label,
            many.iter().map(|e| e.slug.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let state = home.state_dir(&entry.slug);
    if entry.status == "running"
        && let Ok(record) = Record::read(&state)
        && let Some(pid) = owner::pid(&record.owner)
    {
        // Its own process tears it down (and revokes what it provisioned).
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("signalling bot-bottle process {pid}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while state.exists() && owner::alive(&record.owner) {
            if Instant::now() > deadline {
                bail!("bottle {} did not stop within 60 s (its process is {pid})", entry.slug);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !state.exists() {
            say(&format!("stopped {}", entry.slug));
            return Ok(ExitCode::SUCCESS);
        }
    }
    // No live owner: tear down what is left, as cleanup would.
    let errors = remove_orphan(&engine, home, &entry.slug).await;
    finish(&format!("stopped {}", entry.slug), &errors)
}

pub async fn cleanup(args: CleanupArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await?;
    let mut orphans: BTreeSet<String> = BTreeSet::new();
    let mut live = 0;
    for (slug, record) in states(home)? {
        match record {
            Some(r) if owner::alive(&r.owner) => live += 1,
            Some(_) => {
                orphans.insert(slug);
            }
            None => {
                let age = std::fs::metadata(home.state_dir(&slug))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                if age > RECORDLESS_GRACE {
                    orphans.insert(slug);
                }
            }
        }
    }
    let ours = format!("{}={}", label::HOME, home_id(home.root()));
    let mut other_homes = 0;
    for c in engine.containers(label::SLUG).await? {
        if c.labels.get(label::HOME).map(|h| format!("{}={h}", label::HOME)) != Some(ours.clone()) {
            other_homes += 1;
            continue;
        }
        let dead = !c.labels.get(label::OWNER).is_some_and(|o| owner::alive(o));
        if let (true, Some(slug)) = (dead, c.labels.get(label::SLUG)) {
            orphans.insert(slug.clone());
        }
    }
    for n in engine.networks().await? {
        if n.object.labels.get(label::HOME).map(String::as_str) != Some(&home_id(home.root())) {
            continue;
        }
        let dead = !n.object.labels.get(label::OWNER).is_some_and(|o| owner::alive(o));
        if let (true, Some(slug)) = (dead, n.object.labels.get(label::SLUG)) {
            orphans.insert(slug.clone());
        }
    }
    // Machines (the smolvm backend) of this home whose launcher is gone.
    let smolvm = crate::vmm::smolvm::SmolvmCli::find();
    if let Some(vmm) = &smolvm {
        let machines = crate::vmm::Vmm::list(vmm).await.unwrap_or_else(|e| {
            say(&format!("warning: listing smolvm machines: {e:#}"));
            Vec::new()
        });
        for m in machines {
            if m.labels.get(label::HOME).map(String::as_str) != Some(&home_id(home.root())) {
                continue;
            }
            let dead = !m.labels.get(label::OWNER).is_some_and(|o| owner::alive(o));
            if let (true, Some(slug)) = (dead, m.labels.get(label::SLUG)) {
                orphans.insert(slug.clone());
            }
        }
    }
    // Queue directories whose bottle has no state and no live object.
    if let Ok(rd) = std::fs::read_dir(home.queues_dir()) {
        for e in rd.flatten() {
            let slug = e.file_name().to_string_lossy().into_owned();
            if !home.state_dir(&slug).exists() && !slug.starts_with('.') {
                orphans.insert(slug);
            }
        }
    }
    if orphans.is_empty() {
        say(&format!("nothing to clean up ({live} live bottle(s) left alone)"));
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        for slug in &orphans {
            say(&format!("would remove bottle {slug}: {}", describe_orphan(&engine, home, slug).await));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut errors = Vec::new();
    for slug in &orphans {
        let e = remove_orphan(&engine, home, slug).await;
        if e.is_empty() {
            say(&format!("removed bottle {slug}"));
        }
        errors.extend(e);
    }
    if other_homes > 0 {
        say(&format!("left alone: {other_homes} container(s) of other bot-bottle homes"));
    }
    finish(&format!("cleaned up {} bottle(s)", orphans.len()), &errors)
}

async fn describe_orphan(engine: &dyn Engine, home: &Home, slug: &str) -> String {
    let filter = format!("{}={slug}", label::SLUG);
    let containers = engine.containers(&filter).await.map(|c| c.len()).unwrap_or(0);
    let networks = engine
        .networks()
        .await
        .map(|n| n.iter().filter(|n| n.object.labels.get(label::SLUG).map(String::as_str) == Some(slug)).count())
        .unwrap_or(0);
    format!(
        "{containers} container(s), {networks} network(s){}{}",
        if home.state_dir(slug).exists() { ", its state" } else { "" },
        if home.queue_dir(slug).exists() { ", its queue" } else { "" }
    )
}

/// Replays an orphan's ledger (when it has one), sweeps its labelled objects, removes its
/// directories.
async fn remove_orphan(engine: &dyn Engine, home: &Home, slug: &str) -> Vec<String> {
    let state = home.state_dir(slug);
    let entries = Ledger::read(&state.join("ledger.jsonl")).unwrap_or_default();
    let tokens = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty()).map(common::Secret::new);
    let smolvm = crate::vmm::smolvm::SmolvmCli::find();
    let vmm = smolvm.as_ref().map(|v| v as &dyn crate::vmm::Vmm);
    let mut errors = launch::teardown(engine, vmm, &tokens, slug, &entries, &Timings::default()).await;
    for dir in [state, home.queue_dir(slug)] {
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {e}", dir.display()));
        }
    }
    errors
}

fn finish(done: &str, errors: &[String]) -> anyhow::Result<ExitCode> {
    if errors.is_empty() {
        say(done);
        return Ok(ExitCode::SUCCESS);
    }
    for e in errors {
        say(&format!("error: {e}"));
    }
    Ok(ExitCode::FAILURE)
}

fn print(s: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(s.as_bytes());
}
