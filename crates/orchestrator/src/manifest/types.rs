//! The front matter of the two manifest kinds, as serde types. These are the single source of
//! truth: `bot-bottle schema` prints the JSON Schema derived from them, and that same schema is
//! what every manifest is validated against before it is deserialized.
//!
//! Every field is optional where `extends` must tell "not set" from "set to the default".

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A bottle: what the agent may reach and with which credentials. Only the operator's home
/// defines bottles (`$BOT_BOTTLE_HOME/bottles/<name>.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bot-bottle bottle manifest (front matter)")]
pub struct BottleFile {
    /// Parent bottles, merged first (in order); this file wins. `env` and `hosts` merge by key,
    /// `egress.routes` concatenate, `git-gate.repos` merge by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<OneOrMany>,
    /// The agent's environment: `"?"` or `"?prompt text"` is asked at launch without echo,
    /// `"${HOST_VAR}"` is copied from the host's environment, anything else is literal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Repositories the agent clones from and pushes to through the git gate.
    #[serde(default, rename = "git-gate", skip_serializing_if = "Option::is_none")]
    pub git_gate: Option<GitGateSpec>,
    /// The egress allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSpec>,
    /// The agent's line to the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervise: Option<SuperviseSpec>,
    /// What runs as the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_provider: Option<AgentProvider>,
    /// Names the bundle (never the agent) resolves this way: an IP address, or `host-gateway`
    /// (the Docker host). Also the egress proxy's `--resolve` pins, the one way to an internal
    /// address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, String>,
}

/// One name or a list of names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitGateSpec {
    /// The identity the gate's commits (and the agent's) carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<GitUser>,
    /// Repositories by the name the gate serves them as (`http://<bundle>:9420/<name>.git`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repos: BTreeMap<String, RepoSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitUser {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// The upstream: `ssh://git@host:22/org/app.git`, `git@host:org/app.git`, or any URL git
    /// accepts (`file://` for local tests).
    pub url: String,
    /// Private key (a path on the host; relative to this manifest, or `~/…`) the gate pushes
    /// with. The agent never sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Mint a fresh deploy key for this bottle instead of `identity` (needs `forge`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisioned_key: bool,
    /// The upstream's SSH host key (`ssh-ed25519 AAAA…`): pinned, never trusted on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// The forge that registers a provisioned key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeSpec>,
    /// Which ref updates the gate forwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgeSpec {
    pub kind: ForgeKind,
    /// API base URL, e.g. `https://git.example.com/api/v1` or `https://api.github.com`.
    pub api: String,
    /// `owner/name` on the forge.
    pub repo: String,
    /// Host env var holding the forge API token.
    pub token_ref: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Gitea,
    Github,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushSpec {
    /// Glob patterns over branch names (default `["*"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_force: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_delete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_tags: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    /// Allowed destinations; a request passes only if one matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
    /// 0 off, 1 deny/redact/hold, 2 every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2))]
    pub log: Option<u8>,
    /// Extra CA bundle (PEM, a host path relative to this manifest) the proxy trusts for
    /// upstream TLS: a corporate or private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<String>,
}

/// One allowed destination: `routes.json`'s route with `auth.token_ref` (a host env var) in
/// place of the bundle-side slot name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Exact host, `*.example.com` (one or more labels under it), or an IP literal.
    pub host: String,
    /// Default 443 (CONNECT) / 80 (plain http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `https` (default) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RouteScheme>,
    /// Inject the credential over plain `http` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_auth: Option<bool>,
    /// The real credential, set by the proxy on the way out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// A request passes if any entry passes (`paths`, `methods`, `headers`); absent = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub matches: Vec<serde_json::Value>,
    /// `false`, or `{outbound, on_match, mode}` (see routes.json in the docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_doh: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteScheme {
    Https,
    Http,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// Header to set (default `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `Bearer` unless given; empty = the bare token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host env var holding the token; read at launch, given to the bundle only.
    pub token_ref: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuperviseSpec {
    /// Run the supervise MCP server (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Seconds a tool call waits for the operator before answering `pending` (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub wait_timeout: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentProvider {
    pub template: Template,
    /// `template: command`: the agent image (a local reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `template: command`: a Dockerfile (relative to this manifest) the agent image is built
    /// from, with its directory as the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// `template: command`: the agent's argv; its prompt is in `$BOT_BOTTLE_PROMPT_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Host env var holding the model provider's credential (`claude`, `codex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// `uid` or `uid:gid` the agent runs as (default: the image's user unless that is root,
    /// else 1000:1000). Never root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Mount the image's root filesystem read-only (default true); `/tmp`, `/var/tmp` and the
    /// agent's home are writable either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// Any image and command.
    Command,
    /// Claude Code.
    Claude,
    /// OpenAI Codex CLI.
    Codex,
}

/// An agent: the prompt (the manifest's body), skills, and the bottle it runs in by default.
/// Found in the home's `agents/` or the repository's `./.bot-bottle/agents/`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bot-bottle agent manifest (front matter)")]
pub struct AgentFile {
    /// The bottle(s) this agent runs in unless `--bottle` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottle: Option<OneOrMany>,
    /// Skill directories (`skills/<name>/` in the home or `./.bot-bottle/`), mounted read-only
    /// at `/etc/bot-bottle/skills/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    #[serde(default, rename = "git-gate", skip_serializing_if = "Option::is_none")]
    pub git_gate: Option<AgentGitGate>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentGitGate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<GitUser>,
}
