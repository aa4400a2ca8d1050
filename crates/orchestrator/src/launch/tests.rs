//! The launch sequence over the recording fake engine: what it creates, in which order, that a
//! failure injected at any step unwinds exactly what was set up (in reverse), and that no secret
//! value reaches a command line.

use std::net::Ipv4Addr;
use std::path::Path;

use common::Secret;

use super::*;
use crate::agent::docker::DockerRuntime;
use crate::engine::fake::FakeEngine;
use crate::home::Home;
use crate::image::{BINARIES, DEFAULT_BASE_IMAGE};
use crate::manifest::{self, Request, Search};
use crate::plan::{HostFacts, Options};

const TOKEN: &str = "launch-test-token-7f3a9c";

struct Fixture {
    dir: tempfile::TempDir,
    sidecar: Sidecar,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let bins = dir.path().join("bin");
        for d in [home.join("bottles"), home.join("agents"), bins.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        for b in BINARIES {
            std::fs::write(bins.join(b), b).unwrap();
        }
        std::fs::write(
            home.join("bottles/b.md"),
            "---\negress:\n  routes:\n    - host: api.example.com\n      auth: {token_ref: LAUNCH_TEST_TOKEN}\n\
             git-gate:\n  repos:\n    app:\n      url: file:///srv/app.git\n\
             agent_provider:\n  template: command\n  image: agent:1\n  command: [agent, --go]\n---\n",
        )
        .unwrap();
        std::fs::write(home.join("agents/a.md"), "---\nbottle: b\n---\nDo it.\n").unwrap();
        let sidecar = Sidecar { bin_dir: bins, base_image: DEFAULT_BASE_IMAGE.into(), cache_dir: home.join("cache") };
        Fixture { dir, sidecar }
    }

    fn home(&self) -> Home {
        Home::new(self.dir.path().join("home"))
    }

    async fn plan(&self, engine: &FakeEngine) -> (BottlePlan, Secrets) {
        let home = self.home();
        let search = Search { home: &home, cwd: self.dir.path() };
        let (r, _) = manifest::load(&search, &Request { agent: Some("a".into()), bottles: vec![] }).unwrap();
        let facts = HostFacts {
            home: home.root().to_path_buf(),
            nonce: "0000aa".into(),
            now: "2026-11-29T12:00:00Z".into(),
            owner: owner::current(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            used_subnets: Vec::new(),
            host_gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
            sidecar_image: crate::image::tag(engine, &self.sidecar.bin_dir, DEFAULT_BASE_IMAGE, None).await.unwrap(),
            runsc: false,
            env_present: vec!["LAUNCH_TEST_TOKEN".into()],
        };
        let plan = crate::plan::plan(&r, &facts, &Options { headless: true, ..Default::default() }).unwrap();
        let host = |k: &str| (k == "LAUNCH_TEST_TOKEN").then(|| TOKEN.to_string());
        let ask = |_: &str, _: Option<&str>| -> anyhow::Result<Secret> { unreachable!("no prompts in this bottle") };
        let secrets = Secrets::gather(&plan, &r, &host, &ask).unwrap();
        (plan, secrets)
    }
}

/// What one launch did.
struct Outcome {
    result: Result<i64, String>,
    teardown_errors: Vec<String>,
    plan: BottlePlan,
    /// Objects that existed when teardown began.
    live_before_teardown: Vec<String>,
    /// Index into the engine's calls where teardown began.
    teardown_from: usize,
}

/// Runs begin + up + run, then teardown.
async fn launch_once(f: &Fixture, engine: &FakeEngine) -> Outcome {
    let (plan, secrets) = f.plan(engine).await;
    let runtime = DockerRuntime::new(engine, f.home().cache_dir());
    let timings = Timings::default();
    let progress = |_: String| {};
    let l = Launch { engine, runtime: &runtime, plan: &plan, timings: &timings, progress: &progress, euid: 0 };
    let ledger = begin(&plan, "me", "now", &secrets, nix::unistd::geteuid().as_raw()).unwrap();
    let result = async {
        let ready = up(&l, &ledger, &secrets, &f.sidecar).await.map_err(|e| format!("{e:#}"))?;
        run(&l, &ready, ExecIo::Capture).await.map_err(|e| format!("{e:#}"))
    }
    .await;
    let live_before_teardown = engine.live();
    let teardown_from = engine.calls().len();
    let teardown_errors = teardown(engine, &plan.slug, &ledger.entries(), &timings).await;
    Outcome { result, teardown_errors, plan, live_before_teardown, teardown_from }
}

fn creations(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| c.strip_prefix("create_container ").or_else(|| c.strip_prefix("create_network ")))
        .map(String::from)
        .collect()
}

