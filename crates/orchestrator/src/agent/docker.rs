//! The Docker backend: the agent is a container on the bottle's `--internal` network only,
//! non-root, every capability dropped, `no-new-privileges`, read-only root (by default), the
//! engine's init as PID 1 idling until the agent's command is exec'd, and gVisor's `runsc` when
//! the engine has it. Before the command runs, a short-lived helper from the sidecar image joins
//! the agent's network namespace with `NET_ADMIN` and installs the plan's nftables rules (only
//! the bundle's ports; not the host, not Docker's DNS), then exits: the agent, without
//! `NET_ADMIN`, cannot undo them.
//!
//! Provisioning files reach the agent as read-only bind mounts: its `/etc/bot-bottle/`, and the
//! merged trust bundle over the image's own system bundle (so the root stays read-only and no
//! root process runs in the agent to update the store).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use common::consts::label;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AgentEnv, AgentRuntime, Prepared, Progress};
use crate::engine::{Bind, ContainerSpec, Engine, ExecIo, ExecSpec, read_following_links};
use crate::launch::ledger::{Ledger, Undo};
use crate::plan::{AgentImage, BottlePlan, ContainerSandbox, provision};

/// Repository of images built from a manifest's Dockerfile.
pub const AGENT_REPOSITORY: &str = "bot-bottle-agent";
/// The agent's user when the image's is root or unset.
pub const DEFAULT_USER: (u32, u32) = (1000, 1000);

pub struct DockerRuntime<'a> {
    engine: &'a dyn Engine,
    /// `$BOT_BOTTLE_HOME/cache`: what a probe learned about an image, by image ID.
    cache_dir: PathBuf,
}

impl<'a> DockerRuntime<'a> {
    pub fn new(engine: &'a dyn Engine, cache_dir: PathBuf) -> Self {
        DockerRuntime { engine, cache_dir }
    }

    fn labels(plan: &BottlePlan, role: &str) -> BTreeMap<String, String> {
        let mut l = plan.labels.clone();
        l.insert(label::ROLE.into(), role.into());
        l
    }

    /// Finds or builds the image; its ID.
    async fn image(&self, plan: &BottlePlan, progress: Progress<'_>) -> anyhow::Result<String> {
        match &plan.agent.image {
            AgentImage::Reference { image } => self.engine.image_id(image).await?.with_context(|| {
                format!("agent image {image} is not in the local engine: build it, or give agent_provider.dockerfile")
            }),
            AgentImage::Dockerfile { dockerfile, context } => {
                let (tar, digest) = build_context(dockerfile, context)?;
                let tag = format!("{AGENT_REPOSITORY}:{}", &digest[..16]);
                if let Some(id) = self.engine.image_id(&tag).await? {
                    return Ok(id);
                }
                progress(format!("building the agent image {tag} from {}", dockerfile.display()));
                let mut lines = |l: String| progress(format!("  {l}"));
                self.engine.build(tar, &tag, &Default::default(), &mut lines).await?;
                self.engine
                    .image_id(&tag)
                    .await?
                    .with_context(|| format!("the engine built {tag} but does not have it"))
            }
            AgentImage::Template { template } => {
                crate::templates::image::ensure(self.engine, *template, progress).await
            }
        }
    }

    /// What provisioning needs from the image: its user and trust store. Read from a container
    /// that is created and never started; cached by image ID.
    async fn probe(&self, plan: &BottlePlan, image: &str, ledger: &Ledger) -> anyhow::Result<Probe> {
        let cache = self.cache_dir.join("agent-images").join(format!("{}.json", image.trim_start_matches("sha256:")));
        if let Ok(bytes) = std::fs::read(&cache)
            && let Ok(p) = serde_json::from_slice::<Probe>(&bytes)
        {
            return Ok(p);
        }
        let spec = ContainerSpec {
            name: format!("bot-bottle-{}-probe", plan.slug),
            image: image.to_string(),
            entrypoint: Some(vec!["/nonexistent".into()]),
            network: "none".into(),
            labels: Self::labels(plan, "probe"),
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        let id = self.engine.create_container(&spec).await?;
        ledger.record(Undo::RemoveContainer { id: id.clone(), name: spec.name.clone(), grace_secs: 0 })?;
        let result = self.read_probe(&id).await;
        self.engine.remove_container(&id).await?;
        let probe = result?;
        if let Some(dir) = cache.parent() {
            let _ = std::fs::create_dir_all(dir);
            let _ = common::atomic::write_json(&cache, &probe);
        }
        Ok(probe)
    }

    async fn read_probe(&self, id: &str) -> anyhow::Result<Probe> {
        let passwd = read_following_links(self.engine, id, "/etc/passwd").await?.map(|(_, b)| b).unwrap_or_default();
        let mut roots = String::new();
        let mut targets = Vec::new();
        for path in provision::SYSTEM_CA_BUNDLES {
            if let Some((real, bytes)) = read_following_links(self.engine, id, path).await? {
                if roots.is_empty() {
                    roots = String::from_utf8_lossy(&bytes).into_owned();
                }
                if !targets.contains(&real) {
                    targets.push(real);
                }
            }
        }
        Ok(Probe { passwd: String::from_utf8_lossy(&passwd).into_owned(), roots, targets })
    }
}

/// What a probe reads from an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe {
    passwd: String,
    roots: String,
    targets: Vec<String>,
}

