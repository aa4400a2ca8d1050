//! The launch plan: manifests + host facts → a [`BottlePlan`], with no side effects. This is
//! what `start --dry-run` prints and what `launch` executes, step by step.
//!
//! A plan never holds a secret value: credentials appear as the env var *names* they travel
//! under and the host variable they are read from at launch; minted material (CA, supervise
//! token) is described, not included.

pub mod net;
pub mod provision;
mod render;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use common::consts::{env, label, path, port};
use common::formats::git_gate::is_ssh_url;
use serde::{Deserialize, Serialize};

use crate::manifest::types::Template;
use crate::manifest::{Loc, Problem, Resolved};
pub use net::Subnet;
pub use render::text;

/// Where the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Docker,
    Smolvm,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Docker => "docker",
            Backend::Smolvm => "smolvm",
        })
    }
}

/// What the plan needs to know about the host. Gathered by `launch::facts` (reads only).
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    pub home: PathBuf,
    /// Random part of the slug (6 hex).
    pub nonce: String,
    /// RFC 3339.
    pub now: String,
    /// The launching process, `<pid>:<start time>`.
    pub owner: String,
    /// Effective uid/gid of the operator.
    pub uid: u32,
    pub gid: u32,
    /// Subnets the engine's networks and the host's routes already use.
    pub used_subnets: Vec<Subnet>,
    /// What `host-gateway` means to the engine (its default bridge gateway).
    pub host_gateway: Option<Ipv4Addr>,
    /// The sidecar image's tag for the binaries at hand.
    pub sidecar_image: String,
    /// The engine offers gVisor's `runsc`.
    pub runsc: bool,
    /// Host env vars that are set (names only).
    pub env_present: Vec<String>,
    /// This machine's name (in provisioned keys' titles, so strays are recognisable).
    pub hostname: String,
    /// Host env vars whose value is shaped like an OAuth token (names only): a provider
    /// template sends those as a bearer token.
    pub oauth_vars: Vec<String>,
    /// Loopback addresses other bottles of this home hold (the smolvm link).
    pub used_loopback: Vec<Ipv4Addr>,
    /// Where only configured aliases answer on loopback (macOS): the pool's addresses `lo0`
    /// has. `None` where every 127/8 address does (Linux).
    pub loopback_aliases: Option<Vec<Ipv4Addr>>,
}

/// What the operator asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub label: Option<String>,
    pub backend: Option<Backend>,
    pub headless: bool,
    pub prompt: Option<String>,
    /// smolvm's `--state-dir` (`BOT_BOTTLE_SMOLVM_STATE_DIR`), when not its default.
    pub smolvm_state_dir: Option<PathBuf>,
}

/// The whole launch, described.
#[derive(Debug, Clone, Serialize)]
pub struct BottlePlan {
    pub slug: String,
    pub label: String,
    pub backend: Backend,
    pub home: PathBuf,
    pub state_dir: PathBuf,
    pub queue_dir: PathBuf,
    pub manifests: Manifests,
    /// Labels every object of this bottle carries.
    pub labels: BTreeMap<String, String>,
    pub network: NetPlan,
    pub bundle: BundlePlan,
    pub agent: AgentPlan,
    /// Files written into `state_dir` (paths relative to it).
    pub files: Vec<FilePlan>,
    /// Every secret value the launch reads, by name and source.
    pub secrets: Vec<SecretPlan>,
    /// Deploy keys minted for this bottle and registered on forges (revoked at teardown).
    pub keys: Vec<KeyPlan>,
    /// The launch steps, in order; teardown undoes them in reverse.
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifests {
    pub bottles: Vec<String>,
    pub files: Vec<PathBuf>,
    pub agent: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetPlan {
    /// The bundle's way out; the agent never joins it.
    pub egress: NetworkPlan,
    /// How the agent reaches its bundle — and nothing else.
    pub link: Link,
}

/// The agent's one way to its bundle.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Link {
    /// Docker: an `--internal` network of agent and bundle only, on a pinned subnet.
    Internal { network: NetworkPlan, gateway: Ipv4Addr, bundle_ip: Ipv4Addr, agent_ip: Ipv4Addr },
    /// smolvm: the bundle's ports published on a loopback address of this bottle's own, at
    /// random host ports looked up once the bundle runs; the VM may reach that address only.
    Loopback { ip: Ipv4Addr },
}

impl NetPlan {
    /// The bundle's addresses as the agent reaches them, when the plan already knows them
    /// (published ports are only known once the bundle runs).
    pub fn endpoints(&self) -> Option<provision::Endpoints> {
        match &self.link {
            Link::Internal { bundle_ip, .. } => Some(provision::Endpoints::on_ip(*bundle_ip)),
            Link::Loopback { .. } => None,
        }
    }