fn removals(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| c.strip_prefix("remove_container ").or_else(|| c.strip_prefix("remove_network ")))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn a_launch_creates_in_order_runs_the_agent_and_leaves_nothing() {
    let f = Fixture::new();
    let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
    let sidecar_tag = crate::image::tag(&engine, &f.sidecar.bin_dir, DEFAULT_BASE_IMAGE, None).await.unwrap();
    let o = launch_once(&f, &engine).await;
    let plan = o.plan;
    assert_eq!(o.result, Ok(0));
    assert!(o.teardown_errors.is_empty(), "{:?}", o.teardown_errors);
    let calls = engine.calls();
    let slug = &plan.slug;
    let made = creations(&calls);
    // The image was built (it was missing), then everything else.
    assert!(calls.iter().any(|c| c == &format!("build {sidecar_tag}")), "{calls:#?}");
    assert_eq!(made[0], format!("bot-bottle-{slug}-probe"));
    let mut nets = made[1..3].to_vec();
    nets.sort();
    assert_eq!(nets, [format!("bot-bottle-{slug}-egress"), format!("bot-bottle-{slug}-internal")]);
    let mut containers = made[3..].to_vec();
    containers.sort();
    assert_eq!(
        containers,
        [
            format!("bot-bottle-{slug}-agent"),
            format!("bot-bottle-{slug}-bundle"),
            format!("bot-bottle-{slug}-firewall")
        ]
    );
    // The firewall ran before the agent's command.
    let pos =
        |needle: &str| calls.iter().position(|c| c == needle).unwrap_or_else(|| panic!("no {needle} in {calls:#?}"));
    assert!(
        pos(&format!("start bot-bottle-{slug}-firewall")) < pos(&format!("exec bot-bottle-{slug}-agent agent --go"))
    );
    assert!(
        pos(&format!("wait_for_output bot-bottle-{slug}-bundle"))
            < pos(&format!("exec bot-bottle-{slug}-agent agent --go"))
    );
    // Teardown removed every object and both directories.
    assert!(engine.live().is_empty(), "{:?}", engine.live());
    assert!(!plan.state_dir.exists() && !plan.queue_dir.exists());
}

#[tokio::test]
async fn the_token_reaches_only_the_bundles_environment() {
    let f = Fixture::new();
    let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
    let (plan, secrets) = f.plan(&engine).await;
    let runtime = DockerRuntime::new(&engine, f.home().cache_dir());
    let timings = Timings::default();
    let progress = |_: String| {};
    let l = Launch { engine: &engine, runtime: &runtime, plan: &plan, timings: &timings, progress: &progress, euid: 0 };
    let ledger = begin(&plan, "me", "now", &secrets, nix::unistd::geteuid().as_raw()).unwrap();
    up(&l, &ledger, &secrets, &f.sidecar).await.unwrap();
    let bundle = engine.container(&plan.bundle.container).unwrap();
    let agent = engine.container(&plan.agent.container).unwrap();
    assert!(bundle.env.contains(&("EGRESS_TOKEN_0".into(), TOKEN.into())));
    for spec in [&bundle, &agent, &engine.container(&plan.agent.firewall.container).unwrap()] {
        let argv = format!("{:?} {:?}", spec.entrypoint, spec.cmd);
        assert!(!argv.contains(TOKEN), "{argv}");
    }
    assert!(!agent.env.iter().any(|(_, v)| v.contains(TOKEN)), "the agent never holds the token");
    assert!(engine.calls().iter().all(|c| !c.contains(TOKEN)), "no call names the token");
    // Nothing in the state directory the agent can read holds it either.
    for entry in walk(&plan.state_dir.join("agent")) {
        assert!(!std::fs::read_to_string(&entry).unwrap_or_default().contains(TOKEN), "{}", entry.display());
    }
    // The agent: sealed settings.
    assert_eq!(agent.cap_drop, ["ALL"]);
    assert!(agent.read_only_root && agent.init);
    assert_eq!(agent.network, plan.network.internal.name);
    assert_eq!(agent.user.as_deref(), Some("1000:1000"), "an image without a user runs as 1000");
    assert!(agent.binds.iter().any(|b| b.target == "/etc/ssl/certs/ca-certificates.crt" && b.read_only));
    let ca_bundle = std::fs::read_to_string(plan.state_dir.join("agent/ca-bundle.pem")).unwrap();
    assert!(ca_bundle.starts_with("FAKE SYSTEM ROOTS\n"), "the image's roots first: {ca_bundle}");
    assert!(ca_bundle.contains("BEGIN CERTIFICATE"));
    teardown(&engine, &plan.slug, &ledger.entries(), &timings).await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn a_failure_at_every_step_unwinds_exactly_what_was_made_in_reverse() {
    // How many changing calls a whole launch makes.
    let f = Fixture::new();
    let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
    launch_once(&f, &engine).await.result.unwrap();
    let total = engine.changes();
    assert!(total >= 10, "{:#?}", engine.calls());
    for n in 0..total {
        let f = Fixture::new();
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        engine.fail_at(n);
        let o = launch_once(&f, &engine).await;
        let calls = engine.calls();
        assert!(
            o.result.as_ref().is_err_and(|e| e.contains("injected failure")),
            "call {n}: {:?}\n{calls:#?}",
            o.result
        );
        assert!(o.teardown_errors.is_empty(), "call {n}: {:?}", o.teardown_errors);
        assert!(engine.live().is_empty(), "call {n} left {:?}\n{calls:#?}", engine.live());
        assert!(!o.plan.state_dir.exists() && !o.plan.queue_dir.exists(), "call {n} left state");
        // Teardown removed what existed in exactly the reverse order of its creation (the fake
        // refuses to remove a network that still has a container, so the order has teeth).
        let live = &o.live_before_teardown;
        let mut expected: Vec<String> =
            creations(&calls[..o.teardown_from]).into_iter().filter(|c| live.contains(c)).collect();
        expected.reverse();
        let mut removed: Vec<String> = Vec::new();
        for r in removals(&calls[o.teardown_from..]) {
            if live.contains(&r) && !removed.contains(&r) {
                removed.push(r);
            }
        }
        assert_eq!(removed, expected, "call {n}: {calls:#?}");
    }
}
