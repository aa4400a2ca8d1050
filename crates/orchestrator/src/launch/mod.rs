//! Launch and teardown: the one ordered sequence that turns a [`BottlePlan`] into a running,
//! sealed bottle, and its undo.
//!
//! ```text
//! state → keys → images → networks → bundle ‖ (agent → firewall) → ready → run
//! ```
//!
//! Every step that leaves something behind records how to undo it in the [`Ledger`] before the
//! launch moves on; teardown replays the ledger in reverse, then sweeps anything still carrying
//! the bottle's label (an object whose creation was interrupted before it could be recorded), and
//! reports every error it met rather than stopping at the first. Provisioned deploy keys are
//! revoked last, whatever else failed: a stranded key is what the operator must hear about.

pub mod facts;
mod files;
pub mod ledger;
pub mod owner;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::consts::{label, port};

pub use files::{Owners, random_token};
use ledger::{Ledger, Undo};
pub use secrets::Secrets;

use crate::agent::{AgentEnv, AgentRuntime, Prepared, Progress};
use crate::engine::{Bind, ContainerSpec, Engine, EngineError, ExecIo, NetworkSpec};
use crate::forge::ForgeClient;
use crate::plan::provision::{self, Endpoints, Ports};
use crate::plan::{BottlePlan, Link, Reader};
use crate::vmm::Vmm;

/// The launch steps, in order (the plan lists them; `--timings` reports each).
pub const STEPS: [&str; 9] = ["state", "keys", "images", "networks", "bundle", "agent", "firewall", "ready", "run"];

/// How long the bundle gets to drain on teardown before it is killed.
pub const BUNDLE_GRACE: Duration = Duration::from_secs(3);
/// How long the bundle's daemons get to say they are listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Step durations, printed as JSON lines with `--timings`.
#[derive(Default)]
pub struct Timings {
    print: bool,
    steps: Mutex<Vec<(String, Duration)>>,
}

impl Timings {
    pub fn new(print: bool) -> Timings {
        Timings { print, steps: Mutex::new(Vec::new()) }
    }

    pub fn record(&self, step: &str, took: Duration) {
        if self.print {
            eprintln!("{}", serde_json::json!({"step": step, "ms": took.as_secs_f64() * 1000.0}));
        }
        self.steps.lock().expect("timings lock").push((step.to_string(), took));
    }

    /// Runs `fut` as step `name`.
    pub async fn step<T>(&self, name: &str, fut: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = fut.await;
        self.record(name, start.elapsed());
        out
    }

    pub fn steps(&self) -> Vec<(String, Duration)> {
        self.steps.lock().expect("timings lock").clone()
    }
}

/// Where the sidecar image's daemons come from.
pub struct Sidecar {
    pub bin_dir: PathBuf,
    pub base_image: String,
    pub cache_dir: PathBuf,
}

/// What a launch works with.
pub struct Launch<'a> {
    pub engine: &'a dyn Engine,
    pub runtime: &'a dyn AgentRuntime,
    pub plan: &'a BottlePlan,
    pub timings: &'a Timings,
    pub progress: Progress<'a>,
    pub euid: u32,
}

/// A launched bottle, ready for its agent's command.
pub struct Ready {
    pub agent: String,
    pub prepared: Prepared,
}

