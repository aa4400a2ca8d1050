//! `git-gate hook pre-receive`: what every push to a mirror goes through, run by
//! `git receive-pack` (under http-backend) with the pushed objects still in quarantine.
//!
//! 1. read the ref updates from stdin;
//! 2. ref policy ([`crate::policy`]) for every update — all refusals are reported at once;
//! 3. secret scan of everything the push brings (ref names, every tag of a chain, every commit
//!    reachable from the new tips and from no ref the mirror has: header, message, new paths,
//!    added text and binary content), opened through the environment so quarantined objects
//!    are visible (receive-pack has already run fsck over them: `receive.fsckObjects`);
//! 4. [`verdict`]: forward, hold for the operator, or refuse;
//! 5. forward the very same updates upstream (`git push --atomic`, leased on the old values)
//!    from inside the quarantine, so the push carries exactly the scanned objects.
//!
//! Exit 0 only when upstream accepted; receive-pack then updates the mirror's refs and tells
//! the client ok. Every message goes to stderr, which the client shows as `remote:` lines.
//! The hook never prints a secret (findings are redacted) nor the deploy key.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use common::formats::GitGateConfig;
use common::formats::git_gate::RepoConfig;

use crate::policy::{self, Change};
use crate::proc::Cmd;
use crate::scan::{Confidence, GitFinding, GitScanError};
use crate::upstream::{RefUpdate, push_args, transport_env};
use crate::verdict::{Refusal, Verdict, verdict};

/// Env var naming config.json for the hook (set by the hook script the gate writes).
pub const ENV_CONFIG: &str = "GIT_GATE_HOOK_CONFIG";
/// Env var naming the repo the hook runs for.
pub const ENV_REPO: &str = "GIT_GATE_HOOK_REPO";
/// Env vars naming the supervise queue, the bottle and the hold timeout (seconds), set only
/// when the gate has a queue.
pub const ENV_QUEUE: &str = "GIT_GATE_HOOK_QUEUE";
pub const ENV_BOTTLE: &str = "GIT_GATE_HOOK_BOTTLE";
pub const ENV_HOLD_SECS: &str = "GIT_GATE_HOOK_HOLD_SECS";
/// The queue tool name of a held push.
pub const HOLD_TOOL: &str = "git_push";

/// Where a push whose findings are all low-confidence waits for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub queue: PathBuf,
    pub bottle: String,
    pub timeout_secs: u64,
}

impl Hold {
    /// The hold the serving gate configured, from the hook's environment.
    fn from_env() -> Result<Option<Hold>, HookError> {
        let Some(queue) = std::env::var_os(ENV_QUEUE) else { return Ok(None) };
        let bottle = std::env::var(ENV_BOTTLE)
            .map_err(|_| HookError::Env(format!("{ENV_QUEUE} is set but {ENV_BOTTLE} is not")))?;
        let timeout_secs = std::env::var(ENV_HOLD_SECS)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| HookError::Env(format!("{ENV_HOLD_SECS} is not a number of seconds")))?;
        Ok(Some(Hold { queue: PathBuf::from(queue), bottle, timeout_secs }))
    }
}

/// Why a push did not go upstream. Every message is what the client sees after `git-gate: `.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("push refused: {0}")]
    Env(String),
    #[error("push refused: {0}")]
    Config(#[from] common::formats::FormatError),
    #[error("push refused: repo {0:?} is not in the gate's config")]
    UnknownRepo(String),
    #[error("push refused: reading ref updates: {0}")]
    ReadUpdates(std::io::Error),
    #[error("push refused: malformed ref update {0:?}")]
    MalformedUpdate(String),
    #[error("push refused: opening the repository: {0}")]
    Open(GitScanError),
    #[error("push refused: bad object id {id}: {source}")]
    ObjectId { id: String, source: git2::Error },
    #[error("push refused: the secret scan failed: {0}")]
    Scan(GitScanError),
    #[error("{0}")]
    Refused(Refusal),
    #[error("push rejected: filing it for the operator in {queue}: {source}")]
    File { queue: PathBuf, source: std::io::Error },
    #[error("push rejected by the operator{notes}; nothing was sent upstream")]
    Rejected { notes: String },
    #[error("push rejected: no answer from the operator within {0} s; nothing was sent upstream")]
    Unanswered(u64),
    #[error("push rejected: the operator's answer is unreadable ({0}); nothing was sent upstream")]
    Unreadable(common::formats::FormatError),
    #[error("push refused: {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error("push not forwarded: {0}")]
    Forward(crate::proc::ProcError),
    #[error("upstream refused the push; the gate's refs are unchanged")]
    Upstream,
}

