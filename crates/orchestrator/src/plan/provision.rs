//! Provisioning, shared by every backend: what the agent's environment and its
//! `/etc/bot-bottle/` hold so that every common runtime trusts the bottle CA, uses the proxy,
//! reaches the git gate instead of the upstreams and finds the supervise MCP server and its
//! prompt. A backend only decides how these get there (Docker: environment and read-only
//! mounts; a VM: environment and files written at start).
//!
//! Nothing here is a secret of the operator's: the supervise token is the bottle's own key to
//! its own supervise server, which only this agent can reach.

use std::net::Ipv4Addr;

use common::consts::{env, port};
use serde::Serialize;

/// Where the agent's bot-bottle files are (read-only).
pub const AGENT_DIR: &str = "/etc/bot-bottle";
/// The bottle CA alone (for variables that *add* to the system roots).
pub const CA_CERT: &str = "/etc/bot-bottle/ca.crt";
/// System roots + the bottle CA (for variables that *replace* the roots).
pub const CA_BUNDLE: &str = "/etc/bot-bottle/ca-bundle.pem";
pub const GITCONFIG: &str = "/etc/bot-bottle/gitconfig";
pub const PROMPT: &str = "/etc/bot-bottle/prompt.md";
pub const MCP_CONFIG: &str = "/etc/bot-bottle/mcp.json";
pub const SKILLS_DIR: &str = "/etc/bot-bottle/skills";
/// The agent's home (writable).
pub const HOME: &str = "/home/agent";

/// The system trust-store files distributions read; whichever of these an image has is
/// replaced by the merged bundle, so tools that read only the system store trust the CA too.
pub const SYSTEM_CA_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL
    "/etc/ssl/ca-bundle.pem",                            // openSUSE
    "/etc/ssl/cert.pem",                                 // Alpine, BSDs
];

/// The bundle's addresses as the agent reaches them.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    pub proxy: String,
    pub gate: String,
    pub supervise: String,
    /// Hosts and addresses the agent reaches without the proxy.
    pub no_proxy: Vec<String>,
}

/// The bundle's ports as the agent reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    pub egress: u16,
    pub git_gate: u16,
    pub supervise: u16,
}

impl Ports {
    /// The contract ports (the bundle's own, as on its own IP).
    pub const BUNDLE: Ports = Ports { egress: port::EGRESS, git_gate: port::GIT_GATE, supervise: port::SUPERVISE };
}

impl Endpoints {
    /// The bundle on its own IP at the contract ports (the Docker backend).
    pub fn on_ip(ip: Ipv4Addr) -> Endpoints {
        Endpoints::at(ip, Ports::BUNDLE)
    }

    /// The bundle at `ip` on `ports` (smolvm: the ports published on the bottle's loopback
    /// address).
    pub fn at(ip: Ipv4Addr, ports: Ports) -> Endpoints {
        Endpoints {
            proxy: format!("http://{ip}:{}", ports.egress),
            gate: format!("http://{ip}:{}", ports.git_gate),
            supervise: format!("http://{ip}:{}/mcp", ports.supervise),
            no_proxy: vec!["localhost".into(), "127.0.0.1".into(), "::1".into(), ip.to_string()],
        }
    }
}

/// The agent variables whose values name a bundle port: on a loopback link they are only known
/// once the bundle runs.
pub fn endpoint_env_names() -> Vec<String> {
    let a =
        agent_env(&Endpoints::at(Ipv4Addr::UNSPECIFIED, Ports { egress: 1, git_gate: 1, supervise: 1 }), true, true);
    let b =
        agent_env(&Endpoints::at(Ipv4Addr::UNSPECIFIED, Ports { egress: 2, git_gate: 2, supervise: 2 }), true, true);
    a.into_iter().zip(b).filter(|(x, y)| x.1 != y.1).map(|(x, _)| x.0).collect()
}

/// The environment bot-bottle sets in the agent. `supervise_token` goes in as
/// `MCP_SUPERVISE_TOKEN` (for scripted agents; the CLIs read it from their MCP config).
pub fn agent_env(e: &Endpoints, supervise: bool, repos: bool) -> Vec<(String, String)> {
    let no_proxy = e.no_proxy.join(",");
    let mut vars: Vec<(String, String)> = vec![
        ("HOME".into(), HOME.into()),
        ("HTTPS_PROXY".into(), e.proxy.clone()),
        ("HTTP_PROXY".into(), e.proxy.clone()),
        ("https_proxy".into(), e.proxy.clone()),
        ("http_proxy".into(), e.proxy.clone()),
        ("NO_PROXY".into(), no_proxy.clone()),
        ("no_proxy".into(), no_proxy),
        // Variables that add to the system roots get the CA alone; those that replace the
        // roots get the merged bundle.
        ("NODE_EXTRA_CA_CERTS".into(), CA_CERT.into()),
        ("SSL_CERT_FILE".into(), CA_BUNDLE.into()),
        ("REQUESTS_CA_BUNDLE".into(), CA_BUNDLE.into()),
        ("CURL_CA_BUNDLE".into(), CA_BUNDLE.into()),
        ("GIT_SSL_CAINFO".into(), CA_BUNDLE.into()),
        ("PIP_CERT".into(), CA_BUNDLE.into()),
        ("CARGO_HTTP_CAINFO".into(), CA_BUNDLE.into()),
        // System-level git config: the agent's own ~/.gitconfig stays writable.
        ("GIT_CONFIG_SYSTEM".into(), GITCONFIG.into()),
        (env::PROMPT_FILE.into(), PROMPT.into()),
    ];
    if repos {
        vars.push((env::GIT_GATE_URL.into(), e.gate.clone()));
    }
    if supervise {
        vars.push((env::MCP_SUPERVISE_URL.into(), e.supervise.clone()));
        vars.push(("MCP_CONFIG_FILE".into(), MCP_CONFIG.into()));
    }
    vars
}

