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
use crate::vmm::Vmm;

const TOKEN: &str = "launch-test-token-7f3a9c";
const FORGE_TOKEN: &str = "launch-test-forge-token-0b1c";
const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

struct Fixture {
    dir: tempfile::TempDir,
    sidecar: Sidecar,
}

impl Fixture {
    fn new() -> Fixture {
        Self::with_repo("url: file:///srv/app.git")
    }

    /// A bottle whose repository's deploy key is provisioned on the Gitea at `api`.
    fn with_forge(api: &str) -> Fixture {
        Self::with_forge_kind("gitea", api)
    }

    fn with_forge_kind(kind: &str, api: &str) -> Fixture {
        Self::with_repo(&format!(
            "url: ssh://git@git.test:22/org/app.git\n      host_key: {HOST_KEY}\n      provisioned_key: true\n      \
             forge: {{kind: {kind}, api: \"{api}\", repo: org/app, token_ref: LAUNCH_TEST_FORGE}}"
        ))
    }

    fn with_repo(repo: &str) -> Fixture {
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
            format!(
                "---\negress:\n  routes:\n    - host: api.example.com\n      auth: {{token_ref: LAUNCH_TEST_TOKEN}}\n\
                 git-gate:\n  repos:\n    app:\n      {repo}\n\
                 agent_provider:\n  template: command\n  image: agent:1\n  command: [agent, --go]\n---\n"
            ),
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
        self.plan_for(engine, crate::plan::Backend::Docker).await
    }

    async fn plan_for(&self, engine: &FakeEngine, backend: crate::plan::Backend) -> (BottlePlan, Secrets) {
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
            env_present: vec!["LAUNCH_TEST_TOKEN".into(), "LAUNCH_TEST_FORGE".into()],
            hostname: "test-host".into(),
            oauth_vars: Vec::new(),
            used_loopback: Vec::new(),
            loopback_aliases: None,
        };
        let opts = Options { headless: true, backend: Some(backend), ..Default::default() };
        let plan = crate::plan::plan(&r, &facts, &opts).unwrap();
        let host = |k: &str| match k {
            "LAUNCH_TEST_TOKEN" => Some(TOKEN.to_string()),
            "LAUNCH_TEST_FORGE" => Some(FORGE_TOKEN.to_string()),
            _ => None,
        };
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
    launch_with(f, engine, &runtime, None, plan, &secrets).await
}

/// Runs begin + up + run of `plan` on `runtime`, then teardown.
async fn launch_with(
    f: &Fixture,
    engine: &FakeEngine,
    runtime: &dyn crate::agent::AgentRuntime,
    vmm: Option<&dyn Vmm>,
    plan: BottlePlan,
    secrets: &Secrets,
) -> Outcome {
    let timings = Timings::default();
    let progress = |_: String| {};
    let l = Launch { engine, runtime, plan: &plan, timings: &timings, progress: &progress, euid: 0 };
    let ledger = begin(&plan, "me", "now", secrets, nix::unistd::geteuid().as_raw()).unwrap();
    let result = async {
        let ready = up(&l, &ledger, secrets, &f.sidecar).await.map_err(|e| format!("{e:#}"))?;
        run(&l, &ready, ExecIo::Capture).await.map_err(|e| format!("{e:#}"))
    }
    .await;
    let live_before_teardown = engine.live();
    let teardown_from = engine.calls().len();
    let teardown_errors = teardown(engine, vmm, &tokens, &plan.slug, &ledger.entries(), &timings).await;
    Outcome { result, teardown_errors, plan, live_before_teardown, teardown_from }
}

/// begin + up of `plan` on `runtime` (no run, no teardown): the open ledger, the timings, and
/// up's outcome.
async fn bring_up(
    f: &Fixture,
    engine: &FakeEngine,
    runtime: &dyn crate::agent::AgentRuntime,
    plan: &BottlePlan,
    secrets: &Secrets,
) -> (Ledger, Timings, Result<(), String>) {
    let timings = Timings::default();
    let progress = |_: String| {};
    let l = Launch { engine, runtime, plan, timings: &timings, progress: &progress, euid: 0 };
    let ledger = begin(plan, "me", "now", secrets, nix::unistd::geteuid().as_raw()).unwrap();
    let up = up(&l, &ledger, secrets, &f.sidecar).await.map(|_| ()).map_err(|e| format!("{e:#}"));
    (ledger, timings, up)
}