/// Bound on forwarding a push upstream.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Repository variables passed through to the upstream `git push`: the object directory and
/// alternates are how it sees the quarantined objects. `GIT_QUARANTINE_PATH` is deliberately
/// not passed: the push updates no local ref, and a `file://` upstream's receive-pack would
/// inherit it and refuse its own ref updates.
const PASS_THROUGH: [&str; 4] = ["GIT_DIR", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "HOME"];

fn say(msg: impl std::fmt::Display) {
    eprintln!("git-gate: {msg}");
}

/// Entry point of `git-gate hook pre-receive`.
pub fn pre_receive() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(e);
            ExitCode::FAILURE
        }
    }
}

/// The ref updates of a push, one `<old> <new> <ref>` line each.
fn read_updates(input: impl BufRead) -> Result<Vec<RefUpdate>, HookError> {
    let mut updates = Vec::new();
    for line in input.lines() {
        let line = line.map_err(HookError::ReadUpdates)?;
        if line.trim().is_empty() {
            continue;
        }
        updates.push(RefUpdate::parse(&line).ok_or(HookError::MalformedUpdate(line))?);
    }
    Ok(updates)
}

fn run() -> Result<(), HookError> {
    let config_path = std::env::var_os(ENV_CONFIG)
        .map(PathBuf::from)
        .ok_or_else(|| HookError::Env(format!("{ENV_CONFIG} is not set")))?;
    let name = std::env::var(ENV_REPO).map_err(|_| HookError::Env(format!("{ENV_REPO} is not set")))?;
    let config = GitGateConfig::load(&config_path)?;
    let repo_cfg = config.repo(&name).ok_or_else(|| HookError::UnknownRepo(name.clone()))?;
    let updates = read_updates(std::io::stdin().lock())?;
    if updates.is_empty() {
        return Ok(());
    }
    let hold = Hold::from_env()?;
    let repo = crate::scan::open_repo_from_env().map_err(HookError::Open)?;

    // Facts: ref policy for every update, and what the push brings.
    let refusals: Vec<String> = updates
        .iter()
        .filter_map(|u| classify(&repo, u).and_then(|c| policy::check(&repo_cfg.push, &u.name, c)).err())
        .collect();
    let findings = if refusals.is_empty() { scan(&repo, &updates)? } else { Vec::new() };
    drop(repo);

    // The decision, shared with `git-gate scan`.
    match verdict(&findings, &refusals, hold.is_some()) {
        Verdict::Forward => {}
        Verdict::Hold(_) => match &hold {
            Some(h) => ask_operator(h, &name, &updates, &findings)?,
            None => unreachable!("verdict holds only when a queue is configured"),
        },
        Verdict::Refuse(refusal) => {
            if let Refusal::Policy(reasons) = &refusal {
                for r in reasons {
                    say(format!("refused {r}"));
                }
            }
            return Err(HookError::Refused(refusal));
        }
    }
    forward(repo_cfg, &updates)
}

/// Scans what the push brings (ref names, tags, commits) and reports each finding to the client.
fn scan(repo: &git2::Repository, updates: &[RefUpdate]) -> Result<Vec<GitFinding>, HookError> {
    let tips: Vec<git2::Oid> = updates
        .iter()
        .filter(|u| !u.is_delete())
        .map(|u| git2::Oid::from_str(&u.new).map_err(|source| HookError::ObjectId { id: u.new.clone(), source }))
        .collect::<Result<_, _>>()?;
    let rules = crate::scan::Rules::builtin();
    let started = std::time::Instant::now();
    let names: Vec<&str> = updates.iter().filter(|u| !u.is_delete()).map(|u| u.name.as_str()).collect();
    let mut findings = crate::scan::scan_ref_names(&names, rules);
    let report = crate::scan::scan_new_commits(repo, &tips, rules).map_err(HookError::Scan)?;
    say(format!("scanned {} commits in {} ms", report.commits_scanned, started.elapsed().as_millis()));
    findings.extend(report.findings);
    for f in &findings {
        let low = if f.confidence == Confidence::Low { " (low confidence)" } else { "" };
        say(format!(
            "secret found{low}: rule {} in {} line {} of commit {}: {}",
            f.rule_id, f.file, f.line, f.commit, f.secret_redacted
        ));
    }
    Ok(findings)
}

