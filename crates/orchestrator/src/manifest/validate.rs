//! Checks beyond the schema: per file (with lines) and on the merged bottle.

use std::net::IpAddr;

use base64::Engine as _;
use common::formats::git_gate::{is_repo_name, is_ssh_url};
use common::formats::{is_dns_name, is_env_name};
use serde::Serialize;
use serde_json::{Value, json};

use super::merge::Resolved;
use super::types::{AgentFile, BottleFile, RepoSpec, Template};
use super::yaml::escape;
use super::{FileProblems, Loc, Problem, Search};

/// Where an agent env value comes from. The plan shows this, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum EnvSource {
    /// Written in the manifest.
    Literal {
        #[serde(skip)]
        value: String,
    },
    /// Asked at launch without echo.
    Prompt { text: Option<String> },
    /// Copied from the host's environment at launch.
    Host { var: String },
}

impl EnvSource {
    pub fn parse(v: &str) -> Result<EnvSource, String> {
        if let Some(text) = v.strip_prefix('?') {
            let text = text.trim();
            return Ok(EnvSource::Prompt { text: (!text.is_empty()).then(|| text.to_string()) });
        }
        if let Some(var) = v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            return if is_env_name(var) {
                Ok(EnvSource::Host { var: var.to_string() })
            } else {
                Err(format!("{var:?} in \"${{…}}\" is not an environment variable name"))
            };
        }
        if v.contains("${") {
            return Err(format!(
                "{v:?}: only a whole value \"${{HOST_VAR}}\" is copied from the host; write the value out, or \
                 copy the whole variable"
            ));
        }
        Ok(EnvSource::Literal { value: v.to_string() })
    }
}

/// A manifest file name (without `.md`): `[A-Za-z0-9._-]`, no leading dot.
pub(crate) fn is_manifest_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Every schema violation, one problem each; an unknown key is reported at its own line.
pub(crate) fn against_schema(schema: &Value, instance: &Value, p: &mut FileProblems<'_>) {
    let validator = jsonschema::validator_for(schema).expect("the derived schema is a valid JSON Schema");
    for error in validator.iter_errors(instance) {
        let pointer = error.instance_path().as_str().to_string();
        match error.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    p.at(&format!("{pointer}/{}", escape(key)), "unknown key");
                }
            }
            _ => p.at(&pointer, schema_message(&error.to_string())),
        }
    }
}

/// jsonschema's messages quote the whole offending value; a long one is cut.
fn schema_message(m: &str) -> String {
    if m.chars().count() > 200 { format!("{}…", m.chars().take(200).collect::<String>()) } else { m.to_string() }
}

/// Per-file checks of a bottle.
pub(crate) fn bottle(b: &BottleFile, p: &mut FileProblems<'_>) {
    if let Some(ext) = &b.extends {
        for (i, name) in ext.to_vec().iter().enumerate() {
            if !is_manifest_name(name) {
                let ptr = if matches!(ext, super::types::OneOrMany::Many(_)) {
                    format!("/extends/{i}")
                } else {
                    "/extends".into()
                };
                p.at(&ptr, format!("{name:?} is not a bottle name (letters, digits, '.', '_', '-')"));
            }
        }
    }
    for (name, value) in &b.env {
        let ptr = format!("/env/{}", escape(name));
        if !is_env_name(name) {
            p.at(&ptr, format!("{name:?} is not an environment variable name"));
        } else if crate::plan::provision::is_reserved_env(name) {
            p.at(&ptr, format!("{name} is set by bot-bottle itself (proxy, CA trust, gate and supervise wiring)"));
        }
        if let Err(e) = EnvSource::parse(value) {
            p.at(&ptr, e);
        }
    }
    for (name, target) in &b.hosts {
        let ptr = format!("/hosts/{}", escape(name));
        if !is_dns_name(name) {
            p.at(&ptr, format!("{name:?} is not a host name"));
        }
        if target != "host-gateway" && target.parse::<IpAddr>().is_err() {
            p.at(&ptr, format!("{target:?} is neither an IP address nor `host-gateway`"));
        }
    }
    if let Some(g) = &b.git_gate {
        if let Some(u) = &g.user {
            check_user(u, "/git-gate/user", p);
        }
        for (name, repo) in &g.repos {
            repo_spec(name, repo, &format!("/git-gate/repos/{}", escape(name)), p);
        }
    }
    if let Some(e) = &b.egress {
        for (i, r) in e.routes.iter().enumerate() {
            if let Some(a) = &r.auth
                && !is_env_name(&a.token_ref)
            {
                p.at(
                    &format!("/egress/routes/{i}/auth/token_ref"),
                    format!("{:?} is not an environment variable name", a.token_ref),
                );
            }
        }
        if let Some(ca) = &e.upstream_ca {
            let path = super::resolve_path(p.file, ca);
            if !path.is_file() {
                p.at("/egress/upstream_ca", format!("{} does not exist", path.display()));
            }
        }
    }
    if let Some(a) = &b.agent_provider {
        if let Some(user) = &a.user
            && parse_user(user).is_none()
        {
            p.at("/agent_provider/user", format!("{user:?} must be `uid` or `uid:gid` (numbers), and not root"));
        }
        if a.template == Template::Command {
            match (&a.image, &a.dockerfile) {
                (Some(_), Some(_)) => p.at("/agent_provider", "give `image` or `dockerfile`, not both"),
                (None, None) => p.at("/agent_provider", "`template: command` needs `image` or `dockerfile`"),
                (None, Some(df)) => {
                    let path = super::resolve_path(p.file, df);
                    if !path.is_file() {
                        p.at("/agent_provider/dockerfile", format!("{} does not exist", path.display()));
                    }
                }
                (Some(image), None) if image.trim().is_empty() => p.at("/agent_provider/image", "must not be empty"),
                _ => {}
            }
            match &a.command {
                None => p.at("/agent_provider", "`template: command` needs `command` (the agent's argv)"),
                Some(c) if c.is_empty() || c[0].trim().is_empty() => {
                    p.at("/agent_provider/command", "must name a program")
                }
                _ => {}
            }
            if a.auth_token.is_some() {
                p.at(
                    "/agent_provider/auth_token",
                    "is for the claude and codex templates; a command agent's credentials go in egress routes",
                );
            }
        } else {
            let name = crate::templates::name(a.template);
            for (key, set) in
                [("image", a.image.is_some()), ("dockerfile", a.dockerfile.is_some()), ("command", a.command.is_some())]
            {
                if set {
                    p.at(
                        &format!("/agent_provider/{key}"),
                        format!("is for `template: command`; `template: {name}` brings its own image and command"),
                    );
                }
            }
            match &a.auth_token {
                None => p.at(
                    "/agent_provider",
                    format!("`template: {name}` needs `auth_token`: the host variable holding the provider's API key or OAuth token"),
                ),
                Some(t) if !is_env_name(t) => {
                    p.at("/agent_provider/auth_token", format!("{t:?} is not an environment variable name"))
                }
                Some(_) => {}
            }
        }
    }
}

