//! The container engine, behind one trait: networks, containers, exec and file reads (images
//! are [`crate::image::Images`]). [`docker::DockerEngine`] speaks the Docker Engine API through
//! bollard (its client is private: nothing goes around this trait); [`fake::FakeEngine`] records
//! every call and can fail any one of them, for the launch and teardown tests.

pub mod docker;
pub mod fake;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::image::Images;
use crate::plan::Subnet;

/// A network to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// No route out of the network.
    pub internal: bool,
    pub subnet: Option<Subnet>,
    pub gateway: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// A container to create. `env` values may be secrets: implementations pass them to the engine
/// and nowhere else (never a log line, never an argv).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub binds: Vec<Bind>,
    /// Path → mount options (`mode=1777`, `uid=1000`, …).
    pub tmpfs: Vec<(String, String)>,
    /// The network it is created on (or `container:<id>` to share another's namespace).
    pub network: String,
    pub ip: Option<Ipv4Addr>,
    pub extra_hosts: Vec<String>,
    pub read_only_root: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    /// The engine's init as PID 1 (reaps, forwards signals).
    pub init: bool,
    pub runtime: Option<String>,
    pub working_dir: Option<String>,
    /// TCP ports published on a host address, each at a random host port (see
    /// [`Engine::published_ports`]).
    pub publish: Vec<(u16, Ipv4Addr)>,
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Env values may be secrets: only names.
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("user", &self.user)
            .field("env", &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .field("network", &self.network)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// How an exec's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecIo {
    /// Output captured and returned; no stdin.
    Capture,
    /// Output copied to this process's stdout and stderr as it comes; no stdin.
    Inherit,
    /// A terminal: this process's terminal in raw mode, both ways, resized with it.
    Terminal,
}

/// A command to run in a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub io: ExecIo,
}

/// What an exec did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i64,
    /// stdout then stderr, with [`ExecIo::Capture`].
    pub output: Vec<u8>,
}

/// An object the engine has, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Containers: running now.
    pub running: bool,
}

/// A network the engine has, with the subnets it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub object: Object,
    pub subnets: Vec<Subnet>,
    pub gateways: Vec<Ipv4Addr>,
}

/// What a file path in a container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRead {
    Missing,
    File(Vec<u8>),
    /// A symbolic link, with its target as written.
    Link(String),
}

/// About the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineInfo {
    pub version: String,
    pub runtimes: Vec<String>,
}

/// Errors with a meaning the launch acts on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The subnet asked for overlaps one the engine already has (another bottle got there
    /// first): plan again.
    #[error("subnet {0} is already in use")]
    SubnetTaken(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Networks, containers and exec. Removal of something already gone is success.
#[async_trait::async_trait]
pub trait Engine: Images + Send + Sync {
    async fn info(&self) -> anyhow::Result<EngineInfo>;
    /// The image's configured user (`Config.User`), `None` when unset.
    async fn image_user(&self, reference: &str) -> anyhow::Result<Option<String>>;
    async fn networks(&self) -> anyhow::Result<Vec<NetworkInfo>>;
    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, EngineError>;
    async fn remove_network(&self, id: &str) -> anyhow::Result<()>;
    async fn containers(&self, label: &str) -> anyhow::Result<Vec<Object>>;
    async fn create_container(&self, spec: &ContainerSpec) -> anyhow::Result<String>;
    async fn connect(&self, container: &str, network: &str, ip: Option<Ipv4Addr>) -> anyhow::Result<()>;
    async fn start(&self, id: &str) -> anyhow::Result<()>;
    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> anyhow::Result<()>;
    /// Force-removes the container and its anonymous volumes.
    async fn remove_container(&self, id: &str) -> anyhow::Result<()>;
    /// Waits for the container to exit; its exit code.
    async fn wait(&self, id: &str) -> anyhow::Result<i64>;
    /// Follows the container's output until every needle has appeared in it; fails (with the
    /// output so far) when the container exits first or `timeout` passes.
    async fn wait_for_output(&self, id: &str, needles: &[String], timeout: Duration) -> anyhow::Result<()>;
    /// The container's output so far (for error messages).
    async fn output(&self, id: &str) -> anyhow::Result<String>;
    /// A path in a container (created or running), not following links.
    async fn read_file(&self, id: &str, path: &str) -> anyhow::Result<FileRead>;
    async fn exec(&self, id: &str, spec: &ExecSpec) -> anyhow::Result<ExecOutput>;
    /// A started container's published TCP ports: container port → (host address, host port).
    async fn published_ports(&self, id: &str) -> anyhow::Result<BTreeMap<u16, (Ipv4Addr, u16)>>;
    /// Writes the image as a `docker save` archive to `path`.
    async fn save_image(&self, id: &str, path: &std::path::Path) -> anyhow::Result<()>;
}

/// Reads `path` in a container, following symbolic links (at most 8).
pub async fn read_following_links(
    engine: &dyn Engine,
    id: &str,
    path: &str,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    let mut current = path.to_string();
    for _ in 0..8 {
        match engine.read_file(id, &current).await? {
            FileRead::Missing => return Ok(None),
            FileRead::File(bytes) => return Ok(Some((current, bytes))),
            FileRead::Link(target) => {
                current = if target.starts_with('/') {
                    target
                } else {
                    let dir = current.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    normalize(&format!("{dir}/{target}"))
                };
            }
        }
    }
    anyhow::bail!("{path}: too many levels of symbolic links")
}

/// `/a/b/../c/./d` → `/a/c/d`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("/etc/ssl/certs/../../pki/x.pem"), "/etc/pki/x.pem");
        assert_eq!(normalize("/etc/./ssl//cert.pem"), "/etc/ssl/cert.pem");
    }

    #[test]
    fn debug_of_a_spec_hides_env_values() {
        let spec = ContainerSpec { env: vec![("EGRESS_TOKEN_0".into(), "sekrit-value".into())], ..Default::default() };
        let shown = format!("{spec:?}");
        assert!(shown.contains("EGRESS_TOKEN_0") && !shown.contains("sekrit-value"), "{shown}");
    }
}