/// A push whose findings are all low-confidence goes ahead only if the operator approves it
/// through the supervise queue; a rejection, a timeout or a broken answer refuse it.
fn ask_operator(hold: &Hold, repo: &str, updates: &[RefUpdate], findings: &[GitFinding]) -> Result<(), HookError> {
    let n = findings.len();
    let queue = common::queue::Queue::new(&hold.queue);
    let arguments = serde_json::json!({
        "repo": repo,
        "refs": updates.iter().map(|u| &u.name).collect::<Vec<_>>(),
        "findings": findings,
        "question": format!("push to {repo}: {n} possible secret(s), each reported with low confidence; let it through?"),
    });
    let filed = queue
        .file(&hold.bottle, HOLD_TOOL, arguments)
        .map_err(|source| HookError::File { queue: hold.queue.clone(), source })?;
    say(format!("push held for the operator (request {}), waiting up to {} s", filed.id, hold.timeout_secs));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|source| HookError::Io { what: "waiting for the operator", source })?;
    let answer = rt.block_on(queue.wait(&filed.id, Duration::from_secs(hold.timeout_secs)));
    let notes = |n: &str| if n.is_empty() { String::new() } else { format!(" ({n})") };
    match answer {
        Ok(Some(r)) if r.status.is_yes() => {
            say(format!("the operator approved the push{}", notes(&r.notes)));
            Ok(())
        }
        Ok(Some(r)) => Err(HookError::Rejected { notes: notes(&r.notes) }),
        Ok(None) => Err(HookError::Unanswered(hold.timeout_secs)),
        Err(e) => Err(HookError::Unreadable(e)),
    }
}

/// What an update does to its ref, judged on the objects (quarantined ones included).
fn classify(repo: &git2::Repository, u: &RefUpdate) -> Result<Change, String> {
    if u.is_delete() {
        return Ok(Change::Delete);
    }
    if u.is_create() {
        return Ok(Change::Create);
    }
    let commit = |oid: &str| -> Result<git2::Oid, String> {
        let oid = git2::Oid::from_str(oid).map_err(|e| format!("{}: bad object id {oid}: {e}", u.name))?;
        let obj = repo.find_object(oid, None).map_err(|e| format!("{}: object {oid} not found: {e}", u.name))?;
        obj.peel_to_commit().map(|c| c.id()).map_err(|_| format!("{}: {oid} is not a commit", u.name))
    };
    if u.name.starts_with("refs/tags/") {
        // Moving a tag is a rewrite whatever the ancestry; policy treats it as such.
        return Ok(Change::FastForward);
    }
    let (old, new) = (commit(&u.old)?, commit(&u.new)?);
    let ff = repo
        .graph_descendant_of(new, old)
        .map_err(|e| format!("{}: checking ancestry of {new} over {old}: {e}", u.name))?;
    Ok(if ff { Change::FastForward } else { Change::Force })
}

fn forward(repo_cfg: &RepoConfig, updates: &[RefUpdate]) -> Result<(), HookError> {
    let cwd = std::env::current_dir().map_err(|source| HookError::Io { what: "current directory", source })?;
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| cwd.clone());
    let mut cmd = Cmd::git(&cwd, &home, PUSH_TIMEOUT);
    cmd.args(push_args(&repo_cfg.url, updates)).describe("git push to upstream");
    for k in PASS_THROUGH {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in transport_env(repo_cfg, &home) {
        cmd.env(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| HookError::Io { what: "starting the runtime", source })?;
    let out = rt.block_on(cmd.output()).map_err(HookError::Forward)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().chain(stdout.lines()).filter(|l| !l.trim().is_empty() && l.trim() != "Done") {
        eprintln!("git-gate: upstream: {line}");
    }
    if out.status.success() {
        say(format!("upstream accepted {} ref update(s)", updates.len()));
        Ok(())
    } else {
        Err(HookError::Upstream)
    }
}
