//! Where the agent runs: one [`AgentRuntime`] per backend. The launch sequence
//! (`crate::launch`) calls these in order — prepare the image, create the agent wired only to its
//! bundle, seal it, run it — and records in the ledger whatever each one creates, so teardown is
//! the same for every backend. Docker is [`docker::DockerRuntime`]; over
//! [`crate::engine::fake::FakeEngine`] it is also what the launch tests drive.

pub mod docker;
pub mod smolvm;

use crate::engine::ExecIo;
use crate::launch::ledger::Ledger;
use crate::plan::BottlePlan;

/// What preparing the agent's image found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The image's ID.
    pub image: String,
    /// The uid:gid the agent runs as.
    pub user: (u32, u32),
    /// The image's system trust bundle (PEM), empty when it has none.
    pub system_roots: String,
    /// The image's trust-bundle files (links resolved) that the merged bundle replaces.
    pub ca_targets: Vec<String>,
    /// The image as a `docker save` archive (the smolvm backend).
    pub archive: Option<std::path::PathBuf>,
}

/// The agent's environment: values anyone may see (addresses, paths), and secrets (the
/// supervise token, prompted and host-copied values), which a backend must keep off argv.
#[derive(Clone, Default)]
pub struct AgentEnv {
    pub public: Vec<(String, String)>,
    pub secret: Vec<(String, common::Secret)>,
}

impl AgentEnv {
    /// Every variable with its value.
    pub fn all(&self) -> Vec<(String, String)> {
        self.public
            .iter()
            .cloned()
            .chain(self.secret.iter().map(|(k, v)| (k.clone(), v.expose().to_string())))
            .collect()
    }
}

/// Progress lines for the operator (image builds can take minutes).
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);

/// One backend's way of running the agent.
#[async_trait::async_trait]
pub trait AgentRuntime: Send + Sync {
    /// Builds or finds the agent image and reads what provisioning needs from it.
    async fn prepare(&self, plan: &BottlePlan, ledger: &Ledger, progress: Progress<'_>) -> anyhow::Result<Prepared>;
    /// Creates and starts the agent with `env`, able to reach its bundle and nothing else;
    /// records what it creates. Returns the agent's handle.
    async fn create(
        &self,
        plan: &BottlePlan,
        prepared: &Prepared,
        env: &AgentEnv,
        ledger: &Ledger,
    ) -> anyhow::Result<String>;
    /// Shuts every way out but the bundle's ports (before the agent's command runs).
    async fn seal(&self, plan: &BottlePlan, agent: &str, ledger: &Ledger) -> anyhow::Result<()>;
    /// Runs the agent's command; its exit code.
    async fn run(&self, plan: &BottlePlan, prepared: &Prepared, agent: &str, io: ExecIo) -> anyhow::Result<i64>;
}
