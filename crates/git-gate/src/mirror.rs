//! The gate's bare mirrors: `<data-dir>/repos/<name>.git`, one per configured repo.
//!
//! Layout: the mirror's `refs/heads/*` and `refs/tags/*` are exactly the upstream's (fetched
//! with `+refs/heads/*:refs/heads/*`, `+refs/tags/*:refs/tags/*` and `--prune`), so the agent
//! sees the upstream's branches and tags as its own; nothing else is fetched or served.
//! `HEAD` follows the upstream's default branch. The pre-receive hook is a script that execs
//! this very binary (`git-gate hook pre-receive`) with the config path and repo name in its
//! environment; it is rewritten on every start.
//!
//! Locking: one async mutex per mirror serialises fetches and receive-packs on that mirror;
//! a fetch requested while another was already running after the request arrived is
//! coalesced into it (its result is at least as fresh).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::formats::git_gate::RepoConfig;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::hook::{ENV_BOTTLE, ENV_CONFIG, ENV_HOLD_SECS, ENV_QUEUE, ENV_REPO, Hold};
use crate::proc::{Cmd, ProcError, tail};
use crate::upstream::transport_env;

/// Bound on one upstream fetch (and on local git plumbing commands).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("repo {repo}: {source}")]
    Proc { repo: String, source: ProcError },
    #[error("repo {repo}: `git {cmd}` failed: {detail}")]
    Git { repo: String, cmd: String, detail: String },
    #[error("repo {repo}: upstream {url} is unreachable or refused the fetch: {detail}")]
    Upstream { repo: String, url: String, detail: String },
    #[error("repo {repo}: writing {path}: {source}")]
    Io { repo: String, path: PathBuf, source: std::io::Error },
    /// git skips a hook it cannot execute and takes the push unscanned: never serve then.
    #[error(
        "repo {repo}: the pre-receive hook {path} cannot be executed ({source}); is the data directory on a \
         noexec mount? refusing to serve, since git would take pushes without scanning them"
    )]
    HookNotExecutable { repo: String, path: PathBuf, source: nix::errno::Errno },
}

#[derive(Default)]
pub struct FetchState {
    /// When the last successful fetch started.
    last_ok_started: Option<Instant>,
}

/// One configured repo and its mirror on disk.
pub struct Mirror {
    pub repo: RepoConfig,
    /// `<data-dir>/repos/<name>.git`
    pub path: PathBuf,
    /// `HOME` for git children (empty, gate-private).
    home: PathBuf,
    lock: Arc<Mutex<FetchState>>,
}

impl Mirror {
    pub fn new(repo: RepoConfig, repos_dir: &Path, home: &Path) -> Mirror {
        let path = repos_dir.join(format!("{}.git", repo.name));
        Mirror { repo, path, home: home.to_path_buf(), lock: Arc::default() }
    }

    pub fn name(&self) -> &str {
        &self.repo.name
    }

    fn git(&self, timeout: Duration) -> Cmd {
        Cmd::git(&self.path, &self.home, timeout)
    }

    async fn run(&self, mut cmd: Cmd, label: &str) -> Result<std::process::Output, MirrorError> {
        cmd.describe(format!("git {label}"));
        let out = cmd.output().await.map_err(|source| MirrorError::Proc { repo: self.name().into(), source })?;
        if !out.status.success() {
            return Err(MirrorError::Git { repo: self.name().into(), cmd: label.into(), detail: tail(&out.stderr, 3) });
        }
        Ok(out)
    }

