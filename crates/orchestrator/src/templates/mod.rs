//! Provider templates: what `agent_provider.template: claude | codex` means. Each template is a
//! pure function from the provider spec and a few facts to a [`Rendered`] agent — the image it
//! builds from a Dockerfile compiled into this binary, the command (headless and interactive),
//! the environment (a placeholder credential of the right shape, the CLI's quiet switches and
//! trust variables), the CLI's configuration files, and the provider's egress route whose
//! injected header carries the real credential. The plan (`crate::plan`) folds that in; nothing
//! here has side effects but [`image`], which builds the template's image.
//!
//! The agent never holds the real credential: the CLI starts with the placeholder, the proxy
//! strips whatever credential header the agent sends on the provider route and sets the real
//! one from the bundle's environment.
//!
//! A new template is a new file here with a `render` function and a Dockerfile under
//! `docker/agents/<name>/`, plus its arm in [`render`] and [`dockerfile`].

mod claude;
mod codex;
pub mod image;

use std::ffi::OsString;

use crate::manifest::types::{AgentProvider, AuthSpec, RouteSpec, Template};
use crate::manifest::{Resolved, Sourced};
use crate::plan::HostFacts;

/// What a template needs to know besides the provider spec.
#[derive(Debug, Clone)]
pub struct Input {
    /// `start --headless`: the CLI's non-interactive form.
    pub headless: bool,
    /// The supervise MCP server is on (its URL is `$MCP_SUPERVISE_URL` in the agent, known
    /// only at launch on some backends).
    pub supervise: bool,
    /// The credential in `auth_token` is an OAuth token (decided from its shape at launch by
    /// `launch::facts`, never from its value here).
    pub oauth: bool,
}

/// A template's agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The agent's argv.
    pub command: Vec<String>,
    /// Environment set in the agent (no secret among them: placeholders, switches, paths).
    pub env: Vec<(String, String)>,
    /// Files for the agent's read-only `/etc/bot-bottle/` (name, text); the command copies
    /// those the CLI must be able to write into the agent's home.
    pub files: Vec<(String, String)>,
    /// The provider's egress route; `auth.token_ref` is `agent_provider.auth_token`.
    pub route: Option<RouteSpec>,
}

/// The template's agent, `None` for `template: command`.
pub fn render(p: &AgentProvider, input: &Input) -> Option<Rendered> {
    match p.template {
        Template::Command => None,
        Template::Claude => Some(claude::render(p, input)),
        Template::Codex => Some(codex::render(p, input)),
    }
}

/// The template's part of a plan: the rendered agent, and its provider route as a manifest
/// route written where `agent_provider` is (so a problem with it names that place).
pub fn for_plan(r: &Resolved, facts: &HostFacts, headless: bool) -> Option<(Rendered, Option<Sourced<RouteSpec>>)> {
    let p = r.agent_provider.as_ref()?;
    let supervise = r.supervise.enabled.unwrap_or(true);
    let oauth = p.value.auth_token.as_ref().is_some_and(|v| facts.oauth_vars.contains(v));
    let input = Input { headless, supervise, oauth };
    let rendered = render(&p.value, &input)?;
    let route = rendered.route.clone().map(|value| Sourced { value, at: p.at.clone(), pointer: p.pointer.clone() });
    Some((rendered, route))
}

/// Names of the variables whose value is shaped like an Anthropic OAuth token (`sk-ant-oat…`).
/// Only the shape is looked at; no value leaves this function.
pub fn oauth_vars(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<String> {
    vars.filter(|(_, v)| v.as_encoded_bytes().starts_with(b"sk-ant-oat"))
        .filter_map(|(k, _)| k.into_string().ok())
        .collect()
}

/// The Dockerfile a template's image is built from (`docker/agents/<name>/Dockerfile`).
pub fn dockerfile(t: Template) -> Option<&'static str> {
    match t {
        Template::Command => None,
        Template::Claude => Some(include_str!("../../../../docker/agents/claude/Dockerfile")),
        Template::Codex => Some(include_str!("../../../../docker/agents/codex/Dockerfile")),
    }
}

/// The template's name as manifests spell it.
pub fn name(t: Template) -> &'static str {
    match t {
        Template::Command => "command",
        Template::Claude => "claude",
        Template::Codex => "codex",
    }
}

/// A provider route: `host` on 443, the given (method, path prefix) pairs only, the real
/// credential set as `header: scheme token`, DLP on in `standard` mode ([`provider_dlp`]).
pub(crate) fn provider_route(
    host: &str,
    allowed: &[(&str, &str)],
    token_ref: Option<&str>,
    header: &str,
    scheme: &str,
) -> RouteSpec {
    RouteSpec {
        host: host.to_string(),
        port: None,
        scheme: None,
        insecure_auth: None,
        auth: token_ref.map(|t| AuthSpec {
            token_ref: t.to_string(),
            header: Some(header.to_string()),
            scheme: Some(scheme.to_string()),
        }),
        matches: allowed
            .iter()
            .map(|(method, prefix)| {
                serde_json::json!({"methods": [method], "paths": [{"type": "prefix", "value": prefix}]})
            })
            .collect(),
        dlp: provider_dlp(),
        allow_doh: None,
    }
}

/// DLP on a provider route: the default detectors and action in `standard` mode. The model
/// provider's route carries the repository's own content (documentation examples, test
/// fixtures, placeholders), which strict mode, every other route's default, would refuse.
fn provider_dlp() -> Option<serde_json::Value> {
    Some(serde_json::json!({"mode": "standard"}))
}

/// A TOML basic string.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The shell lines every template's command starts with: the bottle's skills linked where the
/// CLI looks for them (`dir`), when the agent has any.
pub(crate) fn link_skills(dir: &str) -> String {
    let skills = crate::plan::provision::SKILLS_DIR;
    format!(
        "if [ -d {skills} ]; then mkdir -p {dir} && for s in {skills}/*; do [ -e \"$s\" ] && ln -sfn \"$s\" {dir}/; done; fi\n"
    )
}

/// `"$(cat "$BOT_BOTTLE_PROMPT_FILE")"`: the prompt as one argument.
pub(crate) const PROMPT_ARG: &str = "\"$(cat \"$BOT_BOTTLE_PROMPT_FILE\")\"";

#[cfg(test)]
mod tests;