/// The `state` step: the state and queue directories, the ledger (whose first lines remove
/// them again), the bottle's record, and every file of the plan. Returns the open ledger.
pub fn begin(plan: &BottlePlan, owner: &str, created_at: &str, secrets: &Secrets, euid: u32) -> anyhow::Result<Ledger> {
    let owners = Owners::for_plan(plan, euid);
    for dir in [plan.state_dir.parent(), plan.queue_dir.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Created, not reused: a slug is used once.
    std::fs::create_dir(&plan.state_dir).with_context(|| format!("creating {}", plan.state_dir.display()))?;
    std::fs::set_permissions(&plan.state_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let ledger = Ledger::create(&plan.state_dir.join("ledger.jsonl"))?;
    ledger.record(Undo::RemoveDir { path: plan.state_dir.clone() })?;
    files::make_dir(&plan.queue_dir, 0o700, Reader::Bundle, &owners)?;
    ledger.record(Undo::RemoveDir { path: plan.queue_dir.clone() })?;
    ledger.record(Undo::KeepAudit {
        from: plan.state_dir.join("log/egress-audit.jsonl"),
        to: plan.home.join("audit.jsonl"),
        bottle: plan.slug.clone(),
    })?;
    owner::Record::for_plan(plan, owner, created_at).write(&plan.state_dir)?;
    common::atomic::write_json(&plan.state_dir.join("plan.json"), plan)?;
    let ca = files::mint_ca(&plan.slug)?;
    files::write_state(plan, &ca, secrets.supervise_token.as_ref(), &owners)?;
    Ok(ledger)
}

/// Everything after `state` up to an agent ready for its command: images, networks, the bundle
/// and the sealed agent, in parallel where they do not depend on each other.
pub async fn up(l: &Launch<'_>, ledger: &Ledger, secrets: &Secrets, sidecar: &Sidecar) -> Result<Ready, EngineError> {
    let plan = l.plan;
    let t = l.timings;
    t.step("keys", provision_keys(l, ledger, secrets)).await?;
    let prepared = t
        .step("images", async {
            let mut lines = |line: String| (l.progress)(format!("  {line}"));
            let side = async {
                let built = crate::image::ensure(
                    l.engine,
                    &sidecar.bin_dir,
                    &sidecar.base_image,
                    Some(&sidecar.cache_dir),
                    &mut lines,
                )
                .await?;
                anyhow::ensure!(
                    built.tag == plan.bundle.image,
                    "the sidecar image is {} but the plan was made for {} (the daemon binaries changed during launch?)",
                    built.tag,
                    plan.bundle.image
                );
                Ok(())
            };
            let (side, prepared) = tokio::join!(side, l.runtime.prepare(plan, ledger, l.progress));
            side?;
            let prepared = prepared?;
            let ca = std::fs::read_to_string(plan.state_dir.join("ca/ca.crt"))?;
            files::write_ca_bundle(plan, &prepared.system_roots, &ca)?;
            anyhow::Ok(prepared)
        })
        .await?;
    t.step("networks", async {
        let spec = |n: &crate::plan::NetworkPlan, gateway: Option<std::net::Ipv4Addr>, role: &str| NetworkSpec {
            name: n.name.clone(),
            internal: n.internal,
            subnet: n.subnet,
            gateway,
            labels: role_labels(plan, role),
        };
        let egress = spec(&plan.network.egress, None, "egress");
        match &plan.network.link {
            Link::Internal { network: n, gateway, .. } => {
                let internal = spec(n, Some(*gateway), "internal");
                let (a, b) = tokio::join!(network(l.engine, &internal, ledger), network(l.engine, &egress, ledger));
                a.and(b)
            }
            Link::Loopback { .. } => network(l.engine, &egress, ledger).await,
        }
    })
    .await?;
    let bundle = async {
        let start = Instant::now();
        let id = bundle(l, ledger, secrets).await?;
        t.record("bundle", start.elapsed());
        anyhow::Ok(id)
    };
    let prepared = &prepared;
    let agent = |endpoints: Endpoints| async move {
        let start = Instant::now();
        files::write_endpoint_files(
            plan,
            &endpoints,
            secrets.supervise_token.as_ref(),
            &Owners::for_plan(plan, l.euid),
        )?;
        let env = agent_env(plan, secrets, &endpoints);
        let id = l.runtime.create(plan, prepared, &env, ledger).await?;
        t.record("agent", start.elapsed());
        t.step("firewall", l.runtime.seal(plan, &id, ledger)).await?;
        anyhow::Ok(id)
    };
    let (bundle_id, agent) = match plan.network.endpoints() {
        // On its own network the bundle's address is known: bundle and agent start together.
        Some(endpoints) => tokio::try_join!(bundle, agent(endpoints))?,
        // On a loopback link the agent is told the ports the engine picked.
        None => {
            let id = bundle.await?;
            let endpoints = published_endpoints(l, &id).await?;
            let agent = agent(endpoints).await?;
            (id, agent)
        }
    };
    t.step("ready", async {
        let needles: Vec<String> = plan.bundle.daemons.iter().map(|d| format!("[{d}] listening on")).collect();
        l.engine.wait_for_output(&bundle_id, &needles, READY_TIMEOUT).await
    })
    .await?;
    Ok(Ready { agent, prepared: prepared.clone() })
}

/// The `keys` step: for each provisioned repository, a fresh ed25519 key registered on its
/// forge; the key's forge id is in the ledger before anything else happens, then the private
/// half is written for the bundle.
async fn provision_keys(l: &Launch<'_>, ledger: &Ledger, secrets: &Secrets) -> anyhow::Result<()> {
    let owners = Owners::for_plan(l.plan, l.euid);
    for k in &l.plan.keys {
        let token = secrets
            .forge_token(&k.forge.token_ref)
            .with_context(|| format!("the forge token {} was not read", k.forge.token_ref))?;
        let forge = ForgeClient::new(k.forge.kind, &k.forge.api, &k.forge.repo, token.clone())?;
        let pair = crate::forge::mint_key(&k.title)?;
        // Before the forge can answer: a launch killed while it does still finds the key by title.
        ledger.record(Undo::RevokeKeyTitled {
            kind: k.forge.kind,
            api: k.forge.api.clone(),
            repo: k.forge.repo.clone(),
            title: k.title.clone(),
            token_ref: k.forge.token_ref.clone(),
        })?;
        let id = forge.create_key(&k.title, &pair.public).await?;
        ledger.record(Undo::RevokeKey {
            kind: k.forge.kind,
            api: k.forge.api.clone(),
            repo: k.forge.repo.clone(),
            id,
            title: k.title.clone(),
            token_ref: k.forge.token_ref.clone(),
        })?;
        (l.progress)(format!("deploy key {id} (\"{}\") registered on {} for {}", k.title, k.forge.api, k.forge.repo));
        files::write(
            &l.plan.state_dir.join(&k.file),
            pair.private_openssh.expose().as_bytes(),
            Reader::Bundle,
            &owners,
        )?;
    }
    Ok(())
}

async fn network(engine: &dyn Engine, spec: &NetworkSpec, ledger: &Ledger) -> Result<(), EngineError> {
    let id = engine.create_network(spec).await?;
    ledger.record(Undo::RemoveNetwork { id, name: spec.name.clone() })?;
    Ok(())
}

fn role_labels(plan: &BottlePlan, role: &str) -> std::collections::BTreeMap<String, String> {
    let mut l = plan.labels.clone();
    l.insert(label::ROLE.into(), role.into());
    l
}

/// The bundle: created on the egress network, joined to the internal one at its pinned
/// address, started. Token values go only into its environment.
async fn bundle(l: &Launch<'_>, ledger: &Ledger, secrets: &Secrets) -> anyhow::Result<String> {
    let b = &l.plan.bundle;
    let mut env: Vec<(String, String)> =
        b.env.iter().filter_map(|v| Some((v.name.clone(), v.value.clone()?))).collect();
    env.extend(secrets.bundle.iter().map(|(k, v)| (k.clone(), v.expose().to_string())));
    let (uid, gid) = b.user.split_once(':').unwrap_or(("0", "0"));
    let spec = ContainerSpec {
        name: b.container.clone(),
        image: b.image.clone(),
        user: Some(b.user.clone()),
        env,
        labels: role_labels(l.plan, "bundle"),
        binds: b
            .mounts
            .iter()
            .map(|m| Bind { source: m.source.clone(), target: m.target.clone(), read_only: m.read_only })
            .collect(),
        // `exec`: git runs the gate's pre-receive hook from its data directory (the engine's
        // tmpfs default is noexec, and git skips a hook it cannot execute).
        tmpfs: b
            .tmpfs
            .iter()
            .map(|t| (t.clone(), format!("rw,exec,nosuid,nodev,mode=0700,uid={uid},gid={gid}")))
            .collect(),
        network: l.plan.network.egress.name.clone(),
        publish: b.publish.iter().flat_map(|p| p.ports.iter().map(|port| (*port, p.ip))).collect(),
        extra_hosts: b.extra_hosts.clone(),
        read_only_root: b.read_only_root,
        cap_drop: vec!["ALL".into()],
        security_opt: vec!["no-new-privileges".into()],
        ..Default::default()
    };
    let id = l.engine.create_container(&spec).await?;
    ledger.record(Undo::RemoveContainer {
        id: id.clone(),
        name: spec.name.clone(),
        grace_secs: BUNDLE_GRACE.as_secs(),
    })?;
    if let Link::Internal { network, bundle_ip, .. } = &l.plan.network.link {
        l.engine.connect(&id, &network.name, Some(*bundle_ip)).await?;
    }
    l.engine.start(&id).await?;
    Ok(id)
}

/// Where the agent reaches a bundle whose ports are published on the bottle's loopback
/// address: the host ports the engine picked, each checked to be on that address.
async fn published_endpoints(l: &Launch<'_>, bundle: &str) -> anyhow::Result<Endpoints> {
    let Some(publish) = &l.plan.bundle.publish else { anyhow::bail!("the plan publishes no bundle port") };
    let published = l.engine.published_ports(bundle).await?;
    let port = |p: u16| match published.get(&p) {
        Some((ip, host)) if *ip == publish.ip => Ok(*host),
        Some((ip, _)) => Err(anyhow::anyhow!("the bundle's port {p} was published on {ip}, not {}", publish.ip)),
        None => Err(anyhow::anyhow!("the engine did not publish the bundle's port {p}")),
    };
    let ports =
        Ports { egress: port(port::EGRESS)?, git_gate: port(port::GIT_GATE)?, supervise: port(port::SUPERVISE)? };
    Ok(Endpoints::at(publish.ip, ports))
}

/// The agent's environment: the plan's values (those that name a bundle port from
/// `endpoints`), then the secrets read at launch.
fn agent_env(plan: &BottlePlan, secrets: &Secrets, endpoints: &Endpoints) -> AgentEnv {
    let derived = provision::endpoint_env_names();
    let now = provision::agent_env(endpoints, true, true);
    let public = plan
        .agent
        .env
        .iter()
        .filter_map(|v| {
            let value = if derived.contains(&v.name) {
                now.iter().find(|(k, _)| *k == v.name).map(|(_, val)| val.clone())
            } else {
                v.value.clone()
            };
            Some((v.name.clone(), value?))
        })
        .collect();
    let mut secret: Vec<(String, common::Secret)> = Vec::new();
    if let Some(t) = &secrets.supervise_token {
        secret.push((provision::SUPERVISE_TOKEN_ENV.into(), t.clone()));
    }
    secret.extend(secrets.agent.iter().map(|(k, v)| (k.clone(), v.clone())));
    AgentEnv { public, secret }
}

/// Runs the agent's command.
pub async fn run(l: &Launch<'_>, ready: &Ready, io: ExecIo) -> anyhow::Result<i64> {
    l.timings.step("run", l.runtime.run(l.plan, &ready.prepared, &ready.agent, io)).await
}

/// Undoes `entries` in reverse, then removes whatever else carries the bottle's label, then —
/// last, whatever failed before — revokes provisioned deploy keys. Every error is collected;
/// none stops the rest.
///
/// Consecutive undos of the same kind (the containers, then the networks) run concurrently:
/// nothing among them depends on another, and stopping the bundle while the agent is removed
/// halves the wait. `tokens` gives a forge token by its host variable.
pub async fn teardown(
    engine: &dyn Engine,
    vmm: Option<&dyn Vmm>,
    tokens: Tokens<'_>,
    slug: &str,
    entries: &[Undo],
    timings: &Timings,
) -> Vec<String> {
    let start = Instant::now();
    let mut errors = Vec::new();
    let (keys, rest): (Vec<&Undo>, Vec<&Undo>) =
        entries.iter().rev().partition(|u| matches!(u, Undo::RevokeKey { .. } | Undo::RevokeKeyTitled { .. }));
    for group in rest.chunk_by(|a, b| std::mem::discriminant(*a) == std::mem::discriminant(*b)) {
        let t = Instant::now();
        let results = futures_util::future::join_all(group.iter().map(|u| undo_one(engine, vmm, u))).await;
        timings.record(&format!("teardown: {}", group[0].kind()), t.elapsed());
        for (undo, r) in group.iter().zip(results) {
            if let Err(e) = r {
                errors.push(format!("{}: {e:#}", undo.describe()));
            }
        }
    }
    let t = Instant::now();
    errors.extend(sweep(engine, vmm, slug).await);
    timings.record("teardown: sweep", t.elapsed());
    let t = Instant::now();
    // A key whose id was recorded is deleted by id; its title record is then only a fallback.
    let by_id: Vec<&str> = keys
        .iter()
        .filter_map(|u| match u {
            Undo::RevokeKey { title, .. } => Some(title.as_str()),
            _ => None,
        })
        .collect();
    for undo in keys {
        if matches!(undo, Undo::RevokeKeyTitled { title, .. } if by_id.contains(&title.as_str())) {
            continue;
        }
        if let Err(e) = revoke(undo, tokens).await {
            errors.push(format!("{}: {e:#}", undo.describe()));
        }
    }
    timings.record("teardown: revoke_key", t.elapsed());
    timings.record("teardown", start.elapsed());
    errors
}

/// A forge token by its host variable name.
pub type Tokens<'a> = &'a (dyn Fn(&str) -> Option<common::Secret> + Send + Sync);

/// Deletes a provisioned key (by id, or found by its title); a 404 counts as revoked; any
/// failure carries the manual step.
async fn revoke(undo: &Undo, tokens: Tokens<'_>) -> anyhow::Result<()> {
    let (kind, api, repo, id, title, token_ref) = match undo {
        Undo::RevokeKey { kind, api, repo, id, title, token_ref } => (kind, api, repo, Some(*id), title, token_ref),
        Undo::RevokeKeyTitled { kind, api, repo, title, token_ref } => (kind, api, repo, None, title, token_ref),
        _ => return Ok(()),
    };
    let Some(token) = tokens(token_ref) else {
        anyhow::bail!(
            "the forge token variable {token_ref} is not set, so deploy key \"{title}\" of {repo} may still be \
             registered: set it and run `bot-bottle cleanup`, or delete the key by hand: DELETE \
             {}/repos/{repo}/keys/{}",
            api.trim_end_matches('/'),
            id.map(|i| i.to_string()).unwrap_or_else(|| "<its id>".into())
        );
    };
    let forge = ForgeClient::new(*kind, api, repo, token)?;
    let id = match id {
        Some(id) => id,
        None => match forge.find_key(title).await? {
            Some(id) => id,
            None => return Ok(()), // never registered, or already gone
        },
    };
    forge.delete_key(id).await.map(|_| ()).map_err(|e| anyhow::anyhow!("{e}; {}", forge.manual_step(id, title)))
}

async fn undo_one(engine: &dyn Engine, vmm: Option<&dyn Vmm>, undo: &Undo) -> anyhow::Result<()> {
    match undo {
        Undo::DeleteMachine { name } => {
            let vmm = vmm.with_context(|| format!("machine {name} needs smolvm to delete, and none was found"))?;
            // A stop that fails (the machine never started) does not keep the delete from trying.
            let _ = vmm.stop(name).await;
            vmm.delete(name).await
        }
        Undo::RemoveDir { path } => remove_dir(path),
        Undo::RemoveNetwork { id, .. } => engine.remove_network(id).await,
        Undo::RemoveContainer { id, grace_secs, .. } => {
            if *grace_secs > 0 {
                engine.stop(id, Duration::from_secs(*grace_secs)).await?;
            }
            engine.remove_container(id).await
        }
        Undo::KeepAudit { from, to, bottle } => keep_audit(from, to, bottle),
        Undo::RevokeKey { .. } | Undo::RevokeKeyTitled { .. } => {
            unreachable!("keys are revoked after everything else")
        }
    }
}

fn remove_dir(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Appends the bundle's audit lines to the home's audit log, so they outlive the bottle.
fn keep_audit(from: &Path, to: &Path, bottle: &str) -> anyhow::Result<()> {
    let lines = match std::fs::read(from) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
    };
    if lines.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(to)
        .with_context(|| format!("opening {}", to.display()))?;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        // Each line is already one JSON object from egress-proxy; tag where it came from.
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.entry("bottle").or_insert(bottle.into());
                m.insert("source".into(), "egress".into());
                out.extend(serde_json::to_vec(&m)?);
            }
            _ => out.extend(serde_json::to_vec(
                &serde_json::json!({"bottle": bottle, "source": "egress", "raw": String::from_utf8_lossy(line)}),
            )?),
        }
        out.push(b'\n');
    }
    std::io::Write::write_all(&mut f, &out).with_context(|| format!("writing {}", to.display()))
}