/// The image's `USER` as uid:gid: numbers as they are, a name through the image's
/// `/etc/passwd`; root or unset → `None`.
fn image_user(user: Option<&str>, passwd: &str) -> anyhow::Result<Option<(u32, u32)>> {
    let Some(user) = user.filter(|u| !u.is_empty()) else { return Ok(None) };
    let (name, group) = user.split_once(':').map(|(u, g)| (u, Some(g))).unwrap_or((user, None));
    let entry = |n: &str| passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 3 && f[0] == n);
    let uid: u32 = match name.parse() {
        Ok(n) => n,
        Err(_) => entry(name)
            .and_then(|f| f[2].parse().ok())
            .with_context(|| format!("the image's user {name:?} is not in its /etc/passwd"))?,
    };
    let gid: u32 = match group {
        Some(g) => g.parse().with_context(|| format!("the image's group {g:?} is not numeric"))?,
        None => entry(name).and_then(|f| f[3].parse().ok()).unwrap_or(uid),
    };
    Ok((uid != 0).then_some((uid, gid)))
}

/// A tar of the Dockerfile's directory (`.git` left out) and its sha256, which names the image:
/// a changed file gives a new tag, an unchanged one is a no-op.
fn build_context(dockerfile: &Path, context: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    let mut files = Vec::new();
    collect(context, context, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    let mut builder = tar::Builder::new(Vec::new());
    let df_name = dockerfile.strip_prefix(context).unwrap_or(Path::new("Dockerfile")).to_path_buf();
    for rel in &files {
        let bytes =
            std::fs::read(context.join(rel)).with_context(|| format!("reading {}", context.join(rel).display()))?;
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(context.join(rel))?.permissions()) & 0o777;
        let name = if rel == &df_name { PathBuf::from("Dockerfile") } else { rel.clone() };
        hasher.update(name.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(mode.to_be_bytes());
        hasher.update(&bytes);
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, &name, bytes.as_slice())?;
    }
    if !files.contains(&df_name) {
        bail!("{} is not inside {}", dockerfile.display(), context.display());
    }
    Ok((builder.into_inner()?, hex::encode(hasher.finalize())))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == ".git" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(root).expect("below root").to_path_buf());
        }
    }
    Ok(())
}

fn container(plan: &BottlePlan) -> anyhow::Result<&ContainerSandbox> {
    plan.agent.container().context("the docker backend was given a microVM plan")
}

