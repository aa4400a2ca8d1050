use super::*;

fn provider(t: Template) -> AgentProvider {
    AgentProvider {
        template: t,
        image: None,
        dockerfile: None,
        command: None,
        auth_token: Some("PROVIDER_KEY".into()),
        user: None,
        read_only_root: None,
    }
}

fn input(headless: bool, oauth: bool) -> Input {
    Input { headless, supervise: true, oauth }
}

fn env<'a>(r: &'a Rendered, name: &str) -> Option<&'a str> {
    r.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The route as routes.json carries it, through the one routes.json validator.
fn route_json(r: &Rendered) -> serde_json::Value {
    let route = crate::manifest::route_json(r.route.as_ref().unwrap(), 0);
    let doc = serde_json::json!({"version": 1, "routes": [route.clone()]});
    common::formats::Routes::parse(doc.to_string().as_bytes(), std::path::Path::new("routes.json")).unwrap();
    route
}

#[test]
fn command_has_no_template() {
    assert_eq!(render(&provider(Template::Command), &input(true, false)), None);
    assert_eq!(dockerfile(Template::Command), None);
}

#[test]
fn claude_with_an_api_key() {
    let r = render(&provider(Template::Claude), &input(true, false)).unwrap();
    assert_eq!(env(&r, "ANTHROPIC_API_KEY"), Some(claude::API_KEY_PLACEHOLDER));
    assert_eq!(env(&r, "CLAUDE_CODE_OAUTH_TOKEN"), None);
    for quiet in ["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "DISABLE_AUTOUPDATER", "DISABLE_TELEMETRY"] {
        assert_eq!(env(&r, quiet), Some("1"), "{quiet}");
    }
    // A real key's shape: sk-ant-api03- + 93 characters + AA.
    assert_eq!(claude::API_KEY_PLACEHOLDER.len(), 108);
    assert!(claude::API_KEY_PLACEHOLDER.ends_with("AA"));
    let route = route_json(&r);
    assert_eq!(route["host"], "api.anthropic.com");
    assert_eq!(route["auth"], serde_json::json!({"header": "x-api-key", "scheme": "", "token_env": "EGRESS_TOKEN_0"}));
    assert_eq!(
        route["matches"],
        serde_json::json!([{"methods": ["POST"], "paths": [{"type": "prefix", "value": "/v1/messages"}]}])
    );
    // The provider's route carries the repository's content: DLP reads it in standard mode.
    assert_eq!(route["dlp"]["mode"], "standard", "{route}");
    let script = &r.command[2];
    assert_eq!(r.command[..2], ["sh", "-c"]);
    assert!(script.contains("exec claude -p \"$(cat \"$BOT_BOTTLE_PROMPT_FILE\")\" --output-format text --mcp-config /etc/bot-bottle/mcp.json </dev/null"), "{script}");
    assert!(script.contains("cp /etc/bot-bottle/claude.json \"$HOME/.claude.json\""), "{script}");
    let (name, config) = &r.files[0];
    assert_eq!(name, "claude.json");
    let config: serde_json::Value = serde_json::from_str(config).unwrap();
    assert_eq!(config["hasCompletedOnboarding"], true);
    assert_eq!(config["customApiKeyResponses"]["approved"][0], &claude::API_KEY_PLACEHOLDER[88..]);
    assert_eq!(config["projects"]["/home/agent"]["hasTrustDialogAccepted"], true);
}

