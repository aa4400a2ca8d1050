//! The smolvm backend: the agent in a libkrun microVM whose only egress is the bottle's own
//! loopback address, where the bundle's ports are published (`--allow-cidr <ip>/32`, read back
//! from `machine ls --json` before the machine ever starts: a machine that could reach more
//! never runs).
//!
//! The image is the Docker backend's (found or built, probed for its user and trust store, the
//! same code), handed to smolvm as a `docker save` archive cached by image ID, so an unchanged
//! image costs nothing and a changed Dockerfile gives a new archive. Provisioning is the Docker
//! backend's too: the same `/etc/bot-bottle/` directory, mounted read-only; one root exec after
//! boot gives the agent its home, opens `/tmp` and `/var/tmp` (1777) and puts the merged trust
//! bundle over the image's system bundles.
//!
//! Secret variables (the supervise token, prompted and host-copied env) are created as
//! `--secret-env` references; their values reach smolvm only in the environment of `start`
//! and `exec`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::docker::DockerRuntime;
use super::{AgentEnv, AgentRuntime, Prepared, Progress};
use crate::engine::{Engine, ExecIo};
use crate::launch::ledger::{Ledger, Undo};
use crate::plan::{BottlePlan, Sandbox, VmSandbox, provision};
use crate::vmm::{MachineSpec, VmExec, Vmm, read_back};

/// How long a started machine gets to answer an exec.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SmolvmRuntime<'a> {
    engine: &'a dyn Engine,
    vmm: &'a dyn Vmm,
    images: DockerRuntime<'a>,
    /// `$BOT_BOTTLE_HOME/cache`: image archives, by image ID.
    cache_dir: PathBuf,
    /// The secret values of the machine's `--secret-env` references, for `start` and `exec`.
    secrets: Mutex<Vec<(String, common::Secret)>>,
}

impl<'a> SmolvmRuntime<'a> {
    pub fn new(engine: &'a dyn Engine, vmm: &'a dyn Vmm, cache_dir: PathBuf) -> Self {
        SmolvmRuntime {
            engine,
            vmm,
            images: DockerRuntime::new(engine, cache_dir.clone()),
            cache_dir,
            secrets: Mutex::new(Vec::new()),
        }
    }

    fn vm(plan: &BottlePlan) -> anyhow::Result<&VmSandbox> {
        match &plan.agent.sandbox {
            Sandbox::Vm(v) => Ok(v),
            Sandbox::Container(_) => bail!("the smolvm backend was given a container plan"),
        }
    }