/// Removes machines, containers and networks labelled with `slug` that are still there.
pub async fn sweep(engine: &dyn Engine, vmm: Option<&dyn Vmm>, slug: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(vmm) = vmm {
        match vmm.list().await {
            Ok(list) => {
                for m in list.into_iter().filter(|m| m.labels.get(label::SLUG).map(String::as_str) == Some(slug)) {
                    let _ = vmm.stop(&m.name).await;
                    if let Err(e) = vmm.delete(&m.name).await {
                        errors.push(format!("delete machine {}: {e:#}", m.name));
                    }
                }
            }
            Err(e) => errors.push(format!("listing machines: {e:#}")),
        }
    }
    let filter = format!("{}={slug}", label::SLUG);
    match engine.containers(&filter).await {
        Ok(list) => {
            for c in list {
                if let Err(e) = engine.remove_container(&c.id).await {
                    errors.push(format!("remove container {}: {e:#}", c.name));
                }
            }
        }
        Err(e) => errors.push(format!("listing containers: {e:#}")),
    }
    match engine.networks().await {
        Ok(list) => {
            for n in list.into_iter().filter(|n| n.object.labels.get(label::SLUG).map(String::as_str) == Some(slug)) {
                if let Err(e) = engine.remove_network(&n.object.id).await {
                    errors.push(format!("remove network {}: {e:#}", n.object.name));
                }
            }
        }
        Err(e) => errors.push(format!("listing networks: {e:#}")),
    }
    errors
}

#[cfg(test)]
mod tests;