#[test]
fn claude_with_an_oauth_token_sends_a_bearer() {
    let r = render(&provider(Template::Claude), &input(false, true)).unwrap();
    assert_eq!(env(&r, "CLAUDE_CODE_OAUTH_TOKEN"), Some(claude::OAUTH_PLACEHOLDER));
    assert_eq!(env(&r, "ANTHROPIC_API_KEY"), None);
    assert!(claude::OAUTH_PLACEHOLDER.starts_with("sk-ant-oat01-"));
    assert_eq!(
        route_json(&r)["auth"],
        serde_json::json!({"header": "Authorization", "scheme": "Bearer", "token_env": "EGRESS_TOKEN_0"})
    );
    // Interactive: the prompt (when there is one) as the first message, MCP config after it.
    let script = &r.command[2];
    assert!(script.contains("exec claude \"$@\" --mcp-config /etc/bot-bottle/mcp.json"), "{script}");
    assert!(!script.contains("claude -p"), "{script}");
}

#[test]
fn codex_uses_a_responses_provider_and_keeps_the_mcp_token_in_the_environment() {
    let r = render(&provider(Template::Codex), &input(true, false)).unwrap();
    assert_eq!(env(&r, "OPENAI_API_KEY"), Some(codex::PLACEHOLDER));
    assert_eq!(env(&r, "CODEX_API_KEY"), Some(codex::PLACEHOLDER));
    assert_eq!(env(&r, "CODEX_CA_CERTIFICATE"), Some(crate::plan::provision::CA_BUNDLE));
    let route = route_json(&r);
    assert_eq!(route["host"], "api.openai.com");
    assert_eq!(route["auth"]["header"], "Authorization");
    assert_eq!(route["auth"]["scheme"], "Bearer");
    let (name, config) = &r.files[0];
    assert_eq!(name, "codex-config.toml");
    for line in [
        "model_provider = \"bottle\"",
        "base_url = \"https://api.openai.com/v1\"",
        "wire_api = \"responses\"",
        "env_key = \"OPENAI_API_KEY\"",
        "[analytics]\nenabled = false",
        "plugins = false",
        "api_key_model_discovery = false",
        "[mcp_servers.supervise]\nurl = \"@MCP_SUPERVISE_URL@\"\nbearer_token_env_var = \"MCP_SUPERVISE_TOKEN\"",
    ] {
        assert!(config.contains(line), "{line} missing from\n{config}");
    }
    let script = &r.command[2];
    assert!(
        script.contains("exec codex exec --skip-git-repo-check \"$(cat \"$BOT_BOTTLE_PROMPT_FILE\")\" </dev/null"),
        "{script}"
    );
    // Interactive: the TUI without its background app server (the home is noexec).
    let r = render(&provider(Template::Codex), &input(false, false)).unwrap();
    assert!(r.command[2].contains("exec codex --no-daemon \"$@\""), "{}", r.command[2]);
    // Without supervise, no MCP server.
    let r = render(&provider(Template::Codex), &Input { headless: true, supervise: false, oauth: false }).unwrap();
    assert!(!r.files[0].1.contains("mcp_servers"));
}

#[test]
fn the_image_tag_follows_the_dockerfile_and_the_base() {
    let a = image::tag(Template::Claude, "debian:bookworm-slim", "sha256:1").unwrap();
    assert!(a.starts_with("bot-bottle-agent-claude:"), "{a}");
    assert_eq!(a, image::tag(Template::Claude, "debian:bookworm-slim", "sha256:1").unwrap());
    assert_ne!(a, image::tag(Template::Claude, "debian:bookworm-slim", "sha256:2").unwrap());
    assert!(
        image::tag(Template::Codex, "debian:bookworm-slim", "sha256:1").unwrap().starts_with("bot-bottle-agent-codex:")
    );
    assert!(dockerfile(Template::Claude).unwrap().contains("@anthropic-ai/claude-code@2.1.197"));
    assert!(dockerfile(Template::Codex).unwrap().contains("@openai/codex@0.171.0"));
}

#[test]
fn oauth_vars_look_at_the_shape_only() {
    let vars = [("A", "sk-ant-oat01-xyz"), ("B", "sk-ant-api03-xyz"), ("C", "")];
    let found = oauth_vars(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
    assert_eq!(found, ["A"]);
}

#[test]
fn quoting() {
    assert_eq!(toml_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
}
