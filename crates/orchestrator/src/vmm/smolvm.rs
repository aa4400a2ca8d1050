//! The real `smolvm` CLI (`smolvm machine …`), run through `common::proc`: a cleared
//! environment plus smolvm's own variables, a timeout per verb, and `--state-dir` when the
//! operator keeps smolvm's state elsewhere (`BOT_BOTTLE_SMOLVM_STATE_DIR`).
//!
//! Found as `$BOT_BOTTLE_SMOLVM`, else `smolvm` or `smol-vmm` (the name the `smolmachines`
//! wheel ships it under) on `PATH`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use common::proc::Cmd;

use super::{Machine, MachineSpec, SecretValues, VmExec, Vmm};
use crate::engine::ExecIo;

/// The oldest smolvm bot-bottle is tested against (`machine ls --json` with `allowed_cidrs` and
/// `labels`, `--secret-env` references that are never persisted).
pub const MIN_VERSION: (u32, u32, u32) = (1, 32, 0);
/// The variable naming the smolvm executable.
pub const BIN_ENV: &str = "BOT_BOTTLE_SMOLVM";
/// The variable naming smolvm's state directory (`--state-dir`).
pub const STATE_DIR_ENV: &str = "BOT_BOTTLE_SMOLVM_STATE_DIR";
/// smolvm's own variables, passed through to it.
const PASS_ENV: [&str; 7] =
    ["SMOLVM_LIB_DIR", "SMOLVM_AGENT_ROOTFS", "HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "TMPDIR"];
/// The host variable a secret guest variable is read from: bot-bottle's own prefix, so no
/// operator variable is ever read by smolvm by accident.
const SECRET_PREFIX: &str = "BOT_BOTTLE_VM_SECRET_";

/// See the module docs.
#[derive(Debug, Clone)]
pub struct SmolvmCli {
    bin: PathBuf,
    state_dir: Option<PathBuf>,
    env: Vec<(String, OsString)>,
}

impl SmolvmCli {
    /// `bin` with `state_dir`, passing smolvm's variables from this process's environment.
    pub fn new(bin: PathBuf, state_dir: Option<PathBuf>) -> SmolvmCli {
        let env = PASS_ENV.iter().filter_map(|k| Some((k.to_string(), std::env::var_os(k)?))).collect();
        SmolvmCli { bin, state_dir, env }
    }

    /// The smolvm this host has, if any (see the module docs).
    pub fn find() -> Option<SmolvmCli> {
        let state_dir = std::env::var_os(STATE_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(bin) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
            return Some(SmolvmCli::new(bin.into(), state_dir));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|d| ["smolvm", "smol-vmm"].map(|n| d.join(n)))
            .find(|p| is_executable(p))
            .map(|bin| SmolvmCli::new(bin, state_dir))
    }

    /// The same smolvm, keeping its state in `dir`.
    pub fn with_state_dir(&self, dir: PathBuf) -> SmolvmCli {
        SmolvmCli { state_dir: Some(dir), ..self.clone() }
    }

    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    fn cmd(&self, timeout: Duration, verb: &[&str]) -> Cmd {
        let mut c = Cmd::new(&self.bin, Path::new("/"), timeout);
        c.describe(format!("smolvm {}", verb.join(" ")));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.args(verb);
        if let Some(d) = &self.state_dir {
            c.arg("--state-dir").arg(d);
        }
        c
    }

    async fn run(&self, c: Cmd) -> anyhow::Result<Vec<u8>> {
        let what = c.what().to_string();
        let out = c.output().await?;
        if !out.status.success() {
            bail!("{what} failed ({}): {}", out.status, clean_tail(&out.stderr));
        }
        Ok(out.stdout)
    }
}

/// The `machine create` arguments for `spec` (secret variables as references only).
pub fn create_args(spec: &MachineSpec) -> Vec<String> {
    let mut a = vec!["--name".to_string(), spec.name.clone()];
    // No image: smolvm's own minimal guest (the boot probe).
    if !spec.image.as_os_str().is_empty() {
        a.extend(["--image".into(), spec.image.display().to_string()]);
    }
    for c in &spec.allow_cidrs {
        a.extend(["--allow-cidr".into(), c.clone()]);
    }
    if let Some(u) = &spec.user {
        a.extend(["--user".into(), u.clone()]);
    }
    if let Some(w) = &spec.workdir {
        a.extend(["--workdir".into(), w.clone()]);
    }
    for (k, v) in &spec.env {
        a.extend(["--env".into(), format!("{k}={v}")]);
    }
    for k in &spec.secret_env {
        a.extend(["--secret-env".into(), format!("{k}={SECRET_PREFIX}{k}")]);
    }
    for v in &spec.volumes {
        a.extend(["--volume".into(), v.clone()]);
    }
    for (k, v) in &spec.labels {
        a.extend(["--label".into(), format!("{k}={v}")]);
    }
    if !spec.command.is_empty() {
        a.push("--".into());
        a.extend(spec.command.iter().cloned());
    }
    a
}

/// `smolvm 1.32.2` → (1, 32, 2).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text
        .split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u32>());
    Some((parts.next()?.ok()?, parts.next()?.ok()?, parts.next().and_then(Result::ok).unwrap_or(0)))
}

