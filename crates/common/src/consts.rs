//! Constants of the sidecar bundle: ports, in-container paths and environment variable names.
//!
//! These are the fixed points of docs/interfaces.md; every crate takes them from here.

/// Ports the daemons listen on inside the bundle.
pub mod port {
    pub const EGRESS: u16 = 9099;
    pub const GIT_GATE: u16 = 9420;
    pub const SUPERVISE: u16 = 9100;
}

/// Paths inside the bundle container.
pub mod path {
    /// Directory holding `routes.json`; mounted read-only as a directory so that an atomic
    /// rename on the host is seen live.
    pub const EGRESS_DIR: &str = "/etc/bot-bottle/egress";
    pub const ROUTES_FILE: &str = "/etc/bot-bottle/egress/routes.json";
    pub const CA_DIR: &str = "/etc/bot-bottle/ca";
    pub const CA_CERT: &str = "/etc/bot-bottle/ca/ca.crt";
    pub const CA_KEY: &str = "/etc/bot-bottle/ca/ca.key";
    pub const GIT_GATE_DIR: &str = "/etc/bot-bottle/git-gate";
    pub const GIT_GATE_CONFIG: &str = "/etc/bot-bottle/git-gate/config.json";
    pub const GIT_GATE_CREDS: &str = "/etc/bot-bottle/git-gate/creds";
    pub const QUEUE_DIR: &str = "/run/bot-bottle/queue";
    pub const GIT_GATE_DATA: &str = "/var/lib/git-gate";
    /// Where the image puts the daemon binaries.
    pub const BIN_DIR: &str = "/usr/local/bin";
}

/// Environment variable names.
pub mod env {
    /// CSV of daemons bundle-init starts: `egress,git-gate,supervise` (default all).
    pub const BUNDLE_DAEMONS: &str = "BUNDLE_DAEMONS";
    /// Prefix of the per-daemon command override for bundle-init (`BUNDLE_CMD_EGRESS`, ...);
    /// a debugging and test hook, split like a shell would but never run through one.
    pub const BUNDLE_CMD_PREFIX: &str = "BUNDLE_CMD_";
    /// Seconds bundle-init waits after forwarding SIGTERM before it sends SIGKILL (default 8).
    pub const BUNDLE_GRACE_SECS: &str = "BUNDLE_GRACE_SECS";
    /// The bottle's slug, given to every daemon that files queue requests or writes audit lines.
    pub const BOTTLE: &str = "BOT_BOTTLE_BOTTLE";
    /// Comma-separated env-var name prefixes whose values egress DLP treats as known secrets.
    pub const SENSITIVE_PREFIXES: &str = "BOT_BOTTLE_SENSITIVE_PREFIXES";
    /// Prefix of the token slots the orchestrator fills: `EGRESS_TOKEN_0`, `EGRESS_TOKEN_1`, ...
    pub const EGRESS_TOKEN_PREFIX: &str = "EGRESS_TOKEN_";
    /// Orchestrator home directory (default `~/.bot-bottle`).
    pub const HOME: &str = "BOT_BOTTLE_HOME";
    /// Log output format for every daemon: `text` or `json`.
    pub const LOG_FORMAT: &str = "BOT_BOTTLE_LOG_FORMAT";
    /// In the agent: the file holding its prompt (the agent manifest's body, then `--prompt`).
    pub const PROMPT_FILE: &str = "BOT_BOTTLE_PROMPT_FILE";
    /// In the agent: the git gate's base URL (`http://<bundle>:9420`).
    pub const GIT_GATE_URL: &str = "GIT_GATE_URL";
    /// In the agent: the supervise MCP endpoint (`http://<bundle>:9100/mcp`).
    pub const MCP_SUPERVISE_URL: &str = "MCP_SUPERVISE_URL";
    /// In the agent: the bottle's supervise token (sent as `Authorization: Bearer`).
    pub const MCP_SUPERVISE_TOKEN: &str = "MCP_SUPERVISE_TOKEN";
    /// In the bundle: the file holding the token every supervise request must carry.
    pub const SUPERVISE_AUTH_TOKEN_FILE: &str = "SUPERVISE_AUTH_TOKEN_FILE";
    /// In the bundle: Host names supervise accepts besides its defaults (CSV).
    pub const SUPERVISE_ALLOWED_HOSTS: &str = "SUPERVISE_ALLOWED_HOSTS";
}

/// Labels on every Docker object of a bottle.
pub mod label {
    /// The bottle's slug.
    pub const SLUG: &str = "bot-bottle.slug";
    /// Which home launched it (a hash of the home's path): `cleanup` never touches another's.
    pub const HOME: &str = "bot-bottle.home";
    /// The launching process, `<pid>:<start time>`: gone means the object is an orphan.
    pub const OWNER: &str = "bot-bottle.owner";
    /// What the object is in its bottle: `bundle`, `agent`, `firewall`, `internal`, `egress`.
    pub const ROLE: &str = "bot-bottle.role";
}

/// The names `BUNDLE_DAEMONS` accepts, with the binary each one runs.
pub const DAEMONS: [(&str, &str); 3] =
    [("egress", "egress-proxy"), ("git-gate", "git-gate"), ("supervise", "supervise")];
