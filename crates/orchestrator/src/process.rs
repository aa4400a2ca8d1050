//! The one way the orchestrator runs a host program: explicit program, arguments, working
//! directory and extra environment, a timeout, and captured output. Secrets never go in
//! `args` (they are visible in `ps`); pass them through `env` by name instead.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A host command to run.
pub struct Cmd<'a> {
    program: &'a str,
    args: Vec<&'a OsStr>,
    cwd: Option<&'a Path>,
    env: Vec<(&'a str, &'a OsStr)>,
    timeout: Duration,
}

impl<'a> Cmd<'a> {
    pub fn new(program: &'a str) -> Cmd<'a> {
        Cmd { program, args: Vec::new(), cwd: None, env: Vec::new(), timeout: Duration::from_secs(60) }
    }

    pub fn arg(mut self, a: &'a (impl AsRef<OsStr> + ?Sized)) -> Self {
        self.args.push(a.as_ref());
        self
    }

    pub fn cwd(mut self, dir: &'a Path) -> Self {
        self.cwd = Some(dir);
        self
    }

    pub fn env(mut self, key: &'a str, value: &'a (impl AsRef<OsStr> + ?Sized)) -> Self {
        self.env.push((key, value.as_ref()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs to completion (killing it at the timeout) and returns its output, whatever the status.
    pub fn output(self) -> anyhow::Result<Output> {
        let mut cmd = Command::new(self.program);
        cmd.args(&self.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(d) = self.cwd {
            cmd.current_dir(d);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("running {}", self.program))?;
        // Drain both pipes on threads so a chatty child cannot block on a full pipe.
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let t_out = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut b);
            b
        });
        let t_err = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = std::io::Read::read_to_end(&mut err, &mut b);
            b
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not finish within {:?}", self.program, self.timeout);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() })
    }

    /// Like [`Cmd::output`], failing with the program's stderr when it exits non-zero.
    pub fn run(self) -> anyhow::Result<String> {
        let program = self.program;
        let out = self.output()?;
        if !out.status.success() {
            bail!("{program} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_env_and_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let out = Cmd::new("sh").arg("-c").arg("echo $X; pwd").env("X", "hello").cwd(dir.path()).run().unwrap();
        let canon = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("hello\n{}\n", canon.display()));
    }

    #[test]
    fn failure_and_timeout_are_errors() {
        let err = Cmd::new("sh").arg("-c").arg("echo nope >&2; exit 3").run().unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = Cmd::new("sleep").arg("5").timeout(Duration::from_millis(100)).output().unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        let err = Cmd::new("/nonexistent/prog").output().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
    }
}
