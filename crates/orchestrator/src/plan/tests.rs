//! The plan of a bottle that uses every feature, as text and JSON snapshots (temp paths
//! replaced by `[TMP]`), and the properties every plan must have.

use std::net::Ipv4Addr;
use std::path::Path;

use super::*;
use crate::home::Home;
use crate::manifest::types::Template;
use crate::manifest::{self, Request, Search};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        for d in ["bottles", "agents", "skills/review", "keys", "agent-image"] {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::write(home.join("keys/deploy"), "PRIVATE KEY BYTES").unwrap();
        std::fs::write(home.join("keys/corp-ca.pem"), "CORP CA").unwrap();
        std::fs::write(home.join("agent-image/Dockerfile"), "FROM debian:bookworm-slim\n").unwrap();
        std::fs::write(
            home.join("bottles/base.md"),
            "---\nenv:\n  LOG_LEVEL: debug\n  API_KEY: \"?Your API key\"\n  FROM_HOST: \"${PLAN_TEST_HOST_VALUE}\"\n\
             egress:\n  upstream_ca: ../keys/corp-ca.pem\n  routes:\n    - host: api.example.com\n      auth: {token_ref: PLAN_TEST_TOKEN}\n\
             \x20     matches:\n        - paths: [{type: prefix, value: /v1/}]\n          methods: [GET, POST]\n\
             \x20   - host: \"*.pkg.example.com\"\n---\n",
        )
        .unwrap();
        std::fs::write(
            home.join("bottles/dev.md"),
            "---\nextends: base\nhosts:\n  git.internal.test: host-gateway\n  api.example.com: 10.9.8.7\n\
             git-gate:\n  user: {name: Dev Agent, email: dev@bottle.invalid}\n  repos:\n    app:\n      url: ssh://git@git.internal.test:2222/org/app.git\n\
             \x20     identity: ../keys/deploy\n      host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n\
             \x20     push: {branches: [\"agent/*\"]}\nsupervise: {wait_timeout: 45}\n\
             agent_provider:\n  template: command\n  dockerfile: ../agent-image/Dockerfile\n  command: [run-agent, --fast]\n---\n",
        )
        .unwrap();
        std::fs::write(
            home.join("agents/reviewer.md"),
            "---\nbottle: dev\nskills: [review]\n---\nReview the open branch.\n",
        )
        .unwrap();
        Fixture { dir }
    }

    fn home(&self) -> Home {
        Home::new(self.dir.path().join("home"))
    }

    fn facts(&self) -> HostFacts {
        HostFacts {
            home: self.home().root().to_path_buf(),
            nonce: "a1b2c3".into(),
            now: "2026-11-29T12:00:00Z".into(),
            owner: "4242:777".into(),
            uid: 0,
            gid: 0,
            used_subnets: vec!["172.17.0.0/16".parse().unwrap()],
            host_gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
            sidecar_image: "bot-bottle-sidecars:0123456789abcdef".into(),
            runsc: false,
            env_present: vec!["PLAN_TEST_TOKEN".into(), "PLAN_TEST_HOST_VALUE".into()],
            hostname: "workstation".into(),
            oauth_vars: Vec::new(),
            used_loopback: vec![Ipv4Addr::new(127, 77, 0, 1)],
            loopback_aliases: None,
        }
    }

    fn plan(&self, opts: &Options) -> BottlePlan {
        let home = self.home();
        let search = Search { home: &home, cwd: self.dir.path() };
        let (r, _) = manifest::load(&search, &Request { agent: Some("reviewer".into()), bottles: vec![] }).unwrap();
        plan(&r, &self.facts(), opts).unwrap()
    }

    fn scrub(&self, s: &str) -> String {
        s.replace(&self.dir.path().display().to_string(), "[TMP]").replace(&home_id(self.home().root()), "[HOME_ID]")
    }
}

