//! The provider templates with the real CLIs: `bot-bottle start --headless --prompt "say hi"`
//! runs Claude Code / Codex from the template's image, in a real bottle, against a stand-in
//! provider (`fixtures/provider.py`) reached through the bottle's `hosts` pin and
//! `egress.upstream_ca`. The assertions read the stand-in's own record, what the CLI printed,
//! and what the running agent container holds.

use std::time::{Duration, Instant};

use tests::agents::{Home, Provider, credential};
use tests::bottle::{collect_stderr, header};
use tests::docker_available;

/// What both CLIs' tests check; `model_path` is the provider API's path, `credential_header`
/// the header the real credential must arrive in (`scheme` before it).
struct Case<'a> {
    template: &'a str,
    key_prefix: &'a str,
    model_path: &'a str,
    credential_header: &'a str,
    scheme: &'a str,
    placeholder_prefix: &'a str,
    /// What in the first model request shows the CLI listed the supervise MCP server's tools.
    mcp_listed: &'a [&'a str],
    extra: &'a str,
}

fn one_turn(case: Case<'_>) {
    if !docker_available() {
        return;
    }
    let answer = credential("stand-in answer ").replace(' ', "-");
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(dir.path(), &answer, true);
    let key = credential(case.key_prefix);
    let home = Home::new(case.template, &provider, key.clone(), case.extra);

    let mut child = home.spawn_headless("say hi");
    let stderr = collect_stderr(&mut child);
    // The first build of the template image takes minutes; a launch that ends first ends the
    // wait (its stderr then says why), rather than leaving the test waiting out the whole bound.
    let deadline = Instant::now() + Duration::from_secs(900);
    let arrived = loop {
        let ended = child.try_wait().unwrap().is_some();
        if provider.wait_for(case.model_path, Duration::from_secs(1)) {
            break true;
        }
        if ended || Instant::now() >= deadline {
            break false;
        }
    };
    // Mid-turn (the stand-in holds its answer): look inside the running agent.
    let view = if arrived {
        home.agent_container(Duration::from_secs(5)).map(|c| home.agent_view(&c)).unwrap_or_default()
    } else {
        String::new()
    };
    provider.release();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = stderr.lock().unwrap().clone();
    let requests = provider.requests();
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}\nrecord:\n{requests:#?}\naudit:\n{:#?}", home.audit());
    assert!(arrived, "no {} request reached the stand-in\n{ctx}", case.model_path);
    assert_eq!(out.status.code(), Some(0), "the CLI's exit code is bot-bottle's\n{ctx}");

    // The CLI printed the stand-in's answer.
    assert!(stdout.contains(&answer), "the CLI did not print the stand-in's answer\n{ctx}");

    // The stand-in's own record: every model request carried the real credential, in the
    // provider's header; no request anywhere carried the placeholder.
    let model: Vec<_> =
        requests.iter().filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(case.model_path))).collect();
    assert!(!model.is_empty(), "{ctx}");
    let expected = if case.scheme.is_empty() { key.clone() } else { format!("{} {key}", case.scheme) };
    for r in &model {
        assert_eq!(header(r, case.credential_header), Some(expected.as_str()), "{ctx}");
    }
    let record = serde_json::to_string(&requests).unwrap();
    assert!(!record.contains(case.placeholder_prefix), "the placeholder reached the provider\n{ctx}");

    // The CLI listed the supervise MCP server (connected with the bottle's token): the model
    // saw it in its first request.
    let body = model[0]["body"].as_str().unwrap_or_default();
    for listed in case.mcp_listed {
        assert!(body.contains(listed), "{listed} is not in the model request\n{ctx}");
    }

    // The running agent: environment, argv, files, and the container's configuration hold the
    // placeholder and never the real credential.
    assert!(view.contains(case.placeholder_prefix), "the look inside the agent saw nothing\n{view}");
    assert!(!view.contains(&key), "the agent holds the real credential");
    assert!(!stdout.contains(&key) && !stderr.contains(&key), "the credential was printed");

    // The egress audit (kept in the home at teardown): the model calls were allowed; whatever
    // else the CLI tried was denied and audited, and the turn went on regardless.
    let audit = home.audit();
    let line = |a: &serde_json::Value| format!("{} {} {}{}", a["event"], a["method"], a["host"], a["path"]);
    let provider_host = if case.template == "claude" { "api.anthropic.com" } else { "api.openai.com" };
    assert!(
        audit.iter().any(|a| a["event"] == "allow"
            && a["host"] == provider_host
            && a["path"].as_str().is_some_and(|p| p.starts_with(case.model_path))),
        "no allowed model call in the audit\n{ctx}"
    );
    let denied: Vec<String> = audit.iter().filter(|a| a["event"] == "deny").map(line).collect();
    assert!(!denied.iter().any(|d| d.contains(case.model_path)), "a model call was denied: {denied:?}");
    eprintln!("{}: denied and audited, the turn went on: {denied:?}", case.template);

    assert_eq!(home.leftovers(), Vec::<String>::new(), "{ctx}");
}

/// Claude Code headless, with an Anthropic API key: `x-api-key` on the route.
#[test]
fn claude_code_runs_a_turn_with_a_key_it_never_holds() {
    one_turn(Case {
        template: "claude",
        key_prefix: "sk-ant-api03-e2e-",
        model_path: "/v1/messages",
        credential_header: "x-api-key",
        scheme: "",
        placeholder_prefix: "sk-ant-api03-bot-bottle-placeholder",
        mcp_listed: &["mcp__supervise__ask_operator", "mcp__supervise__request_egress"],
        // A 4xx is final after two retries rather than a minute of them.
        extra: "env:\n  CLAUDE_CODE_MAX_RETRIES: \"2\"\n",
    });
}

