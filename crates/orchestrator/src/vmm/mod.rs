//! The microVM monitor, behind one trait: smolvm's `machine` verbs as the smolvm backend uses
//! them. [`smolvm::SmolvmCli`] drives the real `smolvm` CLI through `common::proc`;
//! [`fake::RecordingVmm`] records every call and answers `start`/`exec`/`stop` itself (VMs cannot
//! boot everywhere), optionally handing `create`/`ls`/`delete` to a real CLI.
//!
//! Secret values never reach an argv: a machine's secret variables are created as
//! `--secret-env GUEST=HOST` references, and their values are handed to the `start` and `exec`
//! children in their environment only.

pub mod boot;
pub mod fake;
pub mod smolvm;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::Secret;
use serde::Deserialize;

use crate::engine::ExecIo;

/// A machine to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineSpec {
    pub name: String,
    /// A `docker save` archive (empty: smolvm's own minimal guest).
    pub image: PathBuf,
    /// The only CIDRs the machine may reach.
    pub allow_cidrs: Vec<String>,
    /// `uid:gid` the workload runs as.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Public environment (`-e`).
    pub env: Vec<(String, String)>,
    /// Secret environment, by name only: `--secret-env NAME=<host var>`; values come with
    /// [`Vmm::start`] and [`Vmm::exec`].
    pub secret_env: Vec<String>,
    /// `host:guest[:ro]` volumes.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The machine's workload (`-- ARGV`): what keeps it up while the agent's command is exec'd.
    pub command: Vec<String>,
}

/// A machine as `machine ls --json` shows it (the fields bot-bottle reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Machine {
    pub name: String,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub network: bool,
}

/// A command to run in a running machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExec {
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub io: ExecIo,
}

/// Secret values for a machine's `--secret-env` references, by guest variable name.
pub type SecretValues<'a> = &'a [(String, Secret)];

/// smolvm's `machine` verbs. Deleting a machine that is gone is success.
#[async_trait::async_trait]
pub trait Vmm: Send + Sync {
    /// `smolvm --version`, checked against the minimum supported version.
    async fn version(&self) -> anyhow::Result<String>;
    async fn create(&self, spec: &MachineSpec) -> anyhow::Result<()>;
    async fn list(&self) -> anyhow::Result<Vec<Machine>>;
    async fn start(&self, name: &str, secrets: SecretValues<'_>) -> anyhow::Result<()>;
    /// Runs a command; its exit code and (with [`ExecIo::Capture`]) its output.
    async fn exec(&self, name: &str, spec: &VmExec, secrets: SecretValues<'_>) -> anyhow::Result<(i64, Vec<u8>)>;
    async fn stop(&self, name: &str) -> anyhow::Result<()>;
    async fn delete(&self, name: &str) -> anyhow::Result<()>;
}

/// Fails unless `name` exists with exactly `allow_cidrs` as its egress allowlist and the
/// bottle's labels: a machine that could reach more than its bundle never starts (older smolvm
/// silently dropped `--allow-cidr` in some forms).
pub async fn read_back(vmm: &dyn Vmm, spec: &MachineSpec) -> anyhow::Result<()> {
    let machines = vmm.list().await?;
    let Some(m) = machines.iter().find(|m| m.name == spec.name) else {
        anyhow::bail!("smolvm created machine {} but does not list it", spec.name);
    };
    let mut want = spec.allow_cidrs.clone();
    let mut got = m.allowed_cidrs.clone();
    want.sort();
    got.sort();
    if want != got {
        anyhow::bail!(
            "machine {} was created with egress allowlist {got:?}, not {want:?}: refusing to start it (this smolvm \
             does not apply --allow-cidr as bot-bottle needs)",
            spec.name
        );
    }
    if let Some((k, v)) = spec.labels.iter().find(|(k, v)| m.labels.get(*k) != Some(*v)) {
        anyhow::bail!("machine {} lacks its label {k}={v}: refusing to start it", spec.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_back_refuses_a_wider_or_missing_allowlist() {
        let spec = MachineSpec {
            name: "m".into(),
            allow_cidrs: vec!["127.77.0.5/32".into()],
            labels: [("bot-bottle.slug".to_string(), "s".to_string())].into(),
            ..Default::default()
        };
        for (got, ok) in [
            (vec!["127.77.0.5/32"], true),
            (vec![], false),
            (vec!["127.77.0.5/32", "0.0.0.0/0"], false),
            (vec!["127.77.0.0/16"], false),
        ] {
            let vmm = fake::RecordingVmm::default();
            vmm.create(&spec).await.unwrap();
            vmm.set_allowed(&spec.name, got.iter().map(|s| s.to_string()).collect());
            assert_eq!(read_back(&vmm, &spec).await.is_ok(), ok, "{got:?}");
        }
        let vmm = fake::RecordingVmm::default();
        let err = read_back(&vmm, &spec).await.unwrap_err();
        assert!(err.to_string().contains("does not list it"), "{err}");
    }
}