fn headless() -> Options {
    Options { headless: true, prompt: Some("Focus on the parser.".into()), ..Default::default() }
}

#[test]
fn full_plan_as_text() {
    let f = Fixture::new();
    insta::assert_snapshot!(f.scrub(&text(&f.plan(&headless()))));
}

#[test]
fn smolvm_plan_as_text() {
    let f = Fixture::new();
    insta::assert_snapshot!(f.scrub(&text(&f.plan(&Options { backend: Some(Backend::Smolvm), ..headless() }))));
}

#[test]
fn full_plan_as_json() {
    let f = Fixture::new();
    insta::assert_snapshot!(f.scrub(&serde_json::to_string_pretty(&f.plan(&headless())).unwrap()));
}

#[test]
fn a_plan_holds_no_secret_value_and_every_secret_by_name() {
    let f = Fixture::new();
    let p = f.plan(&headless());
    let json = serde_json::to_string(&p).unwrap();
    let txt = text(&p);
    for shown in [&json, &txt] {
        assert!(!shown.contains("PRIVATE KEY BYTES"), "a copied key's content is never in the plan");
        assert!(shown.contains("EGRESS_TOKEN_0"));
        assert!(shown.contains("host:PLAN_TEST_TOKEN"));
    }
    let names: Vec<(&str, &str)> = p.secrets.iter().map(|s| (s.name.as_str(), s.source.as_str())).collect();
    assert_eq!(
        names,
        [("EGRESS_TOKEN_0", "host:PLAN_TEST_TOKEN"), ("API_KEY", "prompt"), ("FROM_HOST", "host:PLAN_TEST_HOST_VALUE")]
    );
    // The bundle gets the token by slot name only; the agent never gets it.
    assert!(p.bundle.env.iter().any(|e| e.name == "EGRESS_TOKEN_0" && e.value.is_none()));
    assert!(!p.agent.env.iter().any(|e| e.name.starts_with("EGRESS_TOKEN")));
}

#[test]
fn the_agent_is_sealed_and_reaches_only_its_bundle() {
    let f = Fixture::new();
    let p = f.plan(&headless());
    let n = &p.network;
    let Link::Internal { network, gateway, bundle_ip, agent_ip } = &n.link else { panic!("docker: an internal link") };
    assert!(network.internal && !n.egress.internal);
    let subnet = network.subnet.unwrap();
    assert!(net::POOL.overlaps(&subnet) && !subnet.overlaps(&"172.17.0.0/16".parse().unwrap()));
    assert_eq!((*gateway, *bundle_ip, *agent_ip), (subnet.host(1), subnet.host(2), subnet.host(3)));
    let c = p.agent.container().unwrap();
    assert_eq!(c.cap_drop, ["ALL"]);
    assert_eq!(c.security_opt, ["no-new-privileges"]);
    assert!(c.read_only_root);
    assert!(c.firewall.ruleset.contains(&format!("ip daddr {bundle_ip} tcp dport {{ 9099, 9420, 9100 }} accept")));
    assert!(c.firewall.ruleset.contains("policy drop"));
    assert!(c.firewall.ruleset.contains("ip daddr 127.0.0.11 reject"));
    // The bundle: pins for the operator's hosts, the upstream CA, the supervise token file.
    let env = |name: &str| p.bundle.env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env("EGRESS_RESOLVE").as_deref(), Some("api.example.com=10.9.8.7,git.internal.test=172.17.0.1"));
    assert_eq!(env("EGRESS_UPSTREAM_CA").as_deref(), Some(bundle_path::UPSTREAM_CA));
    assert_eq!(env("SUPERVISE_ALLOWED_HOSTS"), Some(bundle_ip.to_string()));
    assert_eq!(p.bundle.extra_hosts, ["api.example.com:10.9.8.7", "git.internal.test:host-gateway"]);
    assert_eq!(p.bundle.user, "10001:10001", "root operators run the bundle as the image's user");
    // The agent gets none of the bundle's pins.
    assert!(!p.agent.env.iter().any(|e| e.name == "EGRESS_RESOLVE"));
}

