//! Command-line flags (each with an env-var equivalent; the flag wins) and their validation
//! into a [`Config`]. Every problem is reported at once; any problem means exit 64.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use common::Secret;
use common::telemetry::LogFormat;

/// Longest `--wait-timeout` accepted: a tool call should never hang for more than an hour.
pub const MAX_WAIT_SECS: u64 = 3600;

/// `supervise`: the MCP server through which the agent asks the operator.
#[derive(Debug, Parser)]
#[command(
    name = "supervise",
    version,
    about = "MCP server (streamable HTTP at /mcp) through which a bottled agent asks its operator"
)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SUPERVISE_LISTEN")]
    pub listen: String,
    /// The bottle's queue directory: requests are filed here, answers read from here.
    #[arg(long, env = "SUPERVISE_QUEUE_DIR")]
    pub queue_dir: PathBuf,
    /// The bottle's slug, recorded in every request (falls back to BOT_BOTTLE_BOTTLE).
    #[arg(long, env = "SUPERVISE_BOTTLE")]
    pub bottle: Option<String>,
    /// Seconds a tool call waits for the operator before answering `pending`.
    #[arg(long, env = "SUPERVISE_WAIT_TIMEOUT", default_value_t = 30)]
    pub wait_timeout: u64,
    /// The bottle's routes.json, shown (without auth) by `list_egress_routes`.
    #[arg(long, env = "SUPERVISE_ROUTES")]
    pub routes: Option<PathBuf>,
    /// Also accept requests whose Host names this (repeatable, or a CSV in the env var; `host`
    /// for any port, `host:port` for one). Always accepted: loopback (`localhost`, 127.0.0.0/8,
    /// ::1: a port published on the host's loopback), the bundle's own addresses and its host
    /// name. Any other Host (a DNS-rebinding page's name) is refused, as is a foreign Origin.
    #[arg(long = "allowed-host", env = common::consts::env::SUPERVISE_ALLOWED_HOSTS, value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// A file holding the bearer token every request must carry (`Authorization: Bearer
    /// <token>`, every method and path); surrounding whitespace is ignored. Without it supervise
    /// is unauthenticated (and says so once at start).
    #[arg(long, env = common::consts::env::SUPERVISE_AUTH_TOKEN_FILE, value_name = "PATH")]
    pub auth_token_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "BOT_BOTTLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A validated configuration, ready for [`crate::run`].
#[derive(Debug, Clone)]
pub struct Config {
    pub queue_dir: PathBuf,
    pub bottle: String,
    pub wait_timeout: Duration,
    pub routes: Option<PathBuf>,
    /// Hosts accepted besides loopback and the bundle's own names and addresses.
    pub allowed_hosts: Vec<String>,
    /// The bearer token every request must carry; `None` = unauthenticated.
    pub auth_token: Option<Secret>,
}

/// Shortest token accepted from `--auth-token-file` (the orchestrator mints 32 random bytes).
pub const MIN_TOKEN_LEN: usize = 16;

/// The token in `path`: trimmed, at least [`MIN_TOKEN_LEN`] characters of the bearer-token
/// alphabet (RFC 6750 `b64token`). The error names the file, never the content.
pub fn read_token(path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--auth-token-file: {}: {e}", path.display()))?;
    let token = text.trim();
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(alphabet) {
        return Err(format!(
            "--auth-token-file: {}: not a bearer token (at least {MIN_TOKEN_LEN} of A-Z a-z 0-9 - . _ ~ + / =)",
            path.display()
        ));
    }
    Ok(Secret::new(token))
}

