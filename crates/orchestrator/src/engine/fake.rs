//! A recording [`Engine`]: keeps the objects it was asked to create, logs every call in order,
//! and fails the `n`th changing call when asked to, so that tests can check a launch unwinds
//! exactly what it set up, in reverse.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;

use super::{
    ContainerSpec, Engine, EngineError, EngineInfo, ExecOutput, ExecSpec, FileRead, NetworkInfo, NetworkSpec, Object,
};
use crate::image::Images;

#[derive(Default)]
struct State {
    calls: Vec<String>,
    /// Changing calls so far (create, connect, start, exec, build).
    changes: usize,
    fail_at: Option<usize>,
    next_id: usize,
    images: HashMap<String, String>,
    networks: BTreeMap<String, (NetworkSpec, String)>,
    containers: BTreeMap<String, (ContainerSpec, bool)>,
    /// Every container ever created, removed ones too.
    history: Vec<ContainerSpec>,
    exec_code: i64,
}

/// See the module docs.
#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<State>,
}

impl FakeEngine {
    /// An engine that has these images.
    pub fn with_images(images: &[&str]) -> FakeEngine {
        let f = FakeEngine::default();
        {
            let mut s = f.state.lock().unwrap();
            for i in images {
                s.images.insert(i.to_string(), format!("sha256:{i}"));
            }
        }
        f
    }

    /// The `n`th changing call (0-based) fails.
    pub fn fail_at(&self, n: usize) {
        self.state.lock().unwrap().fail_at = Some(n);
    }

    /// Exit code of every exec.
    pub fn exec_code(&self, code: i64) {
        self.state.lock().unwrap().exec_code = code;
    }

    /// Every call so far, `op name`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// How many changing calls were made.
    pub fn changes(&self) -> usize {
        self.state.lock().unwrap().changes
    }

    /// Names of the networks and containers that exist now.
    pub fn live(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.networks
            .values()
            .map(|(n, _)| n.name.clone())
            .chain(s.containers.values().map(|(c, _)| c.name.clone()))
            .collect()
    }

    /// The spec a container (now or once) was created with.
    pub fn container(&self, name: &str) -> Option<ContainerSpec> {
        self.state.lock().unwrap().history.iter().find(|c| c.name == name).cloned()
    }

    fn record(&self, call: String) {
        self.state.lock().unwrap().calls.push(call);
    }

    /// Records a changing call; fails it when it is the chosen one.
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

    fn id(&self, prefix: &str) -> String {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        format!("{prefix}{}", s.next_id)
    }

    fn name_of(&self, id: &str) -> String {
        let s = self.state.lock().unwrap();
        s.containers
            .get(id)
            .map(|(c, _)| c.name.clone())
            .or_else(|| s.networks.get(id).map(|(n, _)| n.name.clone()))
            .unwrap_or_else(|| id.to_string())
    }
}