#[test]
fn a_smolvm_plan_puts_the_agent_in_a_vm_that_reaches_only_its_loopback_address() {
    let f = Fixture::new();
    let p = f.plan(&Options { backend: Some(Backend::Smolvm), ..headless() });
    let Link::Loopback { ip } = p.network.link else { panic!("smolvm: a loopback link") };
    assert!(net::LOOPBACK_POOL.overlaps(&Subnet::new(ip, 32)));
    assert_ne!(ip, Ipv4Addr::new(127, 77, 0, 1), "an address another bottle holds is skipped");
    assert!(!p.steps.is_empty());
    // The bundle publishes its three ports on that address only; supervise accepts that Host.
    let publish = p.bundle.publish.as_ref().unwrap();
    assert_eq!((publish.ip, publish.ports.clone()), (ip, vec![9099, 9420, 9100]));
    let env = |name: &str| p.bundle.env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env("SUPERVISE_ALLOWED_HOSTS"), Some(ip.to_string()));
    let Sandbox::Vm(vm) = &p.agent.sandbox else { panic!("a VM sandbox") };
    assert_eq!(vm.allow_cidr, format!("{ip}/32"));
    let flags = vm.flags.join(" ");
    assert!(flags.contains(&format!("--allow-cidr {ip}/32")), "{flags}");
    assert!(flags.contains(":/etc/bot-bottle:ro"), "{flags}");
    assert!(flags.contains(&format!("--label bot-bottle.slug={}", p.slug)), "{flags}");
    // Port-bearing variables are filled in at launch; the rest are known now.
    let agent = |name: &str| p.agent.env.iter().find(|e| e.name == name).unwrap().clone();
    assert_eq!(agent("HTTPS_PROXY").value, None);
    assert!(agent("HTTPS_PROXY").source.unwrap().contains("published"));
    assert_eq!(agent("NO_PROXY").value.unwrap(), format!("localhost,127.0.0.1,::1,{ip}"));
    assert_eq!(agent("SSL_CERT_FILE").value.as_deref(), Some("/etc/bot-bottle/ca-bundle.pem"));
    // No internal network, no container, no firewall helper.
    assert!(p.agent.container().is_none());
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains("-internal") && !json.contains("-firewall"), "{json}");
    // Where loopback needs aliases (macOS): a configured one, or the command that makes one.
    let search = Search { home: &f.home(), cwd: f.dir.path() };
    let (r, _) = manifest::load(&search, &Request { agent: Some("reviewer".into()), bottles: vec![] }).unwrap();
    let opts = Options { backend: Some(Backend::Smolvm), ..headless() };
    let facts = HostFacts { loopback_aliases: Some(vec![Ipv4Addr::new(127, 77, 0, 9)]), ..f.facts() };
    let Link::Loopback { ip } = plan(&r, &facts, &opts).unwrap().network.link else { panic!("loopback") };
    assert_eq!(ip, Ipv4Addr::new(127, 77, 0, 9));
    let facts = HostFacts { loopback_aliases: Some(Vec::new()), ..f.facts() };
    let err = plan(&r, &facts, &opts).unwrap_err().to_string();
    assert!(err.contains("sudo ifconfig lo0 alias 127.77.0.2 up"), "{err}");
}

#[test]
fn known_hosts_patterns() {
    assert_eq!(known_hosts_pattern("ssh://git@github.com/org/x.git"), "github.com");
    assert_eq!(known_hosts_pattern("ssh://git@git.test:2222/org/x.git"), "[git.test]:2222");
    assert_eq!(known_hosts_pattern("ssh://git.test:22/x"), "git.test");
    assert_eq!(known_hosts_pattern("git@github.com:org/x.git"), "github.com");
    assert_eq!(known_hosts_pattern("ssh://git@[::1]:2222/x"), "[::1]:2222");
}