/// Codex headless, with an OpenAI API key: `Authorization: Bearer` on the route.
#[test]
fn codex_runs_a_turn_with_a_key_it_never_holds() {
    one_turn(Case {
        template: "codex",
        key_prefix: "sk-proj-e2e-",
        model_path: "/v1/responses",
        credential_header: "authorization",
        scheme: "Bearer",
        placeholder_prefix: "sk-proj-bot-bottle-placeholder",
        // Codex 0.171 lists an MCP server as a deferred namespace with the description the
        // server gave at initialize, and loads the tools' schemas when the model asks.
        mcp_listed: &["mcp__supervise: Tools to reach the human operator"],
        extra: "",
    });
}

/// Every runtime an agent uses trusts the bottle CA and goes through the proxy, inside the real
/// template image (Claude Code's: Debian, Node, Python, git): one row per runtime, each fetching
/// from the stand-in through the bottle's only way out.
#[test]
fn every_runtime_in_the_agent_image_goes_through_the_proxy() {
    use orchestrator::manifest::types::Template;
    use tests::agents::{Files, template_image};
    use tests::bottle::checks;
    if !docker_available() {
        return;
    }
    let image = template_image(Template::Claude);
    let tmp = tempfile::tempdir().unwrap();
    let files = Files::start(&tmp.path().join("files"));
    let upstream = tests::bottle::GitUpstream::start(&tmp.path().join("git"), &tests::host_gateway());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("bottles")).unwrap();
    std::fs::write(
        home.join("bottles/matrix.md"),
        format!(
            "---\nhosts:\n  files.test: host-gateway\n  git.test: host-gateway\n\
             egress:\n  log: 2\n  upstream_ca: {ca}\n  routes:\n    - host: files.test\n      port: {port}\n\
             git-gate:\n  repos:\n    app:\n      url: {url}\n      identity: {identity}\n      host_key: {host_key}\n\
             agent_provider:\n  template: command\n  image: {image}\n  command: [bash, /etc/bot-bottle/prompt.md]\n---\n",
            ca = files.ca.display(),
            port = files.port,
            url = upstream.url(),
            identity = upstream.identity.display(),
            host_key = upstream.host_key,
        ),
    )
    .unwrap();
    let script = format!(
        r#"F=https://files.test:{port}
row() {{ echo "CHECK $1 $(echo "$2" | tail -n 1)"; }}
row curl "$(curl -s --max-time 20 $F/hello.txt 2>&1)"
row git "$(git clone -q $F/repo.git /tmp/repo 2>&1 && cat /tmp/repo/README)"
row git_gate "$(git clone -q {gated} /tmp/gated 2>&1 && cat /tmp/gated/README.md)"
row python_requests "$(python3 -c 'import requests, sys; print(requests.get(sys.argv[1] + "/hello.txt", timeout=20).text)' $F 2>&1)"
row python_urllib "$(python3 -c 'import urllib.request, sys; print(urllib.request.urlopen(sys.argv[1] + "/hello.txt", timeout=20).read().decode())' $F 2>&1)"
row pip "$(pip install -q --no-cache-dir --target /tmp/pipt --index-url $F/simple/ bbdemo 2>&1 && PYTHONPATH=/tmp/pipt python3 -c 'import bbdemo; print(bbdemo.VALUE)' 2>&1)"
row node_fetch "$(node -e 'fetch(process.argv[1] + "/hello.txt").then(r => r.text()).then(t => console.log(t.trim()), e => console.log("error", e.cause ? e.cause.code || e.cause.message : e.message))' $F 2>&1)"
row node_https "$(node -e 'require("https").get(process.argv[1] + "/hello.txt", r => {{ let b = ""; r.on("data", d => b += d); r.on("end", () => console.log(b.trim())); }}).on("error", e => console.log("error", e.code || e.message))' $F 2>&1)"
row npm "$(mkdir -p /tmp/npmt && cd /tmp/npmt && npm install --no-audit --no-fund --registry $F/npm/ bbdemo 2>&1 && node -e 'console.log(require("/tmp/npmt/node_modules/bbdemo"))' 2>&1)"
"#,
        port = files.port,
        gated = upstream.url(),
    );
    let out = std::process::Command::new(tests::bin_dir().join("bot-bottle"))
        .args(["start", "--bottle", "matrix", "--headless", "--prompt", &script])
        .env("BOT_BOTTLE_HOME", &home)
        .env("BOT_BOTTLE_BIN_DIR", tests::bin_dir())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = format!(
        "stdout:\n{stdout}\nstderr:\n{}\nstand-in saw: {:?}",
        String::from_utf8_lossy(&out.stderr),
        files.paths()
    );
    let rows = checks(&stdout);
    let hello = "hello-from-the-stand-in";
    let expect = [
        ("curl", hello),
        ("git", "cloned-from-the-stand-in"),
        // The upstream's ssh URL, rewritten by the bottle's git config to the gate.
        ("git_gate", "the app"),
        ("python_requests", hello),
        ("python_urllib", hello),
        ("pip", "from-the-stand-in-index"),
        ("node_fetch", hello),
        ("node_https", hello),
        ("npm", "from-the-stand-in-registry"),
    ];
    let failed: Vec<String> = expect
        .iter()
        .filter(|(row, want)| rows.get(*row).map(String::as_str) != Some(*want))
        .map(|(row, want)| format!("{row}: want {want:?}, got {:?}", rows.get(*row)))
        .collect();
    assert!(failed.is_empty(), "rows that failed:\n{}\n{ctx}", failed.join("\n"));
    assert_eq!(out.status.code(), Some(0), "{ctx}");
}