#[async_trait::async_trait]
impl Images for FakeEngine {
    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
        self.record(format!("image_id {reference}"));
        Ok(self.state.lock().unwrap().images.get(reference).cloned())
    }

    async fn build(
        &self,
        _context: Vec<u8>,
        tag: &str,
        _args: &HashMap<String, String>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> anyhow::Result<()> {
        self.change(format!("build {tag}"))?;
        progress(format!("Successfully tagged {tag}"));
        self.state.lock().unwrap().images.insert(tag.to_string(), format!("sha256:{tag}"));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Engine for FakeEngine {
    async fn info(&self) -> anyhow::Result<EngineInfo> {
        Ok(EngineInfo { version: "fake".into(), runtimes: vec!["runc".into()] })
    }

    async fn image_user(&self, reference: &str) -> anyhow::Result<Option<String>> {
        self.record(format!("image_user {reference}"));
        Ok(None)
    }

    async fn networks(&self) -> anyhow::Result<Vec<NetworkInfo>> {
        let s = self.state.lock().unwrap();
        let mut out = vec![NetworkInfo {
            object: Object { id: "bridge".into(), name: "bridge".into(), labels: BTreeMap::new(), running: false },
            subnets: vec!["172.17.0.0/16".parse().unwrap()],
            gateways: vec![Ipv4Addr::new(172, 17, 0, 1)],
        }];
        out.extend(s.networks.iter().map(|(id, (n, _))| NetworkInfo {
            object: Object { id: id.clone(), name: n.name.clone(), labels: n.labels.clone(), running: false },
            subnets: n.subnet.into_iter().collect(),
            gateways: n.gateway.into_iter().collect(),
        }));
        Ok(out)
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, EngineError> {
        self.change(format!("create_network {}", spec.name))?;
        let id = self.id("net");
        self.state.lock().unwrap().networks.insert(id.clone(), (spec.clone(), id.clone()));
        Ok(id)
    }

    async fn remove_network(&self, id: &str) -> anyhow::Result<()> {
        let name = self.name_of(id);
        self.record(format!("remove_network {name}"));
        let mut s = self.state.lock().unwrap();
        if s.containers.values().any(|(c, _)| c.network == name) {
            bail!("network {name} still has containers");
        }
        s.networks.remove(id);
        Ok(())
    }

    async fn containers(&self, label: &str) -> anyhow::Result<Vec<Object>> {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        let s = self.state.lock().unwrap();
        Ok(s.containers
            .iter()
            .filter(|(_, (c, _))| c.labels.get(key).is_some_and(|v| value.is_empty() || v == value))
            .map(|(id, (c, running))| Object {
                id: id.clone(),
                name: c.name.clone(),
                labels: c.labels.clone(),
                running: *running,
            })
            .collect())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        self.change(format!("create_container {}", spec.name))?;
        let id = self.id("ctr");
        let mut s = self.state.lock().unwrap();
        s.containers.insert(id.clone(), (spec.clone(), false));
        s.history.push(spec.clone());
        Ok(id)
    }

    async fn connect(&self, container: &str, network: &str, _ip: Option<Ipv4Addr>) -> anyhow::Result<()> {
        let name = self.name_of(container);
        self.change(format!("connect {name} {network}"))
    }

    async fn start(&self, id: &str) -> anyhow::Result<()> {
        let name = self.name_of(id);
        self.change(format!("start {name}"))?;
        if let Some(c) = self.state.lock().unwrap().containers.get_mut(id) {
            c.1 = true;
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> anyhow::Result<()> {
        let name = self.name_of(id);
        self.record(format!("stop {name}"));
        if let Some(c) = self.state.lock().unwrap().containers.get_mut(id) {
            c.1 = false;
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        let name = self.name_of(id);
        self.record(format!("remove_container {name}"));
        self.state.lock().unwrap().containers.remove(id);
        Ok(())
    }

    async fn wait(&self, id: &str) -> anyhow::Result<i64> {
        let name = self.name_of(id);
        self.record(format!("wait {name}"));
        Ok(0)
    }

    async fn wait_for_output(&self, id: &str, _needles: &[String], _timeout: Duration) -> anyhow::Result<()> {
        let name = self.name_of(id);
        self.record(format!("wait_for_output {name}"));
        Ok(())
    }

    async fn output(&self, _id: &str) -> anyhow::Result<String> {
        Ok(String::new())
    }

    async fn read_file(&self, id: &str, path: &str) -> anyhow::Result<FileRead> {
        let name = self.name_of(id);
        self.record(format!("read_file {name} {path}"));
        Ok(match path {
            "/etc/ssl/certs/ca-certificates.crt" => FileRead::File(b"FAKE SYSTEM ROOTS\n".to_vec()),
            "/etc/ssl/cert.pem" => FileRead::Link("certs/ca-certificates.crt".into()),
            _ => FileRead::Missing,
        })
    }

    async fn exec(&self, id: &str, spec: &ExecSpec) -> anyhow::Result<ExecOutput> {
        let name = self.name_of(id);
        self.change(format!("exec {name} {}", spec.cmd.join(" ")))?;
        Ok(ExecOutput { code: self.state.lock().unwrap().exec_code, output: Vec::new() })
    }

    async fn published_ports(&self, id: &str) -> anyhow::Result<BTreeMap<u16, (Ipv4Addr, u16)>> {
        let name = self.name_of(id);
        self.record(format!("published_ports {name}"));
        let s = self.state.lock().unwrap();
        let Some((spec, true)) = s.containers.get(id) else { bail!("container {name} is not running") };
        // Deterministic stand-ins for the engine's random host ports.
        Ok(spec.publish.iter().map(|(port, ip)| (*port, (*ip, 30000 + port % 1000))).collect())
    }

    async fn save_image(&self, id: &str, path: &std::path::Path) -> anyhow::Result<()> {
        self.change(format!("save_image {id}"))?;
        std::fs::write(path, format!("fake archive of {id}"))?;
        Ok(())
    }
}