/// `uid` or `uid:gid`, numbers, uid not 0.
pub fn parse_user(s: &str) -> Option<(u32, u32)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u.parse().ok()?, g.parse().ok()?),
        None => {
            let u = s.parse().ok()?;
            (u, u)
        }
    };
    (u != 0).then_some((u, g))
}

fn check_user(u: &super::types::GitUser, ptr: &str, p: &mut FileProblems<'_>) {
    if u.name.trim().is_empty() {
        p.at(&format!("{ptr}/name"), "must not be empty");
    }
    if !u.email.contains('@') || u.email.contains(char::is_whitespace) {
        p.at(&format!("{ptr}/email"), format!("{:?} is not an email address", u.email));
    }
}

fn repo_spec(name: &str, r: &RepoSpec, ptr: &str, p: &mut FileProblems<'_>) {
    if !is_repo_name(name) {
        p.at(
            ptr,
            format!("{name:?} must be letters, digits, '.', '_' or '-' (no leading '.', no '..', no '.git' suffix)"),
        );
    }
    if r.url.trim().is_empty() || r.url.starts_with('-') || r.url.contains(['\n', '\0']) {
        p.at(&format!("{ptr}/url"), format!("{:?} is not a usable git URL", r.url));
    }
    if r.provisioned_key && r.identity.is_some() {
        p.at(ptr, "give `identity` or `provisioned_key: true`, not both");
    }
    if r.provisioned_key != r.forge.is_some() {
        p.at(ptr, "`provisioned_key: true` and `forge` go together");
    }
    if let Some(id) = &r.identity {
        let path = super::resolve_path(p.file, id);
        if !path.is_file() {
            p.at(&format!("{ptr}/identity"), format!("{} does not exist", path.display()));
        }
    }
    if let Some(f) = &r.forge
        && !is_env_name(&f.token_ref)
    {
        p.at(&format!("{ptr}/forge/token_ref"), format!("{:?} is not an environment variable name", f.token_ref));
    }
    if is_ssh_url(&r.url) {
        if r.identity.is_none() && !r.provisioned_key {
            p.at(ptr, "an ssh url needs `identity` (a key file) or `provisioned_key: true`");
        }
        match &r.host_key {
            None => {
                p.at(ptr, "an ssh url needs `host_key` (the upstream's public host key; never trusted on first use)")
            }
            Some(k) if parse_host_key(k).is_none() => p.at(
                &format!("{ptr}/host_key"),
                "must be `<type> <base64>` (e.g. the line from `ssh-keyscan`, without the host name)",
            ),
            _ => {}
        }
    }
}