    /// The address the agent knows the bundle by.
    pub fn bundle_address(&self) -> Ipv4Addr {
        match &self.link {
            Link::Internal { bundle_ip, .. } => *bundle_ip,
            Link::Loopback { ip } => *ip,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkPlan {
    pub name: String,
    pub internal: bool,
    /// Pinned subnet; `None` lets the engine choose.
    pub subnet: Option<Subnet>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BundlePlan {
    pub container: String,
    pub image: String,
    pub user: String,
    pub daemons: Vec<String>,
    /// Environment: values shown unless secret (then only the name; see `secrets`).
    pub env: Vec<EnvVar>,
    pub mounts: Vec<MountPlan>,
    pub tmpfs: Vec<String>,
    /// `NAME:IP` or `NAME:host-gateway` entries of the bundle's /etc/hosts.
    pub extra_hosts: Vec<String>,
    pub read_only_root: bool,
    /// The bundle's ports published on the bottle's loopback address (the smolvm link).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publish>,
}

/// Bundle ports published on a host address.
#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    pub ip: Ipv4Addr,
    /// The bundle's own ports.
    pub ports: Vec<u16>,
    /// Where on the host they land.
    pub host_ports: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentPlan {
    pub image: AgentImage,
    /// `uid:gid`; `None`: the image's user unless that is root, else 1000:1000.
    pub user: Option<String>,
    pub command: Vec<String>,
    /// Values that depend on where the bundle is reached are recomputed at launch; on a
    /// loopback link they are shown as `<published at launch>`.
    pub env: Vec<EnvVar>,
    pub mounts: Vec<MountPlan>,
    /// The image's system trust bundles among these are replaced by the merged bundle.
    pub system_ca_bundles: Vec<String>,
    pub interactive: bool,
    /// What holds the agent.
    pub sandbox: Sandbox,
}

/// What holds the agent, per backend.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Sandbox {
    /// A container on the internal network only, sealed by nftables.
    Container(ContainerSandbox),
    /// A libkrun microVM whose egress allowlist is the bundle's loopback address alone.
    Vm(VmSandbox),
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerSandbox {
    pub container: String,
    pub tmpfs: Vec<String>,
    pub read_only_root: bool,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    /// gVisor when the engine has it.
    pub runtime: Option<String>,
    /// Every packet the agent sends goes here or nowhere.
    pub firewall: FirewallPlan,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmSandbox {
    /// The smolvm machine's name.
    pub machine: String,
    /// The one CIDR the VM may reach: the bottle's loopback address.
    pub allow_cidr: String,
    /// `host:guest[:ro]` volumes (the agent's read-only `/etc/bot-bottle/`, skills).
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// `smolvm machine create` as it will run: the environment is added at launch, its
    /// secrets as `--secret-env` references only.
    pub flags: Vec<String>,
    /// smolvm's state directory, when not its default.
    pub state_dir: Option<PathBuf>,
}

impl AgentPlan {
    /// The container sandbox (the Docker backend's plans have one).
    pub fn container(&self) -> Option<&ContainerSandbox> {
        match &self.sandbox {
            Sandbox::Container(c) => Some(c),
            Sandbox::Vm(_) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AgentImage {
    /// An image the engine has.
    Reference { image: String },
    /// Built from a Dockerfile, tagged by the hash of its context.
    Dockerfile { dockerfile: PathBuf, context: PathBuf },
    /// A provider template's image (`docker/agents/<template>/Dockerfile`, compiled in).
    Template { template: Template },
}

#[derive(Debug, Clone, Serialize)]
pub struct FirewallPlan {
    pub container: String,
    pub allow: Vec<String>,
    /// The nftables ruleset, as installed in the agent's network namespace.
    pub ruleset: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    /// `None` for a secret or a value read at launch.
    pub value: Option<String>,
    /// Where a value not shown comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl EnvVar {
    fn shown(name: &str, value: impl Into<String>) -> EnvVar {
        EnvVar { name: name.to_string(), value: Some(value.into()), source: None }
    }
    fn hidden(name: &str, source: impl Into<String>) -> EnvVar {
        EnvVar { name: name.to_string(), value: None, source: Some(source.into()) }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MountPlan {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Who must be able to read a file in the state directory.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reader {
    /// The bundle's user only (0600 files, 0700 directories).
    Bundle,
    /// Anyone (the agent's uid is the image's): nothing secret.
    Agent,
    /// bot-bottle itself.
    Host,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    /// Relative to the state directory.
    pub path: PathBuf,
    pub reader: Reader,
    pub content: FileContent,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileContent {
    /// Written as shown.
    Text { text: String },
    /// The bottle CA's certificate, minted at launch.
    CaCert,
    /// The bottle CA's private key, minted at launch.
    CaKey,
    /// A copy of a host file (a deploy key, an upstream CA).
    CopyOf { source: PathBuf },
    /// A fresh random token for this bottle's supervise server.
    SuperviseToken,
    /// `mcp.json` pointing at supervise with the token (written once the bundle's address is
    /// known).
    McpConfig,
    /// The agent's git identity and the rewrites of every upstream URL to the gate (written once
    /// the gate's address is known).
    GitConfig { name: String, email: String, repos: Vec<(String, String)> },
    /// The image's system roots plus the bottle CA (read from the image at launch).
    CaBundle,
    /// A deploy key minted at launch (the `keys` step writes it).
    ProvisionedKey { repo: String },
}

/// A deploy key minted at launch for one repository and registered on its forge.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyPlan {
    /// The gate's name for the repository.
    pub repo: String,
    pub forge: crate::manifest::types::ForgeSpec,
    /// `bot-bottle:<slug>:<host>`.
    pub title: String,
    /// The private key's file, relative to the state directory.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SecretPlan {
    /// The variable it travels under (in the bundle or the agent).
    pub name: String,
    /// `host:VAR` or `prompt`.
    pub source: String,
    /// `bundle` or `agent`.
    pub to: String,
    /// What it is for.
    pub purpose: String,
}

/// Problems that stop a plan (each names where it comes from).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render_problems(.0))]
pub struct PlanError(pub Vec<Problem>);

fn render_problems(p: &[Problem]) -> String {
    crate::manifest::ManifestError(p.to_vec()).to_string().replacen("in the manifests", "in the launch plan", 1)
}

/// In-bundle places of things the orchestrator adds.
pub mod bundle_path {
    pub const SUPERVISE_DIR: &str = "/etc/bot-bottle/supervise";
    pub const SUPERVISE_TOKEN: &str = "/etc/bot-bottle/supervise/token";
    pub const UPSTREAM_CA: &str = "/etc/bot-bottle/egress/upstream-ca.pem";
    pub const LOG_DIR: &str = "/var/log/bot-bottle";
    pub const AUDIT_LOG: &str = "/var/log/bot-bottle/egress-audit.jsonl";
    /// The sidecar image's HOME.
    pub const HOME: &str = "/var/lib/bot-bottle";
}

/// The sidecar image's user, when bot-bottle runs as root (the image's fixed uid).
pub const BUNDLE_UID: u32 = 10001;

/// The bottle's slug: a readable name plus the random nonce.
pub fn slug(name: &str, nonce: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    s.truncate(32);
    let s = s.trim_end_matches('-');
    if s.is_empty() { format!("bottle-{nonce}") } else { format!("{s}-{nonce}") }
}

/// A short stable id of a home directory (the `bot-bottle.home` label).
pub fn home_id(home: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}

/// Computes the plan. Pure: the same manifests and facts give the same plan.
pub fn plan(r: &Resolved, facts: &HostFacts, opts: &Options) -> Result<BottlePlan, PlanError> {
    let mut problems = Vec::new();
    let backend = opts.backend.unwrap_or(Backend::Docker);
    let last_file = r.files.last().cloned().unwrap_or_default();
    let whole = |key: &str| Loc { file: last_file.clone(), line: None, key: key.to_string() };
    let name = opts
        .label
        .clone()
        .or_else(|| r.agent.as_ref().and_then(|a| a.file.file_stem()).map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| r.bottles.join("+"));
    let slug = slug(&name, &facts.nonce);
    let label = name;
    let home = facts.home.clone();
    let state_dir = home.join("state").join(&slug);
    let queue_dir = home.join("queue").join(&slug);
    let labels = BTreeMap::from([
        (label::SLUG.to_string(), slug.clone()),
        (label::HOME.to_string(), home_id(&home)),
        (label::OWNER.to_string(), facts.owner.clone()),
    ]);

    // Networks.
    let no_room = |what: String| {
        PlanError(vec![Problem {
            at: Loc { file: "bot-bottle start".into(), line: None, key: String::new() },
            message: what,
        }])
    };
    let link = match backend {
        Backend::Docker => {
            let Some(subnet) = net::choose(&facts.used_subnets, &slug) else {
                return Err(no_room(format!(
                    "no free /{} left in {} for the bottle's network",
                    net::BOTTLE_PREFIX,
                    net::POOL
                )));
            };
            Link::Internal {
                network: NetworkPlan {
                    name: format!("bot-bottle-{slug}-internal"),
                    internal: true,
                    subnet: Some(subnet),
                },
                gateway: subnet.host(1),
                bundle_ip: subnet.host(2),
                agent_ip: subnet.host(3),
            }
        }
        Backend::Smolvm => {
            let chosen = match &facts.loopback_aliases {
                None => net::choose_loopback(&facts.used_loopback, &slug),
                Some(aliases) => net::choose_alias(aliases, &facts.used_loopback),
            };
            let Some(ip) = chosen else {
                return Err(no_room(match &facts.loopback_aliases {
                    None => format!("no free loopback address left in {}", net::LOOPBACK_POOL),
                    Some(_) => net::alias_hint(&facts.used_loopback),
                }));
            };
            Link::Loopback { ip }
        }
    };
    let network = NetPlan {
        egress: NetworkPlan { name: format!("bot-bottle-{slug}-egress"), internal: false, subnet: None },
        link,
    };

    // Secrets: one bundle slot per distinct host variable.
    let mut secrets = Vec::new();
    let mut slots: BTreeMap<String, String> = BTreeMap::new();
    let mut routes_json = Vec::new();
    // A provider template (claude, codex): image, command, env, files and the provider's route.
    let template = crate::templates::for_plan(r, facts, opts.headless);
    let template_route = template.as_ref().and_then(|(_, route)| route.clone());
    for (i, route) in r.routes.iter().chain(template_route.iter()).enumerate() {
        let mut v = crate::manifest::route_json(&route.value, 0);
        if let Some(auth) = &route.value.auth {
            let n = slots.len();
            let slot = slots
                .entry(auth.token_ref.clone())
                .or_insert_with(|| format!("{}{n}", env::EGRESS_TOKEN_PREFIX))
                .clone();
            v["auth"]["token_env"] = serde_json::Value::String(slot.clone());
            if !facts.env_present.contains(&auth.token_ref) {
                let key = if i < r.routes.len() { "/auth/token_ref" } else { "/auth_token" };
                problems.push(Problem {
                    at: r.loc_in(route, key),
                    message: format!("the host variable {} is not set", auth.token_ref),
                });
            }
            if !secrets.iter().any(|s: &SecretPlan| s.name == slot) {
                secrets.push(SecretPlan {
                    name: slot,
                    source: format!("host:{}", auth.token_ref),
                    to: "bundle".into(),
                    purpose: format!("credential injected on egress to {} (routes[{i}])", route.value.host),
                });
            }
        }
        routes_json.push(v);
    }
    let routes_doc = serde_json::json!({"version": 1, "log": r.egress_log.unwrap_or(1), "routes": routes_json});

    // The git gate.
    let git_user = r
        .git_user
        .as_ref()
        .map(|u| u.value.clone())
        .unwrap_or(crate::manifest::types::GitUser { name: "agent".into(), email: "agent@bottle.invalid".into() });
    let mut files = Vec::new();
    let mut gate_repos = Vec::new();
    let mut keys = Vec::new();
    for (name, repo) in &r.repos {
        let mut entry = serde_json::json!({"name": name, "url": repo.value.url});
        let key_file = PathBuf::from(format!("git-gate/creds/{name}-key"));
        if let Some(id) = &repo.value.identity {
            files.push(FilePlan {
                path: key_file,
                reader: Reader::Bundle,
                content: FileContent::CopyOf { source: repo.resolve_path(id) },
            });
            entry["identity_file"] = format!("{}/{name}-key", path::GIT_GATE_CREDS).into();
        } else if let (true, Some(forge)) = (repo.value.provisioned_key, &repo.value.forge) {
            if !facts.env_present.contains(&forge.token_ref) {
                problems.push(Problem {
                    at: r.loc_in(repo, "/forge/token_ref"),
                    message: format!("the host variable {} is not set", forge.token_ref),
                });
            }
            secrets.push(SecretPlan {
                name: format!("forge token for {name}"),
                source: format!("host:{}", forge.token_ref),
                to: "bot-bottle".into(),
                purpose: format!("registers and deletes the deploy key of {} on {}", forge.repo, forge.api),
            });
            files.push(FilePlan {
                path: key_file.clone(),
                reader: Reader::Bundle,
                content: FileContent::ProvisionedKey { repo: name.clone() },
            });
            keys.push(KeyPlan {
                repo: name.clone(),
                forge: forge.clone(),
                title: format!("bot-bottle:{slug}:{}", facts.hostname),
                file: key_file,
            });
            entry["identity_file"] = format!("{}/{name}-key", path::GIT_GATE_CREDS).into();
        }
        if let Some(key) = &repo.value.host_key
            && is_ssh_url(&repo.value.url)
        {
            let (kind, b64) = crate::manifest::parse_host_key(key).expect("checked on load");
            let line = format!("{} {kind} {b64}\n", known_hosts_pattern(&repo.value.url));
            files.push(FilePlan {
                path: PathBuf::from(format!("git-gate/creds/{name}-known_hosts")),
                reader: Reader::Bundle,
                content: FileContent::Text { text: line },
            });
            entry["known_hosts_file"] = format!("{}/{name}-known_hosts", path::GIT_GATE_CREDS).into();
        }
        if let Some(push) = &repo.value.push {
            entry["push"] = serde_json::to_value(push).expect("json");
        }
        gate_repos.push(entry);
    }
    let repos_on = !r.repos.is_empty();
    let supervise_on = r.supervise.enabled.unwrap_or(true);

    // The bundle.
    let (bundle_uid, bundle_gid) = if facts.uid == 0 { (BUNDLE_UID, BUNDLE_UID) } else { (facts.uid, facts.gid) };
    let mut daemons = vec!["egress".to_string()];
    if repos_on {
        daemons.push("git-gate".into());
    }
    if supervise_on {
        daemons.push("supervise".into());
    }
    let mut bundle_env = vec![
        EnvVar::shown(env::BOTTLE, &slug),
        EnvVar::shown(env::BUNDLE_DAEMONS, daemons.join(",")),
        EnvVar::shown("EGRESS_AUDIT_LOG", bundle_path::AUDIT_LOG),
    ];
    let mut extra_hosts = Vec::new();
    let mut pins = Vec::new();
    for (host, target) in &r.hosts {
        extra_hosts.push(format!("{host}:{}", target.value));
        let ip = if target.value == "host-gateway" {
            match facts.host_gateway {
                Some(ip) => IpAddr::V4(ip),
                None => {
                    problems.push(Problem {
                        at: target.at.clone(),
                        message: "the engine's host-gateway address is unknown (no default bridge network)".into(),
                    });
                    continue;
                }
            }
        } else {
            target.value.parse().expect("checked on load")
        };
        pins.push(format!("{host}={ip}"));
    }
    if !pins.is_empty() {
        bundle_env.push(EnvVar::shown("EGRESS_RESOLVE", pins.join(",")));
    }
    if let Some(ca) = &r.upstream_ca {
        files.push(FilePlan {
            path: "egress/upstream-ca.pem".into(),
            reader: Reader::Bundle,
            content: FileContent::CopyOf { source: ca.resolve_path(&ca.value) },
        });
        bundle_env.push(EnvVar::shown("EGRESS_UPSTREAM_CA", bundle_path::UPSTREAM_CA));
    }
    if supervise_on {
        bundle_env.push(EnvVar::shown(env::SUPERVISE_AUTH_TOKEN_FILE, bundle_path::SUPERVISE_TOKEN));
        bundle_env.push(EnvVar::shown(env::SUPERVISE_ALLOWED_HOSTS, network.bundle_address().to_string()));
        if let Some(t) = r.supervise.wait_timeout {
            bundle_env.push(EnvVar::shown("SUPERVISE_WAIT_TIMEOUT", t.to_string()));
        }
    }
    for s in &secrets {
        bundle_env.push(EnvVar::hidden(&s.name, &s.source));
    }
    let bind = |rel: &str, target: &str, read_only: bool| MountPlan {
        source: state_dir.join(rel),
        target: target.to_string(),
        read_only,
    };
    let mut bundle_mounts = vec![bind("ca", path::CA_DIR, true), bind("egress", path::EGRESS_DIR, true)];
    if repos_on {
        bundle_mounts.push(bind("git-gate", path::GIT_GATE_DIR, true));
    }
    if supervise_on {
        bundle_mounts.push(bind("supervise", bundle_path::SUPERVISE_DIR, true));
    }
    bundle_mounts.push(MountPlan { source: queue_dir.clone(), target: path::QUEUE_DIR.into(), read_only: false });
    bundle_mounts.push(bind("log", bundle_path::LOG_DIR, false));
    let bundle = BundlePlan {
        container: format!("bot-bottle-{slug}-bundle"),
        image: facts.sidecar_image.clone(),
        user: format!("{bundle_uid}:{bundle_gid}"),
        daemons,
        env: bundle_env,
        mounts: bundle_mounts,
        tmpfs: vec!["/tmp".into(), path::GIT_GATE_DATA.into(), bundle_path::HOME.into()],
        extra_hosts,
        read_only_root: true,
        publish: match &network.link {
            Link::Loopback { ip } => Some(Publish {
                ip: *ip,
                ports: vec![port::EGRESS, port::GIT_GATE, port::SUPERVISE],
                host_ports: "random, looked up once the bundle runs".into(),
            }),
            Link::Internal { .. } => None,
        },
    };

    // Files the bundle reads.
    files.push(FilePlan { path: "ca/ca.crt".into(), reader: Reader::Bundle, content: FileContent::CaCert });
    files.push(FilePlan { path: "ca/ca.key".into(), reader: Reader::Bundle, content: FileContent::CaKey });
    files.push(FilePlan {
        path: "egress/routes.json".into(),
        reader: Reader::Agent, // no secrets; the operator's supervise answers rewrite it
        content: FileContent::Text { text: serde_json::to_string_pretty(&routes_doc).expect("json") + "\n" },
    });
    if repos_on {
        let config = serde_json::json!({
            "version": 1,
            "user": {"name": git_user.name, "email": git_user.email},
            "repos": gate_repos,
        });
        files.push(FilePlan {
            path: "git-gate/config.json".into(),
            reader: Reader::Bundle,
            content: FileContent::Text { text: serde_json::to_string_pretty(&config).expect("json") + "\n" },
        });
    }
    if supervise_on {
        files.push(FilePlan {
            path: "supervise/token".into(),
            reader: Reader::Bundle,
            content: FileContent::SuperviseToken,
        });
    }

    // The agent.
    // Where the agent reaches the bundle; on a loopback link the ports are only known at launch.
    let endpoints = network.endpoints().unwrap_or_else(|| provision::Endpoints::on_ip(network.bundle_address()));
    let provider = r.agent_provider.as_ref();
    let (image, command, user, read_only_root) = match provider {
        Some(p) if p.value.template == Template::Command => {
            let image = match (&p.value.image, &p.value.dockerfile) {
                (Some(i), _) => AgentImage::Reference { image: i.clone() },
                (None, Some(df)) => {
                    let dockerfile = p.resolve_path(df);
                    let context = dockerfile.parent().map(Path::to_path_buf).unwrap_or_default();
                    AgentImage::Dockerfile { dockerfile, context }
                }
                (None, None) => unreachable!("checked on load"),
            };
            (
                image,
                p.value.command.clone().unwrap_or_default(),
                p.value.user.clone(),
                p.value.read_only_root.unwrap_or(true),
            )
        }
        Some(p) if let Some((t, _)) = &template => (
            AgentImage::Template { template: p.value.template },
            t.command.clone(),
            p.value.user.clone(),
            p.value.read_only_root.unwrap_or(true),
        ),
        _ => {
            // Reported by the manifest checks; a plan is still produced for --dry-run only when
            // there are no problems, so this is never used.
            problems.push(Problem { at: whole("agent_provider"), message: "no usable agent_provider".into() });
            (AgentImage::Reference { image: String::new() }, Vec::new(), None, true)
        }
    };
    let mut agent_env: Vec<EnvVar> =
        provision::agent_env(&endpoints, supervise_on, repos_on).iter().map(|(k, v)| EnvVar::shown(k, v)).collect();
    if supervise_on {
        agent_env.push(EnvVar::hidden(provision::SUPERVISE_TOKEN_ENV, "minted at launch"));
    }
    agent_env.extend(template.iter().flat_map(|(t, _)| &t.env).map(|(k, v)| EnvVar::shown(k, v)));
    for (name, src) in &r.env {
        let source = match &src.value {
            crate::manifest::EnvSource::Literal { .. } => "manifest".to_string(),
            crate::manifest::EnvSource::Prompt { .. } => "prompt".to_string(),
            crate::manifest::EnvSource::Host { var } => {
                if !facts.env_present.contains(var) {
                    problems
                        .push(Problem { at: src.at.clone(), message: format!("the host variable {var} is not set") });
                }
                format!("host:{var}")
            }
        };
        if source != "manifest" {
            secrets.push(SecretPlan {
                name: name.clone(),
                source: source.clone(),
                to: "agent".into(),
                purpose: "agent environment".into(),
            });
        }
        agent_env.push(EnvVar::hidden(name, source));
    }
    let prompt = [r.agent.as_ref().map(|a| a.prompt.as_str()).unwrap_or(""), opts.prompt.as_deref().unwrap_or("")]
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let repo_urls: Vec<(String, String)> =
        r.repos.iter().map(|(n, repo)| (n.clone(), repo.value.url.clone())).collect();
    files.push(FilePlan { path: "agent/ca.crt".into(), reader: Reader::Agent, content: FileContent::CaCert });
    files.push(FilePlan { path: "agent/ca-bundle.pem".into(), reader: Reader::Agent, content: FileContent::CaBundle });
    files.push(FilePlan {
        path: "agent/gitconfig".into(),
        reader: Reader::Agent,
        content: FileContent::GitConfig {
            name: git_user.name.clone(),
            email: git_user.email.clone(),
            repos: repo_urls,
        },
    });
    files.push(FilePlan {
        path: "agent/prompt.md".into(),
        reader: Reader::Agent,
        content: FileContent::Text { text: prompt + "\n" },
    });
    if supervise_on {
        files.push(FilePlan { path: "agent/mcp.json".into(), reader: Reader::Agent, content: FileContent::McpConfig });
    }
    for (name, text) in template.iter().flat_map(|(t, _)| &t.files) {
        let content = FileContent::Text { text: text.clone() };
        files.push(FilePlan { path: format!("agent/{name}").into(), reader: Reader::Agent, content });
    }
    let mut agent_mounts = vec![bind("agent", provision::AGENT_DIR, true)];
    if let Some(a) = &r.agent {
        for skill in &a.skills {
            agent_mounts.push(MountPlan {
                source: skill_dir(&skill.at.file, &facts.home, &skill.value),
                target: format!("{}/{}", provision::SKILLS_DIR, skill.value),
                read_only: true,
            });
        }
    }
    let user = user.map(|u| {
        let (uid, gid) = crate::manifest::parse_user(&u).expect("checked on load");
        format!("{uid}:{gid}")
    });
    let sandbox = match &network.link {
        Link::Internal { bundle_ip, .. } => {
            let allow = vec![format!("{bundle_ip} tcp {},{},{}", port::EGRESS, port::GIT_GATE, port::SUPERVISE)];
            let ruleset = firewall_ruleset(*bundle_ip);
            files.push(FilePlan {
                path: "firewall.nft".into(),
                reader: Reader::Agent,
                content: FileContent::Text { text: ruleset.clone() },
            });
            Sandbox::Container(ContainerSandbox {
                container: format!("bot-bottle-{slug}-agent"),
                tmpfs: vec!["/tmp".into(), "/var/tmp".into(), provision::HOME.into()],
                read_only_root,
                cap_drop: vec!["ALL".into()],
                security_opt: vec!["no-new-privileges".into()],
                runtime: facts.runsc.then(|| "runsc".to_string()),
                firewall: FirewallPlan { container: format!("bot-bottle-{slug}-firewall"), allow, ruleset },
            })
        }
        Link::Loopback { ip } => {
            let machine = format!("bot-bottle-{slug}-agent");
            let allow_cidr = format!("{ip}/32");
            let volumes: Vec<String> = agent_mounts
                .iter()
                .map(|m| format!("{}:{}{}", m.source.display(), m.target, if m.read_only { ":ro" } else { "" }))
                .collect();
            let mut vm_labels = labels.clone();
            vm_labels.insert(label::ROLE.into(), "agent".into());
            // What `machine create` is given; the archive, the user and the environment are
            // only known at launch.
            let shown = crate::vmm::MachineSpec {
                name: machine.clone(),
                image: "<the agent image's docker save archive>".into(),
                allow_cidrs: vec![allow_cidr.clone()],
                user: Some(user.clone().unwrap_or_else(|| "<the image's user>".into())),
                workdir: Some(provision::HOME.into()),
                env: Vec::new(),
                secret_env: Vec::new(),
                volumes: volumes.clone(),
                labels: vm_labels.clone(),
                command: vec!["sleep".into(), "infinity".into()],
            };
            Sandbox::Vm(VmSandbox {
                machine,
                allow_cidr,
                volumes,
                labels: vm_labels,
                flags: crate::vmm::smolvm::create_args(&shown),
                state_dir: opts.smolvm_state_dir.clone(),
            })
        }
    };
    if network.endpoints().is_none() {
        // Shown as what they will be; launch fills in the published ports.
        let derived = provision::endpoint_env_names();
        for v in agent_env.iter_mut().filter(|v| derived.contains(&v.name)) {
            v.source = Some("the bundle's published port, at launch".into());
            v.value = None;
        }
    }
    let agent = AgentPlan {
        image,
        user,
        command,
        env: agent_env,
        mounts: agent_mounts,
        system_ca_bundles: provision::SYSTEM_CA_BUNDLES.iter().map(|s| s.to_string()).collect(),
        interactive: !opts.headless,
        sandbox,
    };
    if !problems.is_empty() {
        return Err(PlanError(problems));
    }
    Ok(BottlePlan {
        slug,
        label,
        backend,
        home,
        state_dir,
        queue_dir,
        manifests: Manifests {
            bottles: r.bottles.clone(),
            files: r.files.clone(),
            agent: r.agent.as_ref().map(|a| a.file.clone()),
        },
        labels,
        network,
        bundle,
        agent,
        files,
        secrets,
        keys,
        steps: crate::launch::STEPS.iter().map(|s| s.to_string()).collect(),
    })
}

/// A skill's directory: beside the agent manifest's home or repository `.bot-bottle/`.
fn skill_dir(agent_file: &Path, home: &Path, name: &str) -> PathBuf {
    let home_skill = home.join("skills").join(name);
    if home_skill.is_dir() {
        return home_skill;
    }
    // agents/<x>.md → skills/<name> in the same `.bot-bottle/`.
    agent_file.parent().and_then(Path::parent).map(|d| d.join("skills").join(name)).unwrap_or(home_skill)
}

/// The `known_hosts` host pattern for an ssh URL: `host`, or `[host]:port` off port 22.
pub fn known_hosts_pattern(url: &str) -> String {
    let (host, port) = if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split('/').next().unwrap_or_default();
        let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().unwrap_or(22))
            }
            _ => (hostport.trim_matches(['[', ']']).to_string(), 22u16),
        }
    } else {
        // scp-like: [user@]host:path
        let before = url.split(':').next().unwrap_or_default();
        (before.rsplit_once('@').map(|(_, h)| h).unwrap_or(before).to_string(), 22)
    };
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

/// nftables rules for the agent's network namespace: out only to the bundle's three ports;
/// nothing to Docker's embedded DNS (127.0.0.11), the host, other bottles or IPv6; in only
/// replies. Rejected rather than dropped, so a blocked connection fails at once.
pub fn firewall_ruleset(bundle: Ipv4Addr) -> String {
    format!(
        "table inet bot_bottle {{\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority 0; policy drop;\n\
         \t\tip daddr 127.0.0.11 reject\n\
         \t\toifname \"lo\" accept\n\
         \t\tip daddr {bundle} tcp dport {{ {}, {}, {} }} accept\n\
         \t\tmeta l4proto tcp reject with tcp reset\n\
         \t\treject with icmpx type admin-prohibited\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority 0; policy drop;\n\
         \t\tiifname \"lo\" accept\n\
         \t\tct state established,related accept\n\
         \t}}\n\
         }}\n",
        port::EGRESS,
        port::GIT_GATE,
        port::SUPERVISE
    )
}

#[cfg(test)]
mod tests;
