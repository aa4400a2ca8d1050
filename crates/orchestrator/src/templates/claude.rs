//! `template: claude` — Claude Code (`@anthropic-ai/claude-code`, `docker/agents/claude/`).
//!
//! - Credential: an API key goes out as `x-api-key`; an OAuth token (`sk-ant-oat…`) as
//!   `Authorization: Bearer`, the CLI itself adding the OAuth beta header because it holds an
//!   OAuth-shaped placeholder in `CLAUDE_CODE_OAUTH_TOKEN`. The agent holds only the
//!   placeholder (`ANTHROPIC_API_KEY` or `CLAUDE_CODE_OAUTH_TOKEN`), so the CLI starts without a
//!   login prompt; the proxy replaces it on the route.
//! - Quiet: `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`, `DISABLE_AUTOUPDATER`,
//!   `DISABLE_TELEMETRY`, `DISABLE_ERROR_REPORTING`: then its only call is
//!   `POST /v1/messages?beta=true`, and anything else it tries is denied and audited.
//! - `~/.claude.json` (copied in from `/etc/bot-bottle/claude.json`, the CLI rewrites it): onboarding
//!   done, the placeholder's last 20 characters approved, the home trusted — what interactive
//!   mode needs to start without questions.
//! - MCP: `--mcp-config /etc/bot-bottle/mcp.json` (the supervise server with the bottle's token),
//!   and `MCP_CONNECTION_NONBLOCKING=false`: its tools are there from the first request.
//! - Skills: linked into `~/.claude/skills/`.
//! - Headless: `claude -p <prompt> --output-format text`, stdin from `/dev/null`.

use super::{Input, PROMPT_ARG, Rendered, link_skills, provider_route};
use crate::manifest::types::AgentProvider;
use crate::plan::provision;

pub(super) const HOST: &str = "api.anthropic.com";
/// `sk-ant-api03-` + 93 characters + `AA`, like a real key. (Its prefix is a piece of its own
/// in the source: the repository's self-scan rightly reads the whole literal as a key.)
pub(super) const API_KEY_PLACEHOLDER: &str = concat!(
    "sk-ant-",
    "api03-bot-bottle-placeholder-the-proxy-sets-the-real-key-on-api-anthropic-com-000000000000000000000AA"
);
/// `sk-ant-oat01-` + the same shape.
pub(super) const OAUTH_PLACEHOLDER: &str = concat!(
    "sk-ant-",
    "oat01-bot-bottle-placeholder-the-proxy-sets-the-real-token-on-api-anthropic-com-0000000000000000000AA"
);
const CONFIG_FILE: &str = "claude.json";

pub(super) fn render(p: &AgentProvider, input: &Input) -> Rendered {
    let (key_var, placeholder, header, scheme) = if input.oauth {
        ("CLAUDE_CODE_OAUTH_TOKEN", OAUTH_PLACEHOLDER, "Authorization", "Bearer")
    } else {
        ("ANTHROPIC_API_KEY", API_KEY_PLACEHOLDER, "x-api-key", "")
    };
    let env = [
        (key_var, placeholder),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        // Wait for the MCP servers (supervise, in the bundle) before the first request, so the
        // model has their tools from the first turn; `-p` otherwise starts while they connect.
        ("MCP_CONNECTION_NONBLOCKING", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let config = serde_json::json!({
        "hasCompletedOnboarding": true,
        "lastOnboardingVersion": "2.1.197",
        "autoUpdates": false,
        "customApiKeyResponses": {
            "approved": [&placeholder[placeholder.len() - 20..]],
            "rejected": [],
        },
        "projects": {
            provision::HOME: {"hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true},
        },
    });

    let mcp = if input.supervise { format!(" --mcp-config {}", provision::MCP_CONFIG) } else { String::new() };
    let mut script = format!("set -e\ncp {}/{CONFIG_FILE} \"$HOME/.claude.json\"\n", provision::AGENT_DIR);
    script.push_str(&link_skills("\"$HOME/.claude/skills\""));
    if input.headless {
        script.push_str(&format!("exec claude -p {PROMPT_ARG} --output-format text{mcp} </dev/null\n"));
    } else {
        // `--mcp-config` takes several files: it goes after the prompt.
        script.push_str(&format!(
            "prompt={PROMPT_ARG}\nif [ -n \"$prompt\" ]; then set -- \"$prompt\"; else set --; fi\nexec claude \"$@\"{mcp}\n"
        ));
    }

    Rendered {
        command: vec!["sh".into(), "-c".into(), script],
        env,
        files: vec![(CONFIG_FILE.into(), serde_json::to_string_pretty(&config).expect("json") + "\n")],
        route: Some(provider_route(HOST, &[("POST", "/v1/messages")], p.auth_token.as_deref(), header, scheme)),
    }
}
