//! Flags (each with an env-var equivalent; the flag wins) and the validated [`Config`] built
//! from them. Every problem is reported at once; any problem means exit 64.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::Secret;
use common::daemon::UsageError;
use common::formats::Routes;
use common::telemetry::LogFormat;
use rustls::RootCertStore;

use crate::tls::{self, Mint};

/// `egress-proxy` command line (docs/interfaces.md, "egress-proxy").
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "egress-proxy",
    version,
    about = "The bottle's egress proxy: TLS-bumping allowlist with token injection and DLP"
)]
pub struct Args {
    /// Address to listen on (port 0 picks one; the real one is printed).
    #[arg(long, env = "EGRESS_LISTEN", default_value = "127.0.0.1:9099")]
    pub listen: SocketAddr,
    /// routes.json; its directory is watched for changes.
    #[arg(long, env = "EGRESS_ROUTES")]
    pub routes: PathBuf,
    /// The bottle CA certificate (PEM) leaf certificates are signed with.
    #[arg(long, env = "EGRESS_CA_CERT")]
    pub ca_cert: PathBuf,
    /// The bottle CA private key (PEM).
    #[arg(long, env = "EGRESS_CA_KEY")]
    pub ca_key: PathBuf,
    /// Extra trust anchors for upstream TLS (PEM; repeatable; env: comma-separated).
    #[arg(long = "upstream-ca", env = "EGRESS_UPSTREAM_CA", value_delimiter = ',')]
    pub upstream_ca: Vec<PathBuf>,
    /// Supervise queue directory for the DLP `supervise` action.
    #[arg(long, env = "EGRESS_SUPERVISE_QUEUE")]
    pub supervise_queue: Option<PathBuf>,
    /// The bottle's slug (audit lines, queue requests). Env fallback: BOT_BOTTLE_BOTTLE.
    #[arg(long, env = "EGRESS_BOTTLE")]
    pub bottle: Option<String>,
    /// Audit log file (JSON lines, appended); default stderr.
    #[arg(long, env = "EGRESS_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Resolve HOST to IP instead of asking DNS (repeatable; env: comma-separated HOST=IP).
    #[arg(long, env = "EGRESS_RESOLVE", value_delimiter = ',', value_name = "HOST=IP")]
    pub resolve: Vec<String>,
    /// Most client connections served at once (more wait in the accept queue).
    #[arg(long, env = "EGRESS_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Largest request body held for DLP scanning (also bounds decoded size); larger → 413.
    #[arg(long, env = "EGRESS_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Total bytes held for DLP across all requests at once (requests wait for room, then 503).
    #[arg(long, env = "EGRESS_MAX_BUFFERED_BYTES", default_value_t = 256 << 20)]
    pub max_buffered_bytes: usize,
    /// Largest request head (request line + headers).
    #[arg(long, env = "EGRESS_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Time allowed to send a request head or TLS handshake (slowloris guard).
    #[arg(long, env = "EGRESS_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A connection or tunnel with no traffic either way for this long is closed.
    #[arg(long, env = "EGRESS_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a DLP `supervise` hold waits for the operator before denying.
    #[arg(long, env = "EGRESS_SUPERVISE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub supervise_timeout: Duration,
    /// Log format on stderr.
    #[arg(long, env = "BOT_BOTTLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Limits that keep the proxy alive under abuse.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) supervise_timeout: Duration,
}

/// Everything `run` needs, validated.
pub struct Config {
    pub(crate) routes_path: PathBuf,
    pub(crate) routes: Routes,
    /// token_env name → value, for every route's auth.
    pub(crate) tokens: HashMap<String, Secret>,
    /// Further values DLP treats as known secrets (EGRESS_TOKEN_* and sensitive prefixes).
    pub(crate) extra_secrets: Vec<Secret>,
    pub(crate) mint: Mint,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) resolve: HashMap<String, IpAddr>,
    pub(crate) queue: Option<common::queue::Queue>,
    pub(crate) bottle: String,
    pub(crate) audit: Box<dyn Write + Send>,
    pub(crate) limits: Limits,
    /// Reads an env var (token values on reload); the process env outside tests.
    pub(crate) env: EnvFn,
}