/// A child's stderr for an error message, without smolvm's note about packed assets.
fn clean_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let kept: String = text.lines().filter(|l| !l.starts_with("note: no packed assets")).collect::<Vec<_>>().join("\n");
    common::proc::tail(kept.as_bytes(), 4)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[async_trait::async_trait]
impl Vmm for SmolvmCli {
    async fn version(&self) -> anyhow::Result<String> {
        let mut c = Cmd::new(&self.bin, Path::new("/"), Duration::from_secs(30));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.arg("--version");
        let out = self.run(c).await.with_context(|| format!("running {}", self.bin.display()))?;
        let text = String::from_utf8_lossy(&out).trim().to_string();
        let v = parse_version(&text)
            .with_context(|| format!("{}: cannot read a version in {text:?}", self.bin.display()))?;
        if v < MIN_VERSION {
            let (a, b, c) = MIN_VERSION;
            bail!(
                "{} is {text}; bot-bottle needs smolvm {a}.{b}.{c} or newer (pip install -U smolmachines)",
                self.bin.display()
            );
        }
        Ok(text)
    }

    async fn create(&self, spec: &MachineSpec) -> anyhow::Result<()> {
        let mut c = self.cmd(Duration::from_secs(600), &["machine", "create"]);
        c.args(create_args(spec));
        self.run(c).await.map(|_| ())
    }

    async fn list(&self) -> anyhow::Result<Vec<Machine>> {
        let mut c = self.cmd(Duration::from_secs(60), &["machine", "ls"]);
        c.arg("--json");
        let out = self.run(c).await?;
        serde_json::from_slice(&out).context("reading `smolvm machine ls --json`")
    }

    async fn start(&self, name: &str, secrets: SecretValues<'_>) -> anyhow::Result<()> {
        let mut c = self.cmd(Duration::from_secs(180), &["machine", "start"]);
        c.args(["--name", name]);
        for (k, v) in secrets {
            c.env(format!("{SECRET_PREFIX}{k}"), v.expose());
        }
        self.run(c).await.map(|_| ())
    }