fn tokens(var: &str) -> Option<Secret> {
    (var == "LAUNCH_TEST_FORGE").then(|| Secret::new(FORGE_TOKEN))
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
    let (ledger, timings, up) = bring_up(&f, &engine, &runtime, &plan, &secrets).await;
    up.unwrap();
    let bundle = engine.container(&plan.bundle.container).unwrap();
    let c = plan.agent.container().unwrap();
    let agent = engine.container(&c.container).unwrap();
    assert!(bundle.env.contains(&("EGRESS_TOKEN_0".into(), TOKEN.into())));
    for spec in [&bundle, &agent, &engine.container(&c.firewall.container).unwrap()] {
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
    let crate::plan::Link::Internal { network, .. } = &plan.network.link else { panic!("a docker plan") };
    assert_eq!(agent.network, network.name);
    assert_eq!(agent.user.as_deref(), Some("1000:1000"), "an image without a user runs as 1000");
    assert!(agent.binds.iter().any(|b| b.target == "/etc/ssl/certs/ca-certificates.crt" && b.read_only));
    let ca_bundle = std::fs::read_to_string(plan.state_dir.join("agent/ca-bundle.pem")).unwrap();
    assert!(ca_bundle.starts_with("FAKE SYSTEM ROOTS\n"), "the image's roots first: {ca_bundle}");
    assert!(ca_bundle.contains("BEGIN CERTIFICATE"));
    teardown(&engine, None, &tokens, &plan.slug, &ledger.entries(), &timings).await;
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

/// Provisioned deploy keys against the forge stand-in: registered before the bundle starts,
/// deleted at teardown — also when any later step fails; a failing delete is reported with the
/// manual step; a key the forge no longer has counts as revoked.
mod keys {
    use super::*;
    use crate::forge::standin::StandIn;

    #[tokio::test]
    async fn a_provisioned_key_is_registered_used_and_deleted() {
        let forge = StandIn::start(FORGE_TOKEN).await;
        let f = Fixture::with_forge(&forge.gitea_api());
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        let (plan, secrets) = f.plan(&engine).await;
        let runtime = DockerRuntime::new(&engine, f.home().cache_dir());
        let (ledger, timings, up) = bring_up(&f, &engine, &runtime, &plan, &secrets).await;
        up.unwrap();
        let keys = forge.keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].title, format!("bot-bottle:{}:test-host", plan.slug));
        assert!(!keys[0].read_only, "a write deploy key");
        // The bundle's key file is the private half of exactly that key; its id is in the ledger.
        let private = std::fs::read_to_string(plan.state_dir.join("git-gate/creds/app-key")).unwrap();
        let public = ssh_key::PrivateKey::from_openssh(&private).unwrap().public_key().to_openssh().unwrap();
        assert_eq!(public, keys[0].key);
        let ledger_text = std::fs::read_to_string(plan.state_dir.join("ledger.jsonl")).unwrap();
        assert!(ledger_text.contains(&format!("\"id\":{}", keys[0].id)), "{ledger_text}");
        assert!(!ledger_text.contains(FORGE_TOKEN) && !ledger_text.contains("PRIVATE KEY"));
        let config = std::fs::read_to_string(plan.state_dir.join("git-gate/config.json")).unwrap();
        assert!(config.contains("/etc/bot-bottle/git-gate/creds/app-key"), "{config}");
        let errors = teardown(&engine, None, &tokens, &plan.slug, &ledger.entries(), &timings).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(forge.keys().is_empty());
        let calls: Vec<(String, u16)> =
            forge.calls().iter().map(|c| (format!("{} {}", c.method, c.path), c.status)).collect();
        assert_eq!(
            calls,
            [
                ("POST /api/v1/repos/org/app/keys".to_string(), 201),
                (format!("DELETE /api/v1/repos/org/app/keys/{}", keys[0].id), 204)
            ]
        );
    }

    #[tokio::test]
    async fn a_failure_at_any_later_step_still_deletes_the_key() {
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        let forge = StandIn::start(FORGE_TOKEN).await;
        launch_once(&Fixture::with_forge(&forge.gitea_api()), &engine).await.result.unwrap();
        let total = engine.changes();
        for n in 0..total {
            let forge = StandIn::start(FORGE_TOKEN).await;
            let f = Fixture::with_forge(&forge.gitea_api());
            let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
            engine.fail_at(n);
            let o = launch_once(&f, &engine).await;
            assert!(o.result.is_err(), "call {n}");
            assert!(o.teardown_errors.is_empty(), "call {n}: {:?}", o.teardown_errors);
            let posts = forge.calls().iter().filter(|c| c.method == "POST").count();
            assert_eq!(posts, 1, "the key is registered before anything else: call {n}");
            assert!(forge.keys().is_empty(), "call {n}: the key was left on the forge");
            // Revocation is the last thing teardown does.
            assert!(engine.live().is_empty(), "call {n}");
        }
    }

    #[tokio::test]
    async fn a_failed_delete_is_loud_and_names_the_manual_step_and_a_404_counts_as_revoked() {
        let forge = StandIn::start(FORGE_TOKEN).await;
        let f = Fixture::with_forge(&forge.gitea_api());
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        forge.fail_delete(500);
        let o = launch_once(&f, &engine).await;
        assert_eq!(o.result, Ok(0));
        let id = forge.keys()[0].id;
        assert_eq!(o.teardown_errors.len(), 1, "{:?}", o.teardown_errors);
        let e = &o.teardown_errors[0];
        assert!(e.contains("HTTP 500"), "{e}");
        assert!(
            e.contains(&format!("delete deploy key {id}"))
                && e.contains(&format!("DELETE {}/repos/org/app/keys/{id}", forge.gitea_api())),
            "{e}"
        );
        assert!(engine.live().is_empty() && !o.plan.state_dir.exists(), "the rest of teardown still ran");

        let forge = StandIn::start(FORGE_TOKEN).await;
        let f = Fixture::with_forge(&forge.gitea_api());
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        let (plan, secrets) = f.plan(&engine).await;
        let runtime = DockerRuntime::new(&engine, f.home().cache_dir());
        let (ledger, timings, up) = bring_up(&f, &engine, &runtime, &plan, &secrets).await;
        up.unwrap();
        forge.forget(forge.keys()[0].id);
        let errors = teardown(&engine, None, &tokens, &plan.slug, &ledger.entries(), &timings).await;
        assert!(errors.is_empty(), "404 on delete counts as revoked: {errors:?}");
        assert_eq!(forge.calls().last().unwrap().status, 404);
    }

    #[tokio::test]
    async fn a_launch_killed_while_the_forge_answers_strands_no_key() {
        // What the ledger holds when bot-bottle dies between the forge's 201 and recording the
        // id: the key's title only. Teardown (or cleanup) finds the key by it and deletes it
        // (entries replay in reverse: the never-registered one is looked for first, two pages).
        let forge = StandIn::start(FORGE_TOKEN).await;
        let client = ForgeClient::new(
            crate::manifest::types::ForgeKind::Gitea,
            &forge.gitea_api(),
            "org/app",
            Secret::new(FORGE_TOKEN),
        )
        .unwrap();
        let (other, mine) = (crate::forge::mint_key("x").unwrap(), crate::forge::mint_key("y").unwrap());
        client.create_key("bot-bottle:someone-else:host", &other.public).await.unwrap();
        let id = client.create_key("bot-bottle:killed-0000aa:host", &mine.public).await.unwrap();
        let titled = |title: &str| Undo::RevokeKeyTitled {
            kind: crate::manifest::types::ForgeKind::Gitea,
            api: forge.gitea_api(),
            repo: "org/app".into(),
            title: title.into(),
            token_ref: "LAUNCH_TEST_FORGE".into(),
        };
        let engine = FakeEngine::default();
        let entries = [titled("bot-bottle:killed-0000aa:host"), titled("bot-bottle:never-registered:host")];
        let errors = teardown(&engine, None, &tokens, "killed-0000aa", &entries, &Timings::default()).await;
        assert!(errors.is_empty(), "{errors:?}");
        let left: Vec<String> = forge.keys().iter().map(|k| k.title.clone()).collect();
        assert_eq!(left, ["bot-bottle:someone-else:host"], "only that bottle's key is deleted");
        let calls: Vec<String> = forge.calls().iter().map(|c| format!("{} {}", c.method, c.status)).collect();
        assert_eq!(calls[2..], ["GET 200", "GET 200", "GET 200", "DELETE 204"], "{calls:?} {id}");
        // With the id recorded too, the title is only a fallback: no listing.
        let forge2 = StandIn::start(FORGE_TOKEN).await;
        let f = Fixture::with_forge(&forge2.gitea_api());
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        assert_eq!(launch_once(&f, &engine).await.result, Ok(0));
        assert!(forge2.calls().iter().all(|c| c.method != "GET"), "{:?}", forge2.calls());
        assert!(forge2.keys().is_empty());
    }

    #[tokio::test]
    async fn github_keys_use_its_paths_and_a_bearer_token() {
        let forge = StandIn::start(FORGE_TOKEN).await;
        let f = Fixture::with_forge_kind("github", &forge.github_api());
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        let o = launch_once(&f, &engine).await;
        assert_eq!(o.result, Ok(0));
        let calls: Vec<String> =
            forge.calls().iter().map(|c| format!("{} {} {} {}", c.method, c.path, c.auth, c.status)).collect();
        assert_eq!(calls, ["POST /repos/org/app/keys Bearer 201", "DELETE /repos/org/app/keys/1 Bearer 204"]);
        let gitea = StandIn::start(FORGE_TOKEN).await;
        launch_once(&Fixture::with_forge(&gitea.gitea_api()), &engine).await.result.unwrap();
        assert!(gitea.calls().iter().all(|c| c.auth == "token"), "{:?}", gitea.calls());
    }

    #[tokio::test]
    async fn refusals_by_the_forge_are_clear_and_leave_nothing() {
        for (status, expected) in [(422, "already exists"), (403, "may not manage the repository's deploy keys")] {
            let forge = StandIn::start(FORGE_TOKEN).await;
            forge.fail_create(status);
            let f = Fixture::with_forge(&forge.gitea_api());
            let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
            let o = launch_once(&f, &engine).await;
            let err = o.result.unwrap_err();
            assert!(err.contains(expected) && err.contains("org/app"), "{status}: {err}");
            assert!(o.teardown_errors.is_empty() && engine.live().is_empty() && !o.plan.state_dir.exists());
        }
        // A wrong token is the forge's 401, named as a permission problem.
        let forge = StandIn::start("another-token").await;
        let f = Fixture::with_forge(&forge.gitea_api());
        let engine = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        let err = launch_once(&f, &engine).await.result.unwrap_err();
        assert!(err.contains("HTTP 401"), "{err}");
    }
}