    /// Creates the bare mirror if missing, (re)writes its configuration and hook. Local only:
    /// never contacts the upstream.
    pub async fn init(&self, exe: &Path, config_path: &Path, hold: Option<&Hold>) -> Result<(), MirrorError> {
        let io = |path: &Path, source| MirrorError::Io { repo: self.name().into(), path: path.to_path_buf(), source };
        if !self.path.join("HEAD").exists() {
            std::fs::create_dir_all(&self.path).map_err(|e| io(&self.path, e))?;
            let mut c = self.git(LOCAL_TIMEOUT);
            c.args(["init", "--quiet", "--bare"]);
            self.run(c, "init --bare").await?;
        }
        let hooks = self.path.join("hooks");
        let settings: [(&str, String); 13] = [
            ("remote.origin.url", self.repo.url.clone()),
            ("http.receivepack", "true".into()),
            ("http.uploadpack", "true".into()),
            // No dumb-HTTP file serving: only the smart protocol reaches this repo.
            ("http.getanyfile", "false".into()),
            ("uploadpack.allowReachableSHA1InWant", "true".into()),
            ("core.hooksPath", hooks.to_string_lossy().into_owned()),
            ("core.logAllRefUpdates", "false".into()),
            ("receive.denyNonFastForwards", "false".into()),
            ("receive.denyDeletes", "false".into()),
            ("receive.advertisePushOptions", "false".into()),
            ("gc.autoDetach", "false".into()),
            // Every object a push brings is checked by `git fsck` before the hook runs
            // (malformed headers, `.git` or `..` in a tree, bad modes, ...): an object the
            // scanner and the upstream could read differently never gets that far. receive-pack
            // refuses such a push naming the object and the check. The upstream's own history
            // is not re-checked on fetch (it is what it is; old repositories carry warnings).
            ("receive.fsckObjects", "true".into()),
            ("fetch.fsckObjects", "false".into()),
        ];
        for (k, v) in settings {
            let mut c = self.git(LOCAL_TIMEOUT);
            c.args(["config", k, &v]);
            self.run(c, &format!("config {k}")).await?;
        }
        let mut c = self.git(LOCAL_TIMEOUT);
        c.args(["config", "--replace-all", "remote.origin.fetch", "+refs/heads/*:refs/heads/*"]);
        self.run(c, "config remote.origin.fetch").await?;
        let mut c = self.git(LOCAL_TIMEOUT);
        c.args(["config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*"]);
        self.run(c, "config remote.origin.fetch").await?;

        std::fs::create_dir_all(&hooks).map_err(|e| io(&hooks, e))?;
        let hook = hooks.join("pre-receive");
        let q = |s: &str| shell_words::quote(s).into_owned();
        let mut env = format!("{ENV_CONFIG}={} {ENV_REPO}={}", q(&config_path.to_string_lossy()), q(self.name()));
        if let Some(h) = hold {
            env.push_str(&format!(
                " {ENV_QUEUE}={} {ENV_BOTTLE}={} {ENV_HOLD_SECS}={}",
                q(&h.queue.to_string_lossy()),
                q(&h.bottle),
                h.timeout_secs
            ));
        }
        let script = format!(
            "#!/bin/sh\n# written by git-gate on start; do not edit\n{env} exec {} hook pre-receive\n",
            q(&exe.to_string_lossy()),
        );
        let tmp = hooks.join(".pre-receive.tmp");
        std::fs::write(&tmp, script).map_err(|e| io(&tmp, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|e| io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &hook).map_err(|e| io(&hook, e))?;
        // access(2) answers for the mount too: EACCES on a noexec filesystem.
        nix::unistd::access(&hook, nix::unistd::AccessFlags::X_OK).map_err(|source| {
            MirrorError::HookNotExecutable { repo: self.name().into(), path: hook.clone(), source }
        })?;
        Ok(())
    }

    /// Takes the mirror's lock (held by a receive-pack for its whole run).
    pub async fn lock(&self) -> OwnedMutexGuard<FetchState> {
        self.lock.clone().lock_owned().await
    }

    /// Brings the mirror up to date with the upstream, unless a fetch that started after
    /// `requested_at` already succeeded. Fails closed: an error means the mirror may be stale
    /// and nothing should be served from it.
    pub async fn fetch(&self, requested_at: Instant) -> Result<(), MirrorError> {
        let mut state = self.lock.lock().await;
        if state.last_ok_started.is_some_and(|t| t >= requested_at) {
            return Ok(());
        }
        let started = Instant::now();
        self.fetch_locked().await?;
        state.last_ok_started = Some(started);
        Ok(())
    }

    async fn fetch_locked(&self) -> Result<(), MirrorError> {
        let mut c = self.git(FETCH_TIMEOUT);
        c.args(["fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head", "origin"]);
        for (k, v) in transport_env(&self.repo, &self.home) {
            c.env(k, v);
        }
        c.describe("git fetch");
        let out = c.output().await.map_err(|source| MirrorError::Proc { repo: self.name().into(), source })?;
        if !out.status.success() {
            return Err(MirrorError::Upstream {
                repo: self.name().into(),
                url: self.repo.url.clone(),
                detail: upstream_detail(&out.stderr),
            });
        }
        self.follow_upstream_head().await
    }

    /// Points `HEAD` at the upstream's default branch when the current `HEAD` names a branch
    /// the mirror does not have (first fetch, or upstream renamed its default).
    async fn follow_upstream_head(&self) -> Result<(), MirrorError> {
        let mut c = self.git(LOCAL_TIMEOUT);
        c.args(["symbolic-ref", "HEAD"]);
        let head = self.run(c, "symbolic-ref HEAD").await?;
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        let mut c = self.git(LOCAL_TIMEOUT);
        c.args(["show-ref", "--verify", "--quiet", &head]);
        if c.output().await.is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        let mut c = self.git(FETCH_TIMEOUT);
        c.args(["ls-remote", "--symref", "origin", "HEAD"]);
        for (k, v) in transport_env(&self.repo, &self.home) {
            c.env(k, v);
        }
        let out = self.run(c, "ls-remote --symref origin HEAD").await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let target = text.lines().find_map(|l| {
            l.strip_prefix("ref: ").and_then(|r| r.strip_suffix("\tHEAD")).filter(|r| r.starts_with("refs/heads/"))
        });
        if let Some(target) = target {
            let mut c = self.git(LOCAL_TIMEOUT);
            c.args(["symbolic-ref", "HEAD", target]);
            self.run(c, "symbolic-ref HEAD").await?;
        }
        Ok(())
    }
}

/// The informative part of a failed upstream command's stderr: git's generic advice lines
/// ("Could not read from remote repository", ...) dropped, the last few lines kept.
pub fn upstream_detail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let useful: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| {
            !l.is_empty()
                && !l.contains("Could not read from remote repository")
                && !l.contains("Please make sure you have the correct access rights")
                && !l.contains("and the repository exists")
        })
        .collect();
    let detail = useful[useful.len().saturating_sub(3)..].join("; ");
    if detail.is_empty() { tail(stderr, 3) } else { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_detail_keeps_the_cause() {
        let err = b"Host key verification failed.\r\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n";
        assert_eq!(upstream_detail(err), "Host key verification failed.");
        assert_eq!(
            upstream_detail(b"fatal: Could not read from remote repository.\n"),
            "fatal: Could not read from remote repository."
        );
    }
}