/// Everything wrong with the flags, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// True for a bottle slug: 1–64 of `[a-z0-9_-]`, starting with a letter or digit.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Args {
    /// Checks every flag and returns the listen address with the config; `bottle_env` is the
    /// value of `BOT_BOTTLE_BOTTLE` (the fallback for `--bottle`).
    pub fn validate(&self, bottle_env: Option<String>) -> Result<(std::net::SocketAddr, Config), ConfigError> {
        let mut problems = Vec::new();
        let listen = match self.listen.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!("--listen: {:?} is not an IP:PORT address", self.listen));
                None
            }
        };
        match std::fs::metadata(&self.queue_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => problems.push(format!("--queue-dir: {} is not a directory", self.queue_dir.display())),
            Err(e) => problems.push(format!("--queue-dir: {}: {e}", self.queue_dir.display())),
        }
        let bottle = self.bottle.clone().or(bottle_env).filter(|b| !b.is_empty());
        match &bottle {
            None => problems.push("--bottle: required (or set SUPERVISE_BOTTLE or BOT_BOTTLE_BOTTLE)".to_string()),
            Some(b) if !is_slug(b) => {
                problems.push(format!("--bottle: {b:?} is not a bottle slug (1-64 of a-z, 0-9, '-', '_')"))
            }
            Some(_) => {}
        }
        if self.wait_timeout > MAX_WAIT_SECS {
            problems.push(format!("--wait-timeout: {} is more than {MAX_WAIT_SECS} seconds", self.wait_timeout));
        }
        if let Some(routes) = &self.routes
            && let Err(e) = common::formats::Routes::load(routes)
        {
            problems.push(format!("--routes: {e}"));
        }
        for h in &self.allowed_hosts {
            if crate::access::parse_authority(h).is_none() {
                problems.push(format!("--allowed-host: {h:?} is not a host name, IP address or host:port"));
            }
        }
        let auth_token = match &self.auth_token_file {
            Some(path) => match read_token(path) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            None => None,
        };
        match (listen, bottle, problems.is_empty()) {
            (Some(listen), Some(bottle), true) => Ok((
                listen,
                Config {
                    queue_dir: self.queue_dir.clone(),
                    bottle,
                    wait_timeout: Duration::from_secs(self.wait_timeout),
                    routes: self.routes.clone(),
                    allowed_hosts: self.allowed_hosts.clone(),
                    auth_token,
                },
            )),
            _ => Err(ConfigError(problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["supervise"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn good_flags() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().to_str().unwrap();
        let a = args(&[
            "--listen",
            "127.0.0.1:0",
            "--queue-dir",
            q,
            "--bottle",
            "b-1",
            "--allowed-host",
            "10.0.0.2,bundle:9100",
        ]);
        let (addr, c) = a.validate(None).unwrap();
        assert_eq!(addr.port(), 0);
        assert_eq!(c.bottle, "b-1");
        assert_eq!(c.wait_timeout, Duration::from_secs(30));
        assert_eq!(c.allowed_hosts, vec!["10.0.0.2", "bundle:9100"]);
        // BOT_BOTTLE_BOTTLE is the fallback; the flag wins.
        let a = args(&["--listen", "127.0.0.1:0", "--queue-dir", q]);
        assert_eq!(a.validate(Some("env-b".into())).unwrap().1.bottle, "env-b");
        let a = args(&["--listen", "127.0.0.1:0", "--queue-dir", q, "--bottle", "flag"]);
        assert_eq!(a.validate(Some("env-b".into())).unwrap().1.bottle, "flag");
    }

    #[test]
    fn every_problem_reported() {
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("routes.json");
        std::fs::write(&routes, r#"{"version":1,"routes":[{"host":"a b"}]}"#).unwrap();
        let a = args(&[
            "--listen",
            "nowhere",
            "--queue-dir",
            "/nonexistent-q",
            "--bottle",
            "Bad Slug",
            "--wait-timeout",
            "99999",
            "--routes",
            routes.to_str().unwrap(),
            "--allowed-host",
            "no such host",
        ]);
        let err = a.validate(None).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 6, "{text}");
        for frag in [
            "--listen",
            "--queue-dir: /nonexistent-q",
            "--bottle",
            "--wait-timeout",
            "routes[0].host",
            "--allowed-host",
        ] {
            assert!(text.contains(frag), "{frag} missing in {text}");
        }
        let a = args(&["--listen", "127.0.0.1:0", "--queue-dir", dir.path().to_str().unwrap()]);
        assert!(a.validate(None).unwrap_err().to_string().contains("--bottle: required"));
    }
}