#[async_trait::async_trait]
impl AgentRuntime for DockerRuntime<'_> {
    async fn prepare(&self, plan: &BottlePlan, ledger: &Ledger, progress: Progress<'_>) -> anyhow::Result<Prepared> {
        let image = self.image(plan, progress).await?;
        let probe = self.probe(plan, &image, ledger).await?;
        let user = match &plan.agent.user {
            Some(u) => crate::manifest::parse_user(u).context("the plan's agent user")?,
            None => {
                let configured = self.engine.image_user(&image).await?;
                image_user(configured.as_deref(), &probe.passwd)?.unwrap_or(DEFAULT_USER)
            }
        };
        Ok(Prepared { image, user, system_roots: probe.roots, ca_targets: probe.targets, archive: None })
    }

    async fn create(
        &self,
        plan: &BottlePlan,
        prepared: &Prepared,
        env: &AgentEnv,
        ledger: &Ledger,
    ) -> anyhow::Result<String> {
        let a = &plan.agent;
        let c = container(plan)?;
        let crate::plan::Link::Internal { network, agent_ip, .. } = &plan.network.link else {
            bail!("the docker backend was given a plan without an internal network");
        };
        let (uid, gid) = prepared.user;
        let ca_bundle = plan.state_dir.join("agent/ca-bundle.pem");
        let mut binds: Vec<Bind> = a
            .mounts
            .iter()
            .map(|m| Bind { source: m.source.clone(), target: m.target.clone(), read_only: m.read_only })
            .collect();
        let targets = if prepared.ca_targets.is_empty() {
            vec![provision::SYSTEM_CA_BUNDLES[0].to_string()]
        } else {
            prepared.ca_targets.clone()
        };
        binds.extend(targets.into_iter().map(|t| Bind { source: ca_bundle.clone(), target: t, read_only: true }));
        let tmpfs = c
            .tmpfs
            .iter()
            .map(|t| {
                let opts = if t == provision::HOME {
                    format!("rw,nosuid,nodev,mode=0700,uid={uid},gid={gid}")
                } else {
                    "rw,nosuid,nodev,mode=1777".to_string()
                };
                (t.clone(), opts)
            })
            .collect();
        let spec = ContainerSpec {
            name: c.container.clone(),
            image: prepared.image.clone(),
            user: Some(format!("{uid}:{gid}")),
            // The engine's init idles as PID 1; the agent's command is exec'd once sealed.
            entrypoint: Some(vec!["sleep".into(), "infinity".into()]),
            cmd: Some(Vec::new()),
            env: env.all(),
            labels: Self::labels(plan, "agent"),
            binds,
            tmpfs,
            network: network.name.clone(),
            ip: Some(*agent_ip),
            read_only_root: c.read_only_root,
            cap_drop: c.cap_drop.clone(),
            security_opt: c.security_opt.clone(),
            init: true,
            runtime: c.runtime.clone(),
            working_dir: Some(provision::HOME.into()),
            ..Default::default()
        };
        let id = self.engine.create_container(&spec).await?;
        ledger.record(Undo::RemoveContainer { id: id.clone(), name: spec.name.clone(), grace_secs: 0 })?;
        self.engine.start(&id).await?;
        Ok(id)
    }

    async fn seal(&self, plan: &BottlePlan, agent: &str, ledger: &Ledger) -> anyhow::Result<()> {
        const RULES: &str = "/etc/bot-bottle/firewall.nft";
        let spec = ContainerSpec {
            name: container(plan)?.firewall.container.clone(),
            image: plan.bundle.image.clone(),
            user: Some("0:0".into()),
            entrypoint: Some(vec!["nft".into(), "-f".into(), RULES.into()]),
            cmd: Some(Vec::new()),
            labels: Self::labels(plan, "firewall"),
            binds: vec![Bind { source: plan.state_dir.join("firewall.nft"), target: RULES.into(), read_only: true }],
            network: format!("container:{agent}"),
            read_only_root: true,
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["NET_ADMIN".into()],
            security_opt: vec!["no-new-privileges".into()],
            ..Default::default()
        };
        let id = self.engine.create_container(&spec).await?;
        ledger.record(Undo::RemoveContainer { id: id.clone(), name: spec.name.clone(), grace_secs: 0 })?;
        self.engine.start(&id).await?;
        let code = tokio::time::timeout(Duration::from_secs(30), self.engine.wait(&id))
            .await
            .context("the firewall helper did not finish within 30 s")??;
        if code != 0 {
            let out = self.engine.output(&id).await.unwrap_or_default();
            bail!("installing the agent's firewall failed (exit {code}): {}", out.trim());
        }
        self.engine.remove_container(&id).await
    }

    async fn run(&self, plan: &BottlePlan, prepared: &Prepared, agent: &str, io: ExecIo) -> anyhow::Result<i64> {
        let (uid, gid) = prepared.user;
        let spec = ExecSpec {
            cmd: plan.agent.command.clone(),
            user: Some(format!("{uid}:{gid}")),
            working_dir: Some(provision::HOME.into()),
            io,
        };
        Ok(self.engine.exec(agent, &spec).await?.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_users() {
        let passwd = "root:x:0:0::/root:/bin/sh\nagent:x:1001:1002::/home/agent:/bin/sh\n";
        assert_eq!(image_user(None, passwd).unwrap(), None);
        assert_eq!(image_user(Some(""), passwd).unwrap(), None);
        assert_eq!(image_user(Some("root"), passwd).unwrap(), None);
        assert_eq!(image_user(Some("0"), passwd).unwrap(), None);
        assert_eq!(image_user(Some("agent"), passwd).unwrap(), Some((1001, 1002)));
        assert_eq!(image_user(Some("agent:5"), passwd).unwrap(), Some((1001, 5)));
        assert_eq!(image_user(Some("1234"), passwd).unwrap(), Some((1234, 1234)));
        assert!(image_user(Some("nobody-here"), passwd).is_err());
    }

    #[test]
    fn build_context_is_deterministic_and_names_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        std::fs::write(dir.path().join("run.sh"), "echo hi\n").unwrap();
        let (tar1, d1) = build_context(&dir.path().join("agent.Dockerfile"), dir.path()).unwrap();
        let (tar2, d2) = build_context(&dir.path().join("agent.Dockerfile"), dir.path()).unwrap();
        assert_eq!((tar1.clone(), d1.clone()), (tar2, d2));
        let names: Vec<String> = tar::Archive::new(tar1.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "run.sh"]);
        std::fs::write(dir.path().join("run.sh"), "echo changed\n").unwrap();
        assert_ne!(build_context(&dir.path().join("agent.Dockerfile"), dir.path()).unwrap().1, d1);
    }
}
