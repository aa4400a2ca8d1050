//! `template: codex` — the Codex CLI (`@openai/codex`, `docker/agents/codex/`).
//!
//! - Endpoint: a custom model provider in `config.toml` (`wire_api = "responses"`: plain
//!   streaming `POST /v1/responses`). The built-in provider tries a Responses WebSocket first and
//!   waits seconds before falling back; `OPENAI_BASE_URL` is ignored by the CLI.
//! - Credential: `Authorization: Bearer`, set by the proxy; the agent holds a placeholder in
//!   `OPENAI_API_KEY` (the provider's `env_key`) and `CODEX_API_KEY`.
//! - Quiet: `[analytics] enabled = false`, `[features] plugins = false,
//!   api_key_model_discovery = false`, no update check: otherwise it reaches github.com,
//!   chatgpt.com and ab.chatgpt.com (denied and audited in a bottle, but retried for seconds).
//! - Trust: `CODEX_CA_CERTIFICATE` (the merged bundle).
//! - `sandbox_mode = "danger-full-access"`: the bottle is the sandbox; Codex's own Linux sandbox
//!   needs namespaces a capability-less container does not grant, so its commands would fail.
//! - MCP: `[mcp_servers.supervise]` with `url` and `bearer_token_env_var = "MCP_SUPERVISE_TOKEN"`
//!   (the token stays in the environment, not in the file). Codex 0.171 names the server and its
//!   description in every request ("Deferred tool namespaces: mcp__supervise") and loads the
//!   tools' schemas when the model asks for them.
//! - `CODEX_HOME=~/.codex`, its `config.toml` copied in from `/etc/bot-bottle/codex-config.toml`
//!   with `$MCP_SUPERVISE_URL` filled in;
//!   skills linked into `$CODEX_HOME/skills/`.
//! - Headless: `codex exec --skip-git-repo-check <prompt>`, stdin from `/dev/null`. Interactive:
//!   `codex --no-daemon [<prompt>]`: the TUI otherwise runs a background app server copied into
//!   `$CODEX_HOME`, and the agent's home is mounted `noexec`.

use super::{Input, PROMPT_ARG, Rendered, link_skills, provider_route, toml_str};
use crate::manifest::types::AgentProvider;
use crate::plan::provision;

pub(super) const HOST: &str = "api.openai.com";
pub(super) const PLACEHOLDER: &str =
    "sk-proj-bot-bottle-placeholder-the-proxy-sets-the-real-key-on-api-openai-com-000000000000000000000000000000000000";
const CONFIG_FILE: &str = "codex-config.toml";
const CODEX_HOME: &str = "/home/agent/.codex";
/// Stands for `$MCP_SUPERVISE_URL` in the config file until the command copies it.
const SUPERVISE_URL: &str = "@MCP_SUPERVISE_URL@";

pub(super) fn render(p: &AgentProvider, input: &Input) -> Rendered {
    let env = [
        ("CODEX_HOME", CODEX_HOME),
        ("OPENAI_API_KEY", PLACEHOLDER),
        ("CODEX_API_KEY", PLACEHOLDER),
        ("CODEX_CA_CERTIFICATE", provision::CA_BUNDLE),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let mut config = format!(
        "# Written by bot-bottle (template: codex).\n\
         model_provider = \"bottle\"\n\
         sandbox_mode = \"danger-full-access\"\n\
         check_for_update_on_startup = false\n\
         \n\
         [model_providers.bottle]\n\
         name = \"OpenAI (through the bottle's egress proxy)\"\n\
         base_url = \"https://{HOST}/v1\"\n\
         env_key = \"OPENAI_API_KEY\"\n\
         wire_api = \"responses\"\n\
         \n\
         [analytics]\n\
         enabled = false\n\
         \n\
         [features]\n\
         plugins = false\n\
         api_key_model_discovery = false\n\
         \n\
         [projects.{home}]\n\
         trust_level = \"trusted\"\n",
        home = toml_str(provision::HOME),
    );
    if input.supervise {
        config.push_str(&format!(
            "\n[mcp_servers.supervise]\nurl = \"{SUPERVISE_URL}\"\nbearer_token_env_var = {}\n",
            toml_str(provision::SUPERVISE_TOKEN_ENV)
        ));
    }

    // The supervise URL is filled in from the agent's environment as the file is copied (a
    // backend may learn the bundle's port only at launch).
    let mut script = format!(
        "set -e\nmkdir -p \"$CODEX_HOME\"\n\
         sed \"s|{SUPERVISE_URL}|${{{url_env}:-}}|\" {}/{CONFIG_FILE} > \"$CODEX_HOME/config.toml\"\n",
        provision::AGENT_DIR,
        url_env = common::consts::env::MCP_SUPERVISE_URL,
    );
    script.push_str(&link_skills("\"$CODEX_HOME/skills\""));
    if input.headless {
        script.push_str(&format!("exec codex exec --skip-git-repo-check {PROMPT_ARG} </dev/null\n"));
    } else {
        script.push_str(&format!(
            "prompt={PROMPT_ARG}\nif [ -n \"$prompt\" ]; then set -- \"$prompt\"; else set --; fi\nexec codex --no-daemon \"$@\"\n"
        ));
    }

    Rendered {
        command: vec!["sh".into(), "-c".into(), script],
        env,
        files: vec![(CONFIG_FILE.into(), config)],
        route: Some(provider_route(
            HOST,
            &[("POST", "/v1/responses"), ("GET", "/v1/models")],
            p.auth_token.as_deref(),
            "Authorization",
            "Bearer",
        )),
    }
}