/// How the proxy reads environment variables.
pub type EnvFn = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("routes_path", &self.routes_path).field("bottle", &self.bottle).finish()
    }
}

/// Reads the token for every `token_env` the routes name; problems name the route key.
pub(crate) fn read_tokens(
    routes: &Routes,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Secret>, Vec<String>> {
    let mut tokens = HashMap::new();
    let mut problems = Vec::new();
    for (i, r) in routes.routes.iter().enumerate() {
        if let Some(a) = &r.auth {
            match env(&a.token_env) {
                Some(v) if !v.is_empty() && http::HeaderValue::from_str(&format!("{} {v}", a.scheme)).is_ok() => {
                    tokens.insert(a.token_env.clone(), Secret::new(v));
                }
                Some(v) if !v.is_empty() => problems.push(format!(
                    "routes[{i}].auth.token_env: the value of {} is not usable in an HTTP header",
                    a.token_env
                )),
                _ => problems.push(format!(
                    "routes[{i}].auth.token_env: environment variable {} is not set (or empty)",
                    a.token_env
                )),
            }
        }
    }
    if problems.is_empty() { Ok(tokens) } else { Err(problems) }
}

/// Values of env vars whose names start with `EGRESS_TOKEN_` or a prefix listed in
/// `BOT_BOTTLE_SENSITIVE_PREFIXES`.
pub(crate) fn sensitive_env(vars: impl Iterator<Item = (String, String)>, prefixes: Option<&str>) -> Vec<Secret> {
    let mut list: Vec<String> = vec![common::consts::env::EGRESS_TOKEN_PREFIX.to_string()];
    if let Some(p) = prefixes {
        list.extend(p.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
    }
    vars.filter(|(k, v)| !v.is_empty() && list.iter().any(|p| k.starts_with(p.as_str())))
        .map(|(_, v)| Secret::new(v))
        .collect()
}

impl Config {
    /// Validates the arguments against the process environment.
    pub fn from_args(args: &Args) -> Result<Config, UsageError> {
        Self::build(args, Arc::new(|k: &str| std::env::var(k).ok()), std::env::vars())
    }

    /// Validates everything, reporting every problem at once.
    pub fn build(args: &Args, env: EnvFn, vars: impl Iterator<Item = (String, String)>) -> Result<Config, UsageError> {
        let mut problems: Vec<String> = Vec::new();
        let routes = match Routes::load(&args.routes) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let tokens = match &routes {
            Some(r) => match read_tokens(r, &*env) {
                Ok(t) => t,
                Err(ps) => {
                    problems.extend(ps.into_iter().map(|p| format!("{}: {p}", args.routes.display())));
                    HashMap::new()
                }
            },
            None => HashMap::new(),
        };
        let mint = Mint::load(&args.ca_cert, &args.ca_key).map_err(|e| problems.push(e.to_string())).ok();
        let mut extra = Vec::new();
        for p in &args.upstream_ca {
            match tls::load_pem_certs(p) {
                Ok(c) => extra.extend(c),
                Err(e) => problems.push(format!("--upstream-ca {e}")),
            }
        }
        let mut resolve = HashMap::new();
        for r in &args.resolve {
            match r.split_once('=').map(|(h, ip)| (h.to_ascii_lowercase(), ip.parse::<IpAddr>())) {
                Some((h, Ok(ip))) if !h.is_empty() => {
                    resolve.insert(h, ip);
                }
                _ => problems.push(format!("--resolve {r:?}: expected HOST=IP")),
            }
        }
        let bottle = args.bottle.clone().or_else(|| env(common::consts::env::BOTTLE)).unwrap_or_default();
        let queue = match &args.supervise_queue {
            Some(dir) if !dir.is_dir() => {
                problems.push(format!("--supervise-queue {}: not a directory", dir.display()));
                None
            }
            Some(_) if bottle.is_empty() => {
                problems.push("--supervise-queue needs --bottle (or BOT_BOTTLE_BOTTLE)".into());
                None
            }
            Some(dir) => Some(common::queue::Queue::new(dir)),
            None => None,
        };
        let audit: Option<Box<dyn Write + Send>> = match &args.audit_log {
            Some(p) => match std::fs::OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => Some(Box::new(f)),
                Err(e) => {
                    problems.push(format!("--audit-log {}: cannot open for append: {e}", p.display()));
                    None
                }
            },
            None => Some(Box::new(std::io::stderr())),
        };
        if args.max_header_bytes < 8192 {
            problems.push(format!("--max-header-bytes {}: must be at least 8192", args.max_header_bytes));
        }
        if args.max_buffered_bytes < 2 * args.max_body_bytes {
            problems.push(format!(
                "--max-buffered-bytes {}: must be at least twice --max-body-bytes ({})",
                args.max_buffered_bytes, args.max_body_bytes
            ));
        }
        if args.max_buffered_bytes / 1024 > u32::MAX as usize {
            problems.push(format!("--max-buffered-bytes {}: too large", args.max_buffered_bytes));
        }
        if args.max_connections == 0 {
            problems.push("--max-connections: must be at least 1".into());
        }
        let prefixes = env(common::consts::env::SENSITIVE_PREFIXES);
        let extra_secrets = sensitive_env(vars, prefixes.as_deref());
        match (routes, mint, audit) {
            (Some(routes), Some(mint), Some(audit)) if problems.is_empty() => {
                let roots = Arc::new(tls::root_store(&extra));
                Ok(Config {
                    routes_path: args.routes.clone(),
                    routes,
                    tokens,
                    extra_secrets,
                    mint,
                    roots,
                    resolve,
                    queue,
                    bottle,
                    audit,
                    limits: Limits {
                        max_connections: args.max_connections,
                        max_body_bytes: args.max_body_bytes,
                        max_buffered_bytes: args.max_buffered_bytes,
                        max_header_bytes: args.max_header_bytes,
                        header_timeout: args.header_timeout,
                        idle_timeout: args.idle_timeout,
                        supervise_timeout: args.supervise_timeout,
                    },
                    env,
                })
            }
            _ => Err(UsageError(problems.join("\n"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sensitive_env_picks_prefixes_and_tokens() {
        let vars = vec![
            ("EGRESS_TOKEN_0".to_string(), "t0".to_string()),
            ("AWS_SECRET".to_string(), "a".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("GH_EMPTY".to_string(), String::new()),
        ];
        let got = sensitive_env(vars.into_iter(), Some("AWS_, GH_"));
        let vals: Vec<&str> = got.iter().map(Secret::expose).collect();
        assert_eq!(vals, ["t0", "a"]);
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("routes.json");
        std::fs::write(&routes, r#"{"version":1,"routes":[{"host":"a.com","auth":{"token_env":"MISSING_TOKEN"}}]}"#)
            .unwrap();
        let args = Args::try_parse_from([
            "egress-proxy",
            "--routes",
            routes.to_str().unwrap(),
            "--ca-cert",
            "/nonexistent/ca.crt",
            "--ca-key",
            "/nonexistent/ca.key",
            "--resolve",
            "nonsense",
            "--upstream-ca",
            "/nonexistent/up.pem",
        ])
        .unwrap();
        let err = Config::build(&args, Arc::new(|_: &str| None), std::iter::empty()).unwrap_err().0;
        for want in
            ["MISSING_TOKEN", "routes[0].auth.token_env", "/nonexistent/ca.crt", "--resolve", "/nonexistent/up.pem"]
        {
            assert!(err.contains(want), "{want} missing from: {err}");
        }
    }
}