/// `ssh-ed25519 AAAA… [comment]` → (type, base64), checked.
pub fn parse_host_key(s: &str) -> Option<(String, String)> {
    let mut parts = s.split_whitespace();
    let kind = parts.next()?;
    let key = parts.next()?;
    let known = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"];
    if !known.contains(&kind) {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    Some((kind.to_string(), key.to_string()))
}

/// Per-file checks of an agent.
pub(crate) fn agent(a: &AgentFile, p: &mut FileProblems<'_>, search: &Search<'_>) {
    if let Some(b) = &a.bottle {
        for (i, name) in b.to_vec().iter().enumerate() {
            if !is_manifest_name(name) {
                let ptr = if matches!(b, super::types::OneOrMany::Many(_)) {
                    format!("/bottle/{i}")
                } else {
                    "/bottle".into()
                };
                p.at(&ptr, format!("{name:?} is not a bottle name"));
            }
        }
    }
    for (i, skill) in a.skills.iter().enumerate() {
        if !is_manifest_name(skill) {
            p.at(&format!("/skills/{i}"), format!("{skill:?} is not a skill name"));
        } else if search.skill(skill).is_none() {
            p.at(
                &format!("/skills/{i}"),
                format!("no skill {skill:?}: no skills/{skill}/ in the home or ./.bot-bottle/"),
            );
        }
    }
    if let Some(u) = a.git_gate.as_ref().and_then(|g| g.user.as_ref()) {
        check_user(u, "/git-gate/user", p);
    }
}

/// Checks of the merged bottle: what no single file can decide.
pub(crate) fn merged(r: &Resolved, out: &mut Vec<Problem>) {
    let whole = |key: &str| Loc { file: r.files.last().cloned().unwrap_or_default(), line: None, key: key.to_string() };
    if r.agent_provider.is_none() {
        out.push(Problem {
            at: whole("agent_provider"),
            message: "no bottle in the chain says what runs as the agent (agent_provider)".into(),
        });
    }
    // The routes as routes.json will carry them, through the one routes.json validator.
    let routes: Vec<Value> = r.routes.iter().enumerate().map(|(i, route)| route_json(&route.value, i)).collect();
    let doc = json!({"version": 1, "log": r.egress_log.unwrap_or(1), "routes": routes});
    if let Err(e) = common::formats::Routes::parse(doc.to_string().as_bytes(), std::path::Path::new("routes.json")) {
        for problem in e.problems {
            // `routes[3].matches[0].paths` → the manifest route it came from.
            let (index, rest) = split_route_key(&problem.key);
            let at = match index.and_then(|i| r.routes.get(i)) {
                Some(route) => r.loc_in(route, &key_to_pointer(&rest)),
                None => whole(&format!("egress.{}", problem.key)),
            };
            out.push(Problem { at, message: problem.message });
        }
    }
}

/// The route as `routes.json` has it, with `auth.token_env` set to slot `slot`'s name (the
/// validator only checks it is a name).
pub fn route_json(r: &super::types::RouteSpec, slot: usize) -> Value {
    let mut v = serde_json::to_value(r).expect("a route serializes");
    if let Some(auth) = v.get_mut("auth").and_then(Value::as_object_mut) {
        auth.remove("token_ref");
        auth.insert("token_env".into(), Value::String(format!("{}{slot}", common::consts::env::EGRESS_TOKEN_PREFIX)));
    }
    v
}

fn split_route_key(key: &str) -> (Option<usize>, String) {
    let Some(rest) = key.strip_prefix("routes[") else { return (None, String::new()) };
    let Some((n, tail)) = rest.split_once(']') else { return (None, String::new()) };
    (n.parse().ok(), tail.to_string())
}

/// `.matches[0].paths` → `/matches/0/paths`.
fn key_to_pointer(key: &str) -> String {
    let mut out = String::new();
    for part in key.split(['.', '[']).filter(|p| !p.is_empty()) {
        out.push('/');
        out.push_str(&escape(part.trim_end_matches(']')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_sources() {
        assert_eq!(EnvSource::parse("?").unwrap(), EnvSource::Prompt { text: None });
        assert_eq!(EnvSource::parse("?Your key").unwrap(), EnvSource::Prompt { text: Some("Your key".into()) });
        assert_eq!(EnvSource::parse("${HOME_VAR}").unwrap(), EnvSource::Host { var: "HOME_VAR".into() });
        assert_eq!(EnvSource::parse("plain").unwrap(), EnvSource::Literal { value: "plain".into() });
        assert!(EnvSource::parse("${1BAD}").is_err());
        assert!(EnvSource::parse("pre-${X}").unwrap_err().contains("whole value"));
    }

    #[test]
    fn users_and_host_keys() {
        assert_eq!(parse_user("1000"), Some((1000, 1000)));
        assert_eq!(parse_user("1000:50"), Some((1000, 50)));
        assert_eq!(parse_user("0"), None);
        assert_eq!(parse_user("0:0"), None);
        assert_eq!(parse_user("agent"), None);
        assert!(
            parse_host_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x")
                .is_some()
        );
        assert!(parse_host_key("ssh-ed25519 not-base64!").is_none());
        assert!(parse_host_key("github.com ssh-ed25519 AAAA").is_none());
    }
}