/// The smolvm backend over the recording engine and the recording VMM: the exact sequence, what
/// the machine is given, and that a failure at any step of either unwinds everything.
mod smolvm {
    use super::*;
    use crate::agent::smolvm::SmolvmRuntime;
    use crate::plan::{Backend, Link};
    use crate::vmm::fake::RecordingVmm;

    async fn launch_vm(f: &Fixture, engine: &FakeEngine, vmm: &RecordingVmm) -> Outcome {
        let (plan, secrets) = f.plan_for(engine, Backend::Smolvm).await;
        let runtime = SmolvmRuntime::new(engine, vmm, f.home().cache_dir());
        launch_with(f, engine, &runtime, Some(vmm), plan, &secrets).await
    }

    fn fresh() -> (Fixture, FakeEngine, RecordingVmm) {
        (Fixture::new(), FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]), RecordingVmm::default())
    }

    #[tokio::test]
    async fn a_vm_launch_runs_in_order_and_leaves_nothing() {
        let (f, engine, vmm) = fresh();
        let o = launch_vm(&f, &engine, &vmm).await;
        assert_eq!(o.result, Ok(0));
        assert!(o.teardown_errors.is_empty(), "{:?}", o.teardown_errors);
        let slug = &o.plan.slug;
        let machine = format!("bot-bottle-{slug}-agent");
        // The engine: the agent image probed and saved, one network (no internal one), the
        // bundle published, its ports read back.
        let calls = engine.calls();
        let made = creations(&calls);
        assert_eq!(
            made,
            [
                format!("bot-bottle-{slug}-probe"),
                format!("bot-bottle-{slug}-egress"),
                format!("bot-bottle-{slug}-bundle")
            ]
        );
        assert!(calls.iter().any(|c| c == "save_image sha256:agent:1"), "{calls:#?}");
        assert!(!calls.iter().any(|c| c.starts_with("connect ")), "no internal network to join: {calls:#?}");
        let pos = |needle: &str| calls.iter().position(|c| c == needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(
            pos(&format!("start bot-bottle-{slug}-bundle")) < pos(&format!("published_ports bot-bottle-{slug}-bundle"))
        );
        // The VMM: create, read back, start, probe, repair as root, the agent's command as its
        // user; then stop and delete.
        let calls: Vec<String> = vmm.calls().into_iter().map(|c| c.split('\n').next().unwrap().to_string()).collect();
        assert_eq!(
            calls,
            [
                format!("create {machine}"),
                "ls".to_string(),
                format!("start {machine}"),
                format!("exec {machine} -u - true"),
                format!("exec {machine} -u 0:0 sh -c set -e"),
                format!("exec {machine} -u 1000:1000 agent --go"),
                format!("stop {machine}"),
                format!("delete {machine}"),
                "ls".to_string(),
            ]
        );
        assert!(engine.live().is_empty() && vmm.live().is_empty(), "{:?} {:?}", engine.live(), vmm.live());
        assert!(!o.plan.state_dir.exists());
        // The archive is cached by image ID: a second launch saves nothing.
        let again = FakeEngine::with_images(&[DEFAULT_BASE_IMAGE, "agent:1"]);
        let o2 = launch_vm(&f, &again, &RecordingVmm::default()).await;
        assert_eq!(o2.result, Ok(0));
        assert!(!again.calls().iter().any(|c| c.starts_with("save_image")), "{:#?}", again.calls());
    }

    #[tokio::test]
    async fn the_machine_gets_the_published_ports_and_secrets_only_by_reference() {
        let (f, engine, vmm) = fresh();
        let (plan, secrets) = f.plan_for(&engine, Backend::Smolvm).await;
        let runtime = SmolvmRuntime::new(&engine, &vmm, f.home().cache_dir());
        let (ledger, timings, up) = bring_up(&f, &engine, &runtime, &plan, &secrets).await;
        up.unwrap();
        let Link::Loopback { ip } = plan.network.link else { panic!("loopback") };
        let bundle = engine.container(&plan.bundle.container).unwrap();
        assert_eq!(bundle.publish, [(9099, ip), (9420, ip), (9100, ip)]);
        let spec = vmm.spec(&format!("bot-bottle-{}-agent", plan.slug)).unwrap();
        assert_eq!(spec.allow_cidrs, [format!("{ip}/32")]);
        assert_eq!(spec.user.as_deref(), Some("1000:1000"));
        assert!(spec.image.ends_with("cache/vm-images/agent:1.tar"), "{}", spec.image.display());
        let env = |k: &str| spec.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // The fake engine publishes container port P at 30000 + P % 1000.
        assert_eq!(env("HTTPS_PROXY"), Some(format!("http://{ip}:30099")));
        assert_eq!(env("GIT_GATE_URL"), Some(format!("http://{ip}:30420")));
        assert_eq!(env("MCP_SUPERVISE_URL"), Some(format!("http://{ip}:30100/mcp")));
        assert_eq!(env("NO_PROXY"), Some(format!("localhost,127.0.0.1,::1,{ip}")));
        // The supervise token is a reference on create, its value only handed to start/exec.
        assert_eq!(spec.secret_env, ["MCP_SUPERVISE_TOKEN"]);
        assert!(env("MCP_SUPERVISE_TOKEN").is_none());
        let token = secrets.supervise_token.as_ref().unwrap().expose().to_string();
        assert_eq!(vmm.secrets_seen().get("MCP_SUPERVISE_TOKEN"), Some(&token));
        let args = crate::vmm::smolvm::create_args(&spec).join(" ");
        assert!(!args.contains(&token) && !args.contains(TOKEN), "{args}");
        assert!(vmm.calls().iter().all(|c| !c.contains(&token) && !c.contains(TOKEN)));
        // Provisioning is the Docker backend's: the same directory, read-only, with the
        // endpoint files written for the published ports.
        let agent_dir = plan.state_dir.join("agent");
        assert!(spec.volumes.contains(&format!("{}:/etc/bot-bottle:ro", agent_dir.display())), "{:?}", spec.volumes);
        let mcp = std::fs::read_to_string(agent_dir.join("mcp.json")).unwrap();
        assert!(mcp.contains(&format!("http://{ip}:30100/mcp")) && mcp.contains(&token), "{mcp}");
        let gitconfig = std::fs::read_to_string(agent_dir.join("gitconfig")).unwrap();
        assert!(gitconfig.contains(&format!("http://{ip}:30420/app.git")), "{gitconfig}");
        for entry in walk(&agent_dir) {
            assert!(!std::fs::read_to_string(&entry).unwrap_or_default().contains(TOKEN), "{}", entry.display());
        }
        // The repair exec puts the merged bundle over the image's system bundle.
        let repair = vmm.calls().into_iter().find(|c| c.contains("-u 0:0")).unwrap();
        assert!(repair.contains("> '/etc/ssl/certs/ca-certificates.crt'"), "{repair}");
        teardown(&engine, Some(&vmm), &tokens, &plan.slug, &ledger.entries(), &timings).await;
        assert!(vmm.live().is_empty());
    }

    #[tokio::test]
    async fn a_failure_at_any_engine_or_vmm_step_unwinds_everything() {
        let (f, engine, vmm) = fresh();
        launch_vm(&f, &engine, &vmm).await.result.unwrap();
        let (engine_total, vmm_total) = (engine.changes(), vmm.changes());
        assert!(engine_total >= 5 && vmm_total >= 5, "{engine_total} {vmm_total}");
        for (which, n) in (0..engine_total).map(|n| ("engine", n)).chain((0..vmm_total).map(|n| ("vmm", n))) {
            let (f, engine, vmm) = fresh();
            if which == "engine" {
                engine.fail_at(n);
            } else {
                vmm.fail_at(n);
            }
            let o = launch_vm(&f, &engine, &vmm).await;
            let probe = which == "vmm"
                && vmm.calls().iter().filter(|c| !c.starts_with("ls")).nth(n).is_some_and(|c| c.ends_with(" true"));
            if probe {
                // A failed readiness probe is a machine still booting: polled again.
                assert_eq!(o.result, Ok(0), "{which} {n}");
            } else {
                assert!(
                    o.result.as_ref().is_err_and(|e| e.contains("injected failure")),
                    "{which} {n}: {:?}",
                    o.result
                );
            }
            assert!(o.teardown_errors.is_empty(), "{which} {n}: {:?}", o.teardown_errors);
            assert!(engine.live().is_empty(), "{which} {n} left {:?}", engine.live());
            assert!(vmm.live().is_empty(), "{which} {n} left {:?}", vmm.live());
            assert!(!o.plan.state_dir.exists(), "{which} {n} left state");
        }
    }

    #[tokio::test]
    async fn a_machine_whose_allowlist_is_not_exactly_its_bundle_never_starts() {
        struct Dropping(RecordingVmm);
        #[async_trait::async_trait]
        impl crate::vmm::Vmm for Dropping {
            async fn version(&self) -> anyhow::Result<String> {
                self.0.version().await
            }
            async fn create(&self, spec: &crate::vmm::MachineSpec) -> anyhow::Result<()> {
                self.0.create(spec).await?;
                // As older smolvm did with some flag combinations: the allowlist is gone.
                self.0.set_allowed(&spec.name, Vec::new());
                Ok(())
            }
            async fn list(&self) -> anyhow::Result<Vec<crate::vmm::Machine>> {
                self.0.list().await
            }
            async fn start(&self, name: &str, s: crate::vmm::SecretValues<'_>) -> anyhow::Result<()> {
                self.0.start(name, s).await
            }
            async fn exec(
                &self,
                name: &str,
                spec: &crate::vmm::VmExec,
                s: crate::vmm::SecretValues<'_>,
            ) -> anyhow::Result<(i64, Vec<u8>)> {
                self.0.exec(name, spec, s).await
            }
            async fn stop(&self, name: &str) -> anyhow::Result<()> {
                self.0.stop(name).await
            }
            async fn delete(&self, name: &str) -> anyhow::Result<()> {
                self.0.delete(name).await
            }
        }
        let (f, engine, _) = fresh();
        let vmm = Dropping(RecordingVmm::default());
        let (plan, secrets) = f.plan_for(&engine, Backend::Smolvm).await;
        let runtime = SmolvmRuntime::new(&engine, &vmm, f.home().cache_dir());
        let (ledger, timings, up) = bring_up(&f, &engine, &runtime, &plan, &secrets).await;
        let err = up.unwrap_err();
        assert!(err.contains("refusing to start it") && err.contains("/32"), "{err}");
        assert!(
            !vmm.0.calls().iter().any(|c| c.starts_with("start ") || c.starts_with("exec ")),
            "{:?}",
            vmm.0.calls()
        );
        let errors = teardown(&engine, Some(&vmm), &tokens, &plan.slug, &ledger.entries(), &timings).await;
        assert!(errors.is_empty() && vmm.0.live().is_empty() && engine.live().is_empty(), "{errors:?}");
    }

    #[tokio::test]
    async fn readiness_is_polled_until_the_machine_answers() {
        let (f, engine, vmm) = fresh();
        vmm.not_ready_for(3);
        let o = launch_vm(&f, &engine, &vmm).await;
        assert_eq!(o.result, Ok(0));
        let probes = vmm.calls().iter().filter(|c| c.ends_with(" true")).count();
        assert_eq!(probes, 4, "{:#?}", vmm.calls());
    }
}