#[test]
fn slugs_are_readable_and_unique_per_launch() {
    assert_eq!(slug("My Agent!", "a1b2c3"), "my-agent-a1b2c3");
    assert_eq!(slug("***", "a1b2c3"), "bottle-a1b2c3");
    assert_eq!(slug(&"x".repeat(80), "a1b2c3").len(), 32 + 7);
    assert_ne!(home_id(Path::new("/a")), home_id(Path::new("/b")));
}

#[test]
fn a_missing_host_variable_is_a_plan_error_naming_the_manifest_line() {
    let f = Fixture::new();
    let home = f.home();
    let search = Search { home: &home, cwd: f.dir.path() };
    let (r, _) = manifest::load(&search, &Request { agent: Some("reviewer".into()), bottles: vec![] }).unwrap();
    let mut facts = f.facts();
    facts.env_present.clear();
    let err = plan(&r, &facts, &headless()).unwrap_err().to_string();
    assert!(
        err.contains("base.md:10: egress.routes[0].auth.token_ref: the host variable PLAN_TEST_TOKEN is not set"),
        "{err}"
    );
    assert!(err.contains("base.md:5: env.FROM_HOST: the host variable PLAN_TEST_HOST_VALUE is not set"), "{err}");
}

/// A provider template: the image, command, env and files come from the template; its route
/// (with the credential slot) joins the bottle's routes; the agent holds only the placeholder.
#[test]
fn a_template_bottle_adds_its_route_and_holds_a_placeholder() {
    let f = Fixture::new();
    std::fs::write(
        f.dir.path().join("home/bottles/claude.md"),
        "---\nextends: base\nagent_provider:\n  template: claude\n  auth_token: PLAN_TEST_ANTHROPIC\n---\n",
    )
    .unwrap();
    let home = f.home();
    let search = Search { home: &home, cwd: f.dir.path() };
    let (r, _) = manifest::load(&search, &Request { agent: None, bottles: vec!["claude".into()] }).unwrap();
    let mut facts = f.facts();
    let p = plan(&r, &facts, &headless()).unwrap_err();
    assert!(
        p.to_string().contains("agent_provider.auth_token: the host variable PLAN_TEST_ANTHROPIC is not set"),
        "{p}"
    );
    facts.env_present.push("PLAN_TEST_ANTHROPIC".into());
    let p = plan(&r, &facts, &headless()).unwrap();
    assert_eq!(p.agent.image, AgentImage::Template { template: Template::Claude });
    assert_eq!(p.agent.command[..2], ["sh", "-c"]);
    let routes = p.files.iter().find(|f| f.path == Path::new("egress/routes.json")).unwrap();
    let FileContent::Text { text } = &routes.content else { panic!() };
    let routes: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(routes["routes"][2]["host"], "api.anthropic.com");
    assert_eq!(routes["routes"][2]["auth"]["token_env"], "EGRESS_TOKEN_1");
    assert_eq!(routes["routes"][2]["auth"]["header"], "x-api-key");
    assert!(p.secrets.iter().any(|s| s.name == "EGRESS_TOKEN_1" && s.source == "host:PLAN_TEST_ANTHROPIC"));
    let placeholder = p.agent.env.iter().find(|e| e.name == "ANTHROPIC_API_KEY").unwrap();
    assert!(placeholder.value.as_deref().unwrap().starts_with("sk-ant-api03-bot-bottle-placeholder"));
    assert!(p.files.iter().any(|f| f.path == Path::new("agent/claude.json") && f.reader == Reader::Agent));
    // An OAuth token goes out as a bearer.
    facts.oauth_vars.push("PLAN_TEST_ANTHROPIC".into());
    let p = plan(&r, &facts, &headless()).unwrap();
    assert!(p.agent.env.iter().any(|e| e.name == "CLAUDE_CODE_OAUTH_TOKEN"));
}