/// Names a manifest's `env` may not set: what [`agent_env`] sets, and the supervise token.
pub fn is_reserved_env(name: &str) -> bool {
    let e = Endpoints::on_ip(Ipv4Addr::UNSPECIFIED);
    name == SUPERVISE_TOKEN_ENV || agent_env(&e, true, true).iter().any(|(k, _)| k == name)
}

/// The supervise token's variable in the agent.
pub const SUPERVISE_TOKEN_ENV: &str = env::MCP_SUPERVISE_TOKEN;

/// `/etc/bot-bottle/gitconfig`: the agent's git identity, and every upstream URL rewritten to
/// the gate (with and without `.git`, so either spelling of a clone URL lands there).
pub fn gitconfig(user: (&str, &str), gate: &str, repos: &[(String, String)]) -> String {
    let mut out = format!("[user]\n\tname = {}\n\temail = {}\n", quote(user.0), quote(user.1));
    for (name, url) in repos {
        out.push_str(&format!("[url \"{gate}/{name}.git\"]\n"));
        let other = match url.strip_suffix(".git") {
            Some(bare) => bare.to_string(),
            None => format!("{url}.git"),
        };
        for u in [url.as_str(), other.as_str()] {
            out.push_str(&format!("\tinsteadOf = {}\n", quote(u)));
        }
    }
    out
}

/// A git config value, quoted.
fn quote(v: &str) -> String {
    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// `/etc/bot-bottle/mcp.json`: the supervise server in the `mcpServers` form MCP clients read.
pub fn mcp_config(supervise_url: &str, token: &str) -> String {
    let v = serde_json::json!({
        "mcpServers": {
            "supervise": {
                "type": "http",
                "url": supervise_url,
                "headers": {"Authorization": format!("Bearer {token}")}
            }
        }
    });
    serde_json::to_string_pretty(&v).expect("json") + "\n"
}

/// The merged trust bundle: the image's system roots, then the bottle CA.
pub fn ca_bundle(system_roots: &str, bottle_ca: &str) -> String {
    let mut out = system_roots.trim_end().to_string();
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("# bot-bottle: this bottle's egress CA\n");
    out.push_str(bottle_ca.trim_end());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_points_everything_at_the_bundle() {
        let e = Endpoints::on_ip(Ipv4Addr::new(10, 243, 0, 18));
        let env = agent_env(&e, true, true);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTPS_PROXY"), Some("http://10.243.0.18:9099"));
        assert_eq!(get("http_proxy"), Some("http://10.243.0.18:9099"));
        assert_eq!(get("NO_PROXY"), Some("localhost,127.0.0.1,::1,10.243.0.18"));
        assert_eq!(get("GIT_GATE_URL"), Some("http://10.243.0.18:9420"));
        assert_eq!(get("MCP_SUPERVISE_URL"), Some("http://10.243.0.18:9100/mcp"));
        assert_eq!(get("NODE_EXTRA_CA_CERTS"), Some(CA_CERT));
        for replace in
            ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT", "CARGO_HTTP_CAINFO"]
        {
            assert_eq!(get(replace), Some(CA_BUNDLE), "{replace}");
        }
        assert!(is_reserved_env("HTTPS_PROXY") && is_reserved_env("MCP_SUPERVISE_TOKEN"));
        assert!(!is_reserved_env("MY_SETTING"));
        let bare = agent_env(&e, false, false);
        assert!(!bare.iter().any(|(k, _)| k == "GIT_GATE_URL" || k == "MCP_SUPERVISE_URL"));
    }

    #[test]
    fn endpoint_names_are_the_port_bearing_ones() {
        let mut names = endpoint_env_names();
        names.sort();
        assert_eq!(
            names,
            ["GIT_GATE_URL", "HTTPS_PROXY", "HTTP_PROXY", "MCP_SUPERVISE_URL", "http_proxy", "https_proxy"]
        );
    }

    #[test]
    fn gitconfig_rewrites_both_spellings() {
        let g = gitconfig(
            ("agent", "agent@bottle.invalid"),
            "http://10.0.0.2:9420",
            &[("app".into(), "ssh://git@git.example.com:22/org/app.git".into())],
        );
        assert_eq!(
            g,
            "[user]\n\tname = \"agent\"\n\temail = \"agent@bottle.invalid\"\n[url \"http://10.0.0.2:9420/app.git\"]\n\
             \tinsteadOf = \"ssh://git@git.example.com:22/org/app.git\"\n\tinsteadOf = \"ssh://git@git.example.com:22/org/app\"\n"
        );
    }

    #[test]
    fn ca_bundle_appends_the_bottle_ca() {
        assert_eq!(ca_bundle("ROOTS\n\n", "CA\n"), "ROOTS\n# bot-bottle: this bottle's egress CA\nCA\n");
        assert_eq!(ca_bundle("", "CA"), "# bot-bottle: this bottle's egress CA\nCA\n");
    }
}
