//! [`Engine`] and [`Images`] over the Docker Engine API (bollard). The client is private to this
//! module: every Docker call bot-bottle makes is one of these methods.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, Mount, MountType,
    NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::{
    ContainerSpec, Engine, EngineError, EngineInfo, ExecIo, ExecOutput, ExecSpec, FileRead, NetworkInfo, NetworkSpec,
    Object,
};
use crate::image::Images;
use crate::plan::Subnet;

/// The Docker engine.
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// Connects with the usual defaults (`DOCKER_HOST` or the local socket), agrees on an API
    /// version the engine speaks, and checks it answers, so a missing engine is reported once,
    /// clearly.
    pub async fn connect() -> anyhow::Result<DockerEngine> {
        const HINT: &str = "is dockerd running? `bot-bottle doctor` tells what is missing";
        let docker = Docker::connect_with_local_defaults().context("connecting to the Docker engine")?;
        let docker =
            docker.negotiate_version().await.with_context(|| format!("the Docker engine does not answer ({HINT})"))?;
        docker.ping().await.with_context(|| format!("the Docker engine does not answer ({HINT})"))?;
        Ok(DockerEngine { docker })
    }
}

fn not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

fn labels(l: &BTreeMap<String, String>) -> HashMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[async_trait::async_trait]
impl Images for DockerEngine {
    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(Some(img.id.unwrap_or_default())),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting image {reference}")),
        }
    }

    async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        build_args: &HashMap<String, String>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> anyhow::Result<()> {
        let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(build_args)
            .build();
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
        // Each step's headline goes to `progress`, not every line a step prints (an apt-get
        // step prints hundreds); the last lines are kept for a failure's message.
        let mut recent = std::collections::VecDeque::with_capacity(40);
        while let Some(item) = stream.next().await {
            let failed = |message: String, recent: std::collections::VecDeque<String>| {
                let output: Vec<String> = recent.into_iter().collect();
                anyhow::anyhow!("building {tag}: {}\n  {}", message.trim(), output.join("\n  "))
            };
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(failed(e.to_string(), recent)),
            };
            if let Some(detail) = info.error_detail {
                return Err(failed(detail.message.unwrap_or_default(), recent));
            }
            for line in info.stream.as_deref().unwrap_or_default().lines().map(str::trim_end).filter(|l| !l.is_empty())
            {
                if line.starts_with("Step ") || line.starts_with("Successfully") {
                    progress(line.to_string());
                }
                if recent.len() == 40 {
                    recent.pop_front();
                }
                recent.push_back(line.to_string());
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    async fn info(&self) -> anyhow::Result<EngineInfo> {
        let info = self.docker.info().await.context("asking the Docker engine about itself")?;
        let mut runtimes: Vec<String> = info.runtimes.map(|r| r.into_keys().collect()).unwrap_or_default();
        runtimes.sort();
        Ok(EngineInfo { version: info.server_version.unwrap_or_default(), runtimes })
    }

    async fn image_user(&self, reference: &str) -> anyhow::Result<Option<String>> {
        let img =
            self.docker.inspect_image(reference).await.with_context(|| format!("inspecting image {reference}"))?;
        Ok(img.config.and_then(|c| c.user).filter(|u| !u.is_empty()))
    }

    async fn networks(&self) -> anyhow::Result<Vec<NetworkInfo>> {
        let list = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().build()))
            .await
            .context("listing Docker networks")?;
        Ok(list
            .into_iter()
            .map(|n| {
                let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
                NetworkInfo {
                    object: Object {
                        id: n.id.unwrap_or_default(),
                        name: n.name.unwrap_or_default(),
                        labels: n.labels.unwrap_or_default().into_iter().collect(),
                        running: false,
                    },
                    subnets: configs.iter().filter_map(|c| c.subnet.as_deref()?.parse::<Subnet>().ok()).collect(),
                    gateways: configs
                        .iter()
                        .filter_map(|c| gateway(c.subnet.as_deref(), c.gateway.as_deref()))
                        .collect(),
                }
            })
            .collect())
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, EngineError> {
        let ipam = spec.subnet.map(|s| Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(s.to_string()),
                gateway: spec.gateway.map(|g| g.to_string()),
                ..Default::default()
            }]),
            options: None,
        });
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("bridge".into()),
            internal: Some(spec.internal),
            ipam,
            labels: Some(labels(&spec.labels)),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(r) => Ok(r.id),
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains("overlap") || message.contains("Pool overlaps") =>
            {
                Err(EngineError::SubnetTaken(spec.subnet.map(|s| s.to_string()).unwrap_or_default()))
            }
            Err(e) => Err(EngineError::Other(anyhow::Error::new(e).context(format!("creating network {}", spec.name)))),
        }
    }

    async fn remove_network(&self, id: &str) -> anyhow::Result<()> {
        match self.docker.remove_network(id).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing network {id}")),
        }
    }

    async fn containers(&self, label: &str) -> anyhow::Result<Vec<Object>> {
        let filters = HashMap::from([("label", vec![label])]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
            .await
            .context("listing Docker containers")?;
        Ok(list
            .into_iter()
            .map(|c| Object {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
            })
            .collect())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        let mounts = spec
            .binds
            .iter()
            .map(|b| Mount {
                source: Some(b.source.display().to_string()),
                target: Some(b.target.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(b.read_only),
                ..Default::default()
            })
            .collect();
        let networking_config =
            (!spec.network.starts_with("container:") && spec.network != "none").then(|| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings {
                        ipam_config: spec
                            .ip
                            .map(|ip| EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
                        ..Default::default()
                    },
                )])),
            });
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
            .publish
            .iter()
            .map(|(port, ip)| {
                // An empty host port: the engine picks a free one (read back with `published_ports`).
                let binding = PortBinding { host_ip: Some(ip.to_string()), host_port: Some(String::new()) };
                (format!("{port}/tcp"), Some(vec![binding]))
            })
            .collect();
        let host_config = HostConfig {
            mounts: Some(mounts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            tmpfs: Some(spec.tmpfs.iter().cloned().collect()),
            network_mode: Some(spec.network.clone()),
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            readonly_rootfs: Some(spec.read_only_root),
            cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            init: Some(spec.init),
            runtime: spec.runtime.clone(),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: spec.user.clone(),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels(&spec.labels)),
            working_dir: spec.working_dir.clone(),
            exposed_ports: (!spec.publish.is_empty())
                .then(|| spec.publish.iter().map(|(port, _)| format!("{port}/tcp")).collect()),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating container {}", spec.name))?;
        Ok(created.id)
    }

    async fn connect(&self, container: &str, network: &str, ip: Option<Ipv4Addr>) -> anyhow::Result<()> {
        let request = NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(EndpointSettings {
                ipam_config: ip
                    .map(|ip| EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
                ..Default::default()
            }),
        };
        self.docker
            .connect_network(network, request)
            .await
            .with_context(|| format!("connecting container {container} to network {network}"))
    }

    async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.docker.start_container(id, None).await.with_context(|| format!("starting container {id}"))
    }

    async fn stop(&self, id: &str, grace: Duration) -> anyhow::Result<()> {
        let options = StopContainerOptionsBuilder::default().t(grace.as_secs().max(1) as i32).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(BollardError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("stopping container {id}")),
        }
    }

    async fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // Removal already in progress (another teardown): it will be gone.
            Err(BollardError::DockerResponseServerError { status_code: 409, message })
                if message.contains("in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("removing container {id}")),
        }
    }

    async fn wait(&self, id: &str) -> anyhow::Result<i64> {
        let mut stream = self.docker.wait_container(id, Some(WaitContainerOptionsBuilder::default().build()));
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // A non-zero exit arrives as this error.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(e).with_context(|| format!("waiting for container {id}")),
            None => bail!("waiting for container {id}: no answer"),
        }
    }

    async fn wait_for_output(&self, id: &str, needles: &[String], timeout: Duration) -> anyhow::Result<()> {
        let options = LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut seen = String::new();
        let done = |seen: &str| needles.iter().all(|n| seen.contains(n.as_str()));
        let found = tokio::time::timeout(timeout, async {
            while let Some(item) = stream.next().await {
                let chunk = item.with_context(|| format!("reading the output of container {id}"))?;
                seen.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                if done(&seen) {
                    return Ok(true);
                }
            }
            anyhow::Ok(false)
        })
        .await;
        match found {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => bail!("container {id} exited before it was ready; its output:\n{}", tail(&seen, 30)),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("container {id} was not ready within {timeout:?}; its output:\n{}", tail(&seen, 30)),
        }
    }

    async fn output(&self, id: &str) -> anyhow::Result<String> {
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail("200").build();
        let chunks: Vec<LogOutput> = self
            .docker
            .logs(id, Some(options))
            .try_collect()
            .await
            .with_context(|| format!("reading the output of {id}"))?;
        Ok(chunks.into_iter().map(|c| String::from_utf8_lossy(&c.into_bytes()).into_owned()).collect())
    }

    async fn read_file(&self, id: &str, path: &str) -> anyhow::Result<FileRead> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let mut stream = self.docker.download_from_container(id, Some(options));
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => tar_bytes.extend_from_slice(&b),
                Err(e) if not_found(&e) => return Ok(FileRead::Missing),
                Err(e) => return Err(e).with_context(|| format!("reading {path} in container {id}")),
            }
        }
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut entries = archive.entries().with_context(|| format!("reading {path} in container {id}"))?;
        let Some(entry) = entries.next() else { return Ok(FileRead::Missing) };
        let mut entry = entry.with_context(|| format!("reading {path} in container {id}"))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let target = entry.link_name()?.map(|p| p.display().to_string()).unwrap_or_default();
            return Ok(FileRead::Link(target));
        }
        if !kind.is_file() {
            return Ok(FileRead::Missing);
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        Ok(FileRead::File(bytes))
    }

    async fn exec(&self, id: &str, spec: &ExecSpec) -> anyhow::Result<ExecOutput> {
        let tty = spec.io == ExecIo::Terminal;
        let options = CreateExecOptions {
            attach_stdin: Some(tty),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            cmd: Some(spec.cmd.clone()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            ..Default::default()
        };
        let what = spec.cmd.first().cloned().unwrap_or_default();
        let exec =
            self.docker.create_exec(id, options).await.with_context(|| format!("starting {what} in container {id}"))?;
        let started = self
            .docker
            .start_exec(&exec.id, Some(StartExecOptions { detach: false, tty, output_capacity: None }))
            .await
            .with_context(|| format!("starting {what} in container {id}"))?;
        let StartExecResults::Attached { mut output, input } = started else {
            bail!("starting {what} in container {id}: the engine did not attach");
        };
        let mut captured = Vec::new();
        match spec.io {
            ExecIo::Capture | ExecIo::Inherit => {
                drop(input);
                let mut out = tokio::io::stdout();
                let mut err = tokio::io::stderr();
                while let Some(chunk) = output.next().await {
                    let chunk = chunk.with_context(|| format!("reading the output of {what}"))?;
                    match (spec.io, chunk) {
                        (ExecIo::Capture, c) => captured.extend_from_slice(&c.into_bytes()),
                        (_, LogOutput::StdErr { message }) => {
                            err.write_all(&message).await?;
                            err.flush().await?;
                        }
                        (_, c) => {
                            out.write_all(&c.into_bytes()).await?;
                            out.flush().await?;
                        }
                    }
                }
            }
            ExecIo::Terminal => terminal(&self.docker, &exec.id, output, input).await?,
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.with_context(|| format!("asking how {what} ended"))?;
        Ok(ExecOutput { code: inspect.exit_code.unwrap_or(-1), output: captured })
    }

    async fn published_ports(&self, id: &str) -> anyhow::Result<BTreeMap<u16, (Ipv4Addr, u16)>> {
        let c = self
            .docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .with_context(|| format!("inspecting container {id}"))?;
        let ports = c.network_settings.and_then(|n| n.ports).unwrap_or_default();
        let mut out = BTreeMap::new();
        for (key, bindings) in ports {
            let Some(port) = key.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok()) else { continue };
            for b in bindings.unwrap_or_default() {
                let ip = b.host_ip.as_deref().and_then(|i| i.parse::<Ipv4Addr>().ok());
                let host_port = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok());
                if let (Some(ip), Some(host_port)) = (ip, host_port) {
                    out.insert(port, (ip, host_port));
                }
            }
        }
        Ok(out)
    }

    async fn save_image(&self, id: &str, path: &std::path::Path) -> anyhow::Result<()> {
        let mut file = tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?;
        let mut stream = self.docker.export_image(id);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("saving image {id}"))?;
            file.write_all(&chunk).await.with_context(|| format!("writing {}", path.display()))?;
        }
        file.sync_all().await.with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The operator's terminal attached to an exec: raw mode, input copied in, output copied out,
