//! A recording [`Vmm`]: logs every call in order (secret values as their names only, checked to
//! be present), keeps the machines it was asked to create, answers `start`, `exec` and `stop`
//! itself, and fails the `n`th changing call when asked to. With [`RecordingVmm::over`] it hands
//! `create`, `ls` and `delete` to a real smolvm, so a launch test exercises the real CLI for
//! everything short of booting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::bail;

use super::{Machine, MachineSpec, SecretValues, VmExec, Vmm};

#[derive(Default)]
struct State {
    calls: Vec<String>,
    changes: usize,
    fail_at: Option<usize>,
    machines: BTreeMap<String, (MachineSpec, Machine)>,
    /// `exec` calls that answer "not ready" before the machine answers.
    not_ready: usize,
    exec_code: i64,
    /// Secrets handed to start/exec: name → value, for tests that check they arrived.
    secrets_seen: BTreeMap<String, String>,
}

/// See the module docs.
#[derive(Default)]
pub struct RecordingVmm {
    real: Option<Arc<dyn Vmm>>,
    state: Mutex<State>,
}

impl RecordingVmm {
    /// `create`, `ls` and `delete` go to `real`; the rest is recorded and answered here.
    pub fn over(real: Arc<dyn Vmm>) -> RecordingVmm {
        RecordingVmm { real: Some(real), state: Mutex::default() }
    }

    pub fn fail_at(&self, n: usize) {
        self.state.lock().unwrap().fail_at = Some(n);
    }

    /// The first `n` readiness probes answer as a machine still booting would.
    pub fn not_ready_for(&self, n: usize) {
        self.state.lock().unwrap().not_ready = n;
    }

    pub fn exec_code(&self, code: i64) {
        self.state.lock().unwrap().exec_code = code;
    }

    /// Overrides what `ls` shows as a machine's allowlist (a smolvm that dropped the flag).
    pub fn set_allowed(&self, name: &str, cidrs: Vec<String>) {
        if let Some((_, m)) = self.state.lock().unwrap().machines.get_mut(name) {
            m.allowed_cidrs = cidrs;
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn changes(&self) -> usize {
        self.state.lock().unwrap().changes
    }

    /// The spec a machine was created with (while it exists).
    pub fn spec(&self, name: &str) -> Option<MachineSpec> {
        self.state.lock().unwrap().machines.get(name).map(|(s, _)| s.clone())
    }

    /// Names of the machines that exist now.
    pub fn live(&self) -> Vec<String> {
        self.state.lock().unwrap().machines.keys().cloned().collect()
    }

    /// The secret values start and exec were given, by name.
    pub fn secrets_seen(&self) -> BTreeMap<String, String> {
        self.state.lock().unwrap().secrets_seen.clone()
    }

    fn change(&self, call: String) -> anyhow::Result<()> {
        let mut s = self.state.lock().unwrap();
        let n = s.changes;
        s.changes += 1;
        s.calls.push(call.clone());
        if s.fail_at == Some(n) {
            bail!("injected failure at {call}");
        }
        Ok(())
    }

    fn note_secrets(&self, name: &str, secrets: SecretValues<'_>) -> anyhow::Result<()> {
        let mut s = self.state.lock().unwrap();
        let Some((spec, _)) = s.machines.get(name) else { bail!("no machine {name}") };
        // Every reference the machine was created with must get a value, and nothing else.
        let mut want = spec.secret_env.clone();
        let mut got: Vec<String> = secrets.iter().map(|(k, _)| k.clone()).collect();
        want.sort();
        got.sort();
        if want != got {
            bail!("machine {name} references secrets {want:?} but was given {got:?}");
        }
        for (k, v) in secrets {
            s.secrets_seen.insert(k.clone(), v.expose().to_string());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Vmm for RecordingVmm {
    async fn version(&self) -> anyhow::Result<String> {
        Ok("smolvm 1.32.2 (recording fake)".into())
    }

    async fn create(&self, spec: &MachineSpec) -> anyhow::Result<()> {
        self.change(format!("create {}", spec.name))?;
        if let Some(real) = &self.real {
            real.create(spec).await?;
        }
        let m = Machine {
            name: spec.name.clone(),
            allowed_cidrs: spec.allow_cidrs.clone(),
            labels: spec.labels.clone(),
            state: "created".into(),
            network: true,
        };
        self.state.lock().unwrap().machines.insert(spec.name.clone(), (spec.clone(), m));
        Ok(())
    }

    async fn list(&self) -> anyhow::Result<Vec<Machine>> {
        self.state.lock().unwrap().calls.push("ls".into());
        if let Some(real) = &self.real {
            return real.list().await;
        }
        Ok(self.state.lock().unwrap().machines.values().map(|(_, m)| m.clone()).collect())
    }

    async fn start(&self, name: &str, secrets: SecretValues<'_>) -> anyhow::Result<()> {
        self.change(format!("start {name}"))?;
        self.note_secrets(name, secrets)?;
        if let Some((_, m)) = self.state.lock().unwrap().machines.get_mut(name) {
            m.state = "running".into();
        }
        Ok(())
    }

    async fn exec(&self, name: &str, spec: &VmExec, secrets: SecretValues<'_>) -> anyhow::Result<(i64, Vec<u8>)> {
        let user = spec.user.as_deref().unwrap_or("-");
        self.change(format!("exec {name} -u {user} {}", spec.cmd.join(" ")))?;
        self.note_secrets(name, secrets)?;
        let mut s = self.state.lock().unwrap();
        if s.not_ready > 0 {
            s.not_ready -= 1;
            bail!("machine {name}: agent not ready");
        }
        Ok((s.exec_code, Vec::new()))
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        self.state.lock().unwrap().calls.push(format!("stop {name}"));
        if let Some((_, m)) = self.state.lock().unwrap().machines.get_mut(name) {
            m.state = "stopped".into();
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.state.lock().unwrap().calls.push(format!("delete {name}"));
        if let Some(real) = &self.real {
            real.delete(name).await?;
        }
        self.state.lock().unwrap().machines.remove(name);
        Ok(())
    }
}
