//! The one way the workspace starts child processes (git-gate's `git http-backend`, `git fetch`,
//! `git push` and `ssh` through git; the orchestrator's host tools): every child gets a cleared
//! environment plus an explicit allowlist, an explicit working directory, stdin closed unless
//! asked for, a timeout, and is killed when its handle is dropped. Nothing the parent holds (a
//! token, a deploy key path aside, which is only a path) can leak into a child through inherited
//! environment. `clippy.toml` bans `Command::new` everywhere else.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// `PATH` for children when the parent's own environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("{what} timed out after {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("waiting for {what}: {source}")]
    Wait { what: String, source: std::io::Error },
}

/// A child process about to be started; see the module docs for what it always sets.
pub struct Cmd {
    cmd: Command,
    what: String,
    timeout: Duration,
}

impl Cmd {
    /// `program` in `cwd`, with only `PATH` (and `LC_ALL=C`) in its environment.
    pub fn new(program: impl AsRef<OsStr>, cwd: &Path, timeout: Duration) -> Cmd {
        let what = program.as_ref().to_string_lossy().into_owned();
        #[allow(clippy::disallowed_methods)] // this is the one place
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()))
            .env("LC_ALL", "C")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Cmd { cmd, what, timeout }
    }

    /// `git` with a hermetic configuration: `HOME` is `home` (a directory only the caller uses),
    /// no system or global config, and never a terminal prompt.
    pub fn git(cwd: &Path, home: &Path, timeout: Duration) -> Cmd {
        let mut c = Cmd::new("git", cwd, timeout);
        c.env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false");
        c
    }

    /// Names the command in error messages (defaults to the program name).
    pub fn describe(&mut self, what: impl Into<String>) -> &mut Self {
        self.what = what.into();
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Runs to completion with stdout and stderr captured; killed after the timeout.
    pub async fn output(mut self) -> Result<Output, ProcError> {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = self.cmd.spawn().map_err(|source| ProcError::Spawn { what: self.what.clone(), source })?;
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            // Dropping the future drops the child, and kill_on_drop kills it.
            Err(_) => Err(ProcError::Timeout { what: self.what, secs: self.timeout.as_secs() }),
            Ok(Err(source)) => Err(ProcError::Wait { what: self.what, source }),
            Ok(Ok(out)) => Ok(out),
        }
    }

    /// Gives the child this process's standard input (a terminal the operator types into).
    pub fn stdin_inherit(&mut self) -> &mut Self {
        self.cmd.stdin(Stdio::inherit());
        self
    }

    /// Runs to completion with stdout and stderr going where this process's go; killed after
    /// the timeout.
    pub async fn status(mut self) -> Result<std::process::ExitStatus, ProcError> {
        self.cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        let mut child = self.cmd.spawn().map_err(|source| ProcError::Spawn { what: self.what.clone(), source })?;
        wait_bounded(&mut child, &self.what, self.timeout).await
    }

    /// Starts the child with all three standard streams piped; the caller enforces
    /// [`Cmd::timeout`] (see [`wait_bounded`]).
    pub fn spawn_piped(mut self) -> Result<(Child, String, Duration), ProcError> {
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = self.cmd.spawn().map_err(|source| ProcError::Spawn { what: self.what.clone(), source })?;
        Ok((child, self.what, self.timeout))
    }
}

/// Waits for `child` at most `timeout`, killing it when the time is up.
pub async fn wait_bounded(
    child: &mut Child,
    what: &str,
    timeout: Duration,
) -> Result<std::process::ExitStatus, ProcError> {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(r) => r.map_err(|source| ProcError::Wait { what: what.to_string(), source }),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(ProcError::Timeout { what: what.to_string(), secs: timeout.as_secs() })
        }
    }
}

/// The last `n` non-empty lines of a child's output, for error messages.
pub fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn child_environment_is_only_the_allowlist() {
        let dir = std::env::temp_dir();
        let mut c = Cmd::new("env", &dir, Duration::from_secs(10));
        c.env("ONLY_THIS", "1");
        let out = c.output().await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        names.sort();
        assert_eq!(names, ["LC_ALL", "ONLY_THIS", "PATH"]);
    }

    #[tokio::test]
    async fn timeout_kills_the_child() {
        let mut c = Cmd::new("sleep", &std::env::temp_dir(), Duration::from_millis(100));
        c.arg("30");
        let err = c.output().await.unwrap_err();
        assert!(matches!(err, ProcError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("sleep timed out"), "{err}");
    }

    #[tokio::test]
    async fn missing_program_names_it() {
        let c = Cmd::new("no-such-program-bot-bottle", &std::env::temp_dir(), Duration::from_secs(1));
        let err = c.output().await.unwrap_err();
        assert!(err.to_string().starts_with("cannot start no-such-program-bot-bottle"), "{err}");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail(b"a\n\nb\nc\n", 2), "b; c");
        assert_eq!(tail(b"", 2), "");
    }
}