/// window size followed; the terminal restored however it ends.
async fn terminal(
    docker: &Docker,
    exec_id: &str,
    mut output: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, BollardError>> + Send>>,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) -> anyhow::Result<()> {
    struct Raw;
    impl Drop for Raw {
        fn drop(&mut self) {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
    let resize = |docker: Docker, id: String| async move {
        if let Ok((w, h)) = crossterm::terminal::size() {
            let _ = docker.resize_exec(&id, bollard::exec::ResizeExecOptions { height: h, width: w }).await;
        }
    };
    resize(docker.clone(), exec_id.to_string()).await;
    crossterm::terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
    let _raw = Raw;
    // Input: a blocking read of stdin on its own thread, fed through a channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(c) => {
                    stdout.write_all(&c?.into_bytes())?;
                    stdout.flush()?;
                }
                None => break,
            },
            Some(bytes) = rx.recv() => {
                input.write_all(&bytes).await?;
                input.flush().await?;
            }
            _ = winch.recv() => resize(docker.clone(), exec_id.to_string()).await,
        }
    }
    Ok(())
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A network's IPv4 gateway from one IPAM config: the one it names, else its subnet's first
/// host address. The engine leaves the gateway out of the default bridge's config when dockerd
/// starts without a network store (Debian's docker.io 20.10 on a fresh machine, which logs
/// "Default bridge (docker0) is assigned with an IP address 172.17.0.0/16"); its IPAM then gives
/// the bridge that first address, which is also what `host-gateway` means to the engine.
fn gateway(subnet: Option<&str>, named: Option<&str>) -> Option<Ipv4Addr> {
    match named.filter(|g| !g.is_empty()) {
        Some(g) => g.parse().ok(),
        None => Some(subnet?.parse::<Subnet>().ok()?.host(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_is_the_configs_or_its_subnets_first_host() {
        let cases: &[(Option<&str>, Option<&str>, Option<Ipv4Addr>)] = &[
            (Some("172.17.0.0/16"), Some("172.17.0.1"), Some(Ipv4Addr::new(172, 17, 0, 1))),
            (Some("10.243.0.16/28"), Some("10.243.0.17"), Some(Ipv4Addr::new(10, 243, 0, 17))),
            // A named gateway wins over the first host.
            (Some("172.18.0.0/16"), Some("172.18.0.254"), Some(Ipv4Addr::new(172, 18, 0, 254))),
            // The default bridge as a fresh dockerd reports it.
            (Some("172.17.0.0/16"), None, Some(Ipv4Addr::new(172, 17, 0, 1))),
            (Some("172.17.0.0/16"), Some(""), Some(Ipv4Addr::new(172, 17, 0, 1))),
            // An IPv6 config, or nothing to go on, gives none.
            (Some("fd00:dead::/64"), None, None),
            (Some("fd00:dead::/64"), Some("fd00:dead::1"), None),
            (None, None, None),
        ];
        for (subnet, gw, want) in cases {
            assert_eq!(gateway(*subnet, *gw), *want, "subnet {subnet:?}, gateway {gw:?}");
        }
    }
}