    async fn exec(&self, name: &str, spec: &VmExec, secrets: SecretValues<'_>) -> anyhow::Result<(i64, Vec<u8>)> {
        // The agent's own command runs as long as it runs; probes are short.
        let timeout =
            if spec.io == ExecIo::Capture { Duration::from_secs(60) } else { Duration::from_secs(30 * 24 * 3600) };
        let mut c = self.cmd(timeout, &["machine", "exec"]);
        c.args(["--name", name]);
        if let Some(u) = &spec.user {
            c.args(["--user", u]);
        }
        if let Some(w) = &spec.workdir {
            c.args(["--workdir", w]);
        }
        for (k, v) in secrets {
            c.args(["--secret-env".to_string(), format!("{k}={SECRET_PREFIX}{k}")]);
            c.env(format!("{SECRET_PREFIX}{k}"), v.expose());
        }
        if spec.io == ExecIo::Terminal {
            c.args(["-i", "-t"]);
            c.stdin_inherit();
        }
        c.arg("--").args(&spec.cmd);
        match spec.io {
            ExecIo::Capture => {
                let out = c.output().await?;
                let mut all = out.stdout;
                all.extend(out.stderr);
                Ok((i64::from(out.status.code().unwrap_or(-1)), all))
            }
            ExecIo::Inherit | ExecIo::Terminal => {
                let status = c.status().await?;
                Ok((i64::from(status.code().unwrap_or(-1)), Vec::new()))
            }
        }
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        let mut c = self.cmd(Duration::from_secs(120), &["machine", "stop"]);
        c.args(["--name", name]);
        self.run(c).await.map(|_| ())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        if !self.list().await?.iter().any(|m| m.name == name) {
            return Ok(());
        }
        let mut c = self.cmd(Duration::from_secs(120), &["machine", "delete"]);
        c.args(["--name", name, "-f"]);
        self.run(c).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("smolvm 1.32.2"), Some((1, 32, 2)));
        assert_eq!(parse_version("smolvm v2.0"), Some((2, 0, 0)));
        assert_eq!(parse_version("smolvm 1.33.0-rc1"), Some((1, 33, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("smolvm 1.31.9").unwrap() < MIN_VERSION);
    }

    #[tokio::test]
    async fn an_old_or_broken_smolvm_is_a_clear_error() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fake = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            SmolvmCli::new(p, None)
        };
        let err = fake("old", "echo 'smolvm 1.20.3'").version().await.unwrap_err().to_string();
        assert!(err.contains("smolvm 1.20.3") && err.contains("needs smolvm 1.32.0 or newer"), "{err}");
        assert_eq!(fake("new", "echo 'smolvm 1.40.0'").version().await.unwrap(), "smolvm 1.40.0");
        let err = fake("odd", "echo 'hello'").version().await.unwrap_err().to_string();
        assert!(err.contains("cannot read a version"), "{err}");
        let err = format!("{:#}", fake("broken", "echo 'no kvm' >&2; exit 3").version().await.unwrap_err());
        assert!(err.contains("no kvm"), "{err}");
        let missing = SmolvmCli::new(dir.path().join("absent"), None);
        assert!(format!("{:#}", missing.version().await.unwrap_err()).contains("absent"));
    }

    #[test]
    fn create_args_carry_secret_references_not_values() {
        let spec = MachineSpec {
            name: "bot-bottle-x-agent".into(),
            image: "/c/img.tar".into(),
            allow_cidrs: vec!["127.77.0.9/32".into()],
            user: Some("1000:1000".into()),
            workdir: Some("/home/agent".into()),
            env: vec![("HTTPS_PROXY".into(), "http://127.77.0.9:32768".into())],
            secret_env: vec!["MCP_SUPERVISE_TOKEN".into()],
            volumes: vec!["/s/agent:/etc/bot-bottle:ro".into()],
            labels: [("bot-bottle.slug".to_string(), "x".to_string())].into(),
            command: vec!["sleep".into(), "infinity".into()],
        };
        assert_eq!(
            create_args(&spec).join(" "),
            "--name bot-bottle-x-agent --image /c/img.tar --allow-cidr 127.77.0.9/32 --user 1000:1000 --workdir \
             /home/agent --env HTTPS_PROXY=http://127.77.0.9:32768 --secret-env \
             MCP_SUPERVISE_TOKEN=BOT_BOTTLE_VM_SECRET_MCP_SUPERVISE_TOKEN --volume /s/agent:/etc/bot-bottle:ro --label \
             bot-bottle.slug=x -- sleep infinity"
        );
    }
}