    /// The image's `docker save` archive: `cache/vm-images/<first 16 hex of the ID>.tar`,
    /// written once (to a temporary name, then renamed).
    async fn archive(&self, image_id: &str, progress: Progress<'_>) -> anyhow::Result<PathBuf> {
        let hex = image_id.trim_start_matches("sha256:");
        let dir = self.cache_dir.join("vm-images");
        let path = dir.join(format!("{}.tar", &hex[..hex.len().min(16)]));
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        progress(format!("saving the agent image {} for smolvm", &hex[..hex.len().min(12)]));
        let tmp = dir.join(format!(".{}.{}.tmp", &hex[..hex.len().min(16)], std::process::id()));
        let saved = self.engine.save_image(image_id, &tmp).await;
        if let Err(e) = saved {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(path)
    }

    /// Polls the machine with a no-op exec, backing off, until it answers or [`BOOT_TIMEOUT`].
    async fn wait_ready(&self, name: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        let probe = VmExec { cmd: vec!["true".into()], user: None, workdir: None, io: ExecIo::Capture };
        loop {
            let secrets = self.secrets.lock().expect("secrets lock").clone();
            let last = match self.vmm.exec(name, &probe, &secrets).await {
                Ok((0, _)) => return Ok(()),
                Ok((code, out)) => format!("exit {code}: {}", common::proc::tail(&out, 3)),
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() + delay > BOOT_TIMEOUT {
                bail!("machine {name} did not answer within {} s (last: {last})", BOOT_TIMEOUT.as_secs());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

/// The one root exec after boot: the agent's home, the world-writable temporary directories,
/// and the merged trust bundle over each of the image's system bundles.
pub fn repair_script(user: (u32, u32), ca_targets: &[String]) -> String {
    let (uid, gid) = user;
    let home = provision::HOME;
    let mut s = format!(
        "set -e\nmkdir -p {home} /tmp /var/tmp\nchown {uid}:{gid} {home}\nchmod 0700 {home}\nchmod 1777 /tmp /var/tmp\n"
    );
    let targets: Vec<&str> = if ca_targets.is_empty() {
        vec![provision::SYSTEM_CA_BUNDLES[0]]
    } else {
        ca_targets.iter().map(String::as_str).collect()
    };
    for t in targets {
        let dir = Path::new(t).parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into());
        s.push_str(&format!("mkdir -p '{dir}'\ncat {} > '{t}'\n", provision::CA_BUNDLE));
    }
    s
}

#[async_trait::async_trait]
impl AgentRuntime for SmolvmRuntime<'_> {
    async fn prepare(&self, plan: &BottlePlan, ledger: &Ledger, progress: Progress<'_>) -> anyhow::Result<Prepared> {
        Self::vm(plan)?;
        let version = self.vmm.version().await?;
        progress(format!("microVM by {version}"));
        let mut prepared = self.images.prepare(plan, ledger, progress).await?;
        prepared.archive = Some(self.archive(&prepared.image, progress).await?);
        Ok(prepared)
    }

    async fn create(
        &self,
        plan: &BottlePlan,
        prepared: &Prepared,
        env: &AgentEnv,
        ledger: &Ledger,
    ) -> anyhow::Result<String> {
        let vm = Self::vm(plan)?;
        let (uid, gid) = prepared.user;
        let spec = MachineSpec {
            name: vm.machine.clone(),
            image: prepared.archive.clone().context("the image archive was not prepared")?,
            allow_cidrs: vec![vm.allow_cidr.clone()],
            user: Some(format!("{uid}:{gid}")),
            workdir: Some(provision::HOME.into()),
            env: env.public.clone(),
            secret_env: env.secret.iter().map(|(k, _)| k.clone()).collect(),
            volumes: vm.volumes.clone(),
            labels: vm.labels.clone(),
            // Idles until the agent's command is exec'd (the image's own entrypoint never runs).
            command: vec!["sleep".into(), "infinity".into()],
        };
        *self.secrets.lock().expect("secrets lock") = env.secret.clone();
        // Recorded first: a create that fails halfway may still leave a machine behind.
        ledger.record(Undo::DeleteMachine { name: spec.name.clone() })?;
        self.vmm.create(&spec).await?;
        read_back(self.vmm, &spec).await?;
        self.vmm.start(&spec.name, &env.secret).await?;
        self.wait_ready(&spec.name).await?;
        let repair = VmExec {
            cmd: vec!["sh".into(), "-c".into(), repair_script(prepared.user, &prepared.ca_targets)],
            user: Some("0:0".into()),
            workdir: Some("/".into()),
            io: ExecIo::Capture,
        };
        let (code, out) = self.vmm.exec(&spec.name, &repair, &env.secret).await?;
        if code != 0 {
            bail!("preparing machine {} failed (exit {code}): {}", spec.name, common::proc::tail(&out, 4));
        }
        Ok(spec.name)
    }

    async fn seal(&self, plan: &BottlePlan, _agent: &str, _ledger: &Ledger) -> anyhow::Result<()> {
        // The machine's egress allowlist is its seal: set at create and read back before it
        // started (see `create`); there is nothing to add once it runs.
        Self::vm(plan).map(|_| ())
    }

    async fn run(&self, plan: &BottlePlan, prepared: &Prepared, agent: &str, io: ExecIo) -> anyhow::Result<i64> {
        let (uid, gid) = prepared.user;
        let spec = VmExec {
            cmd: plan.agent.command.clone(),
            user: Some(format!("{uid}:{gid}")),
            workdir: Some(provision::HOME.into()),
            io,
        };
        let secrets = self.secrets.lock().expect("secrets lock").clone();
        Ok(self.vmm.exec(agent, &spec, &secrets).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_gives_the_home_and_replaces_each_trust_bundle() {
        let s = repair_script((1000, 1001), &["/etc/ssl/certs/ca-certificates.crt".into()]);
        assert!(s.contains("chown 1000:1001 /home/agent\nchmod 0700 /home/agent\nchmod 1777 /tmp /var/tmp\n"), "{s}");
        assert!(s.contains("cat /etc/bot-bottle/ca-bundle.pem > '/etc/ssl/certs/ca-certificates.crt'"), "{s}");
        assert!(repair_script((1, 1), &[]).contains("> '/etc/ssl/certs/ca-certificates.crt'"));
    }
}
