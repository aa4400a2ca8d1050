//! The smolvm backend against the real `smolvm` CLI (`smol-vmm` from the `smolmachines` wheel):
//! contract tests of the verbs bot-bottle uses, and a whole `bot-bottle start --backend smolvm`
//! with the real engine and sidecar image, the real smolvm for `create`/`ls`/`delete`, and a
//! recording stand-in for `start`/`exec`/`stop` (no microVM can boot on this host).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use orchestrator::vmm::smolvm::SmolvmCli;
use orchestrator::vmm::{MachineSpec, Vmm, read_back};
use tests::bottle::{World, header};
use tests::{docker, docker_available, must, smolvm};

/// The smolvm database's record of a machine (what `ls --json` does not show: env, secrets).
fn db_record(state: &Path, name: &str) -> serde_json::Value {
    let db = state.join(".local/share/smolvm/server/smolvm.db");
    let out = must(Command::new("python3").args([
        "-c",
        "import sqlite3,sys\nfor (b,) in sqlite3.connect(sys.argv[1]).execute('select data from vms where name=?', \
         (sys.argv[2],)): print(b.decode() if isinstance(b, bytes) else b)",
        db.to_str().unwrap(),
        name,
    ]));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Every file under `dir` holds no `needle`.
fn nowhere_in(dir: &Path, needle: &str) {
    let out = Command::new("grep").args(["-rlF", needle]).arg(dir).output().unwrap();
    assert!(out.stdout.is_empty(), "{needle:?} found in {}", String::from_utf8_lossy(&out.stdout));
}

/// A `docker save` archive of the test agent image.
fn agent_archive(dir: &Path) -> PathBuf {
    let context = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/agent");
    let out = docker(&["build", "-q", "-t", "bot-bottle-test-agent:smolvm", context.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let archive = dir.join("agent.tar");
    let out = docker(&["save", "-o", archive.to_str().unwrap(), "bot-bottle-test-agent:smolvm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    archive
}

#[tokio::test]
async fn the_real_cli_creates_reads_back_and_deletes_a_machine_from_a_saved_image() {
    let Some(bin) = smolvm() else { return };
    if !docker_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("smolvm");
    std::fs::create_dir_all(&state).unwrap();
    let vmm = SmolvmCli::new(bin, Some(state.clone()));
    let version = vmm.version().await.unwrap();
    assert!(version.starts_with("smolvm "), "{version}");
    let spec = MachineSpec {
        name: "bot-bottle-contract-agent".into(),
        image: agent_archive(tmp.path()),
        allow_cidrs: vec!["127.77.200.9/32".into()],
        user: Some("1000:1000".into()),
        workdir: Some("/home/agent".into()),
        env: vec![("HTTPS_PROXY".into(), "http://127.77.200.9:40000".into())],
        secret_env: vec!["MCP_SUPERVISE_TOKEN".into()],
        volumes: vec![format!("{}:/etc/bot-bottle:ro", tmp.path().display())],
        labels: [("bot-bottle.slug".to_string(), "contract-abc123".to_string())].into(),
        command: vec!["sleep".into(), "infinity".into()],
    };
    vmm.create(&spec).await.unwrap();
    // What bot-bottle checks before any start: the allowlist is exactly the /32, labels there.
    read_back(&vmm, &spec).await.unwrap();
    let listed = vmm.list().await.unwrap();
    let m = listed.iter().find(|m| m.name == spec.name).unwrap();
    assert_eq!(m.allowed_cidrs, ["127.77.200.9/32"]);
    assert_eq!(m.labels.get("bot-bottle.slug").map(String::as_str), Some("contract-abc123"));
    assert_eq!(m.state, "created");
    // smolvm's own record: the public env by value, the secret by reference only.
    let rec = db_record(&state, &spec.name);
    assert_eq!(rec["env"], serde_json::json!([["HTTPS_PROXY", "http://127.77.200.9:40000"]]));
    assert_eq!(
        rec["secret_refs"]["MCP_SUPERVISE_TOKEN"]["from_env"], "BOT_BOTTLE_VM_SECRET_MCP_SUPERVISE_TOKEN",
        "{rec}"
    );
    assert_eq!(rec["user"], "1000:1000");
    assert_eq!(rec["cmd"], serde_json::json!(["sleep", "infinity"]), "{rec}");
    // A machine expected with another allowlist is refused.
    let wider = MachineSpec { allow_cidrs: vec!["127.77.0.0/16".into()], ..spec.clone() };
    let err = read_back(&vmm, &wider).await.unwrap_err().to_string();
    assert!(err.contains("refusing to start it"), "{err}");
    vmm.delete(&spec.name).await.unwrap();
    assert!(!vmm.list().await.unwrap().iter().any(|m| m.name == spec.name));
    vmm.delete(&spec.name).await.expect("deleting a machine that is gone is success");
    // A bad allowlist is smolvm's error, passed on with its words, and creates nothing.
    let bad = MachineSpec { name: "bot-bottle-contract-bad".into(), allow_cidrs: vec!["127.77.0.5/33".into()], ..spec };
    let err = format!("{:#}", vmm.create(&bad).await.unwrap_err());
    assert!(err.contains("smolvm machine create failed") && err.contains("33"), "{err}");
    assert!(!vmm.list().await.unwrap().iter().any(|m| m.name == bad.name));
}

#[test]
fn doctor_finds_that_no_vm_boots_here_and_auto_picks_docker() {
    let Some(bin) = smolvm() else { return };
    if !docker_available() {
        return;
    }
    let w = World::new();
    let out = w.cmd(&["doctor"]).env("BOT_BOTTLE_SMOLVM", &bin).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = |what: &str| err.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what}: {err}"));
    assert!(line("kvm device").contains("/dev/kvm"), "{err}");
    assert!(line("smolvm").contains("smolvm 1."), "{err}");
    let boot = line("microVM boot");
    assert!(boot.contains("a VM does not boot here") && boot.contains("--backend docker"), "{err}");
    // The answer is cached: the second doctor does not try again.
    let cache = w.home.join("cache/vm-boot.json");
    let cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["boots"], false);
    let before = std::fs::metadata(&cache).unwrap().modified().unwrap();
    w.cmd(&["doctor"]).env("BOT_BOTTLE_SMOLVM", &bin).output().unwrap();
    assert_eq!(std::fs::metadata(&cache).unwrap().modified().unwrap(), before);
    // --backend auto: docker here.
    let out = w
        .cmd(&["start", "scripted", "--dry-run", "--format", "json", "--backend", "auto"])
        .env("BOT_BOTTLE_SMOLVM", &bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["backend"], "docker");
    // --backend smolvm --dry-run: the loopback address, the ports, the VM flags, env names.
    let out = w
        .cmd(&["start", "scripted", "--dry-run", "--format", "json", "--backend", "smolvm"])
        .env("BOT_BOTTLE_SMOLVM", &bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ip = plan["network"]["link"]["ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("127.77."), "{ip}");
    assert_eq!(plan["bundle"]["publish"]["ports"], serde_json::json!([9099, 9420, 9100]));
    let flags =
        plan["agent"]["sandbox"]["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect::<Vec<_>>();
    assert!(flags.windows(2).any(|w| w == ["--allow-cidr", &format!("{ip}/32")]), "{flags:?}");
    assert!(plan["agent"]["env"].as_array().unwrap().iter().any(|e| e["name"] == "HTTPS_PROXY"));
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// The recording stand-in, configured to hand create/ls/delete to `real`.
struct Recorder {
    dir: PathBuf,
}

impl Recorder {
    fn new(parent: &Path, real: &Path) -> Recorder {
        let dir = parent.join("smolvm-recording");
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("smolvm");
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smolvm-recording"), &script).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::json!({"real": real}).to_string()).unwrap();
        Recorder { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.join("smolvm")
    }

    /// `bot-bottle start --backend smolvm` through this stand-in, returned once the agent's
    /// command runs.
    fn launch(&self, w: &World, state: &Path) -> (std::process::Child, std::sync::Arc<std::sync::Mutex<String>>) {
        std::fs::create_dir_all(state).unwrap();
        let mut child = w
            .cmd(&["start", "scripted", "--backend", "smolvm", "--headless", "--prompt", "echo unused"])
            .env("BOT_BOTTLE_SMOLVM", self.bin())
            .env("BOT_BOTTLE_SMOLVM_STATE_DIR", state)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = tests::bottle::collect_stderr(&mut child);
        let deadline = Instant::now() + Duration::from_secs(600);
        while !self.dir.join("agent-running").exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("bot-bottle exited {status} before the agent ran: {}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "the agent never ran: {}", stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
        (child, stderr)
    }

    fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The real smolvm, a test world, the recording stand-in over that smolvm and a state directory
/// for it; `None` (the test returns) where smolvm or Docker is missing outside CI.
fn recorded_world() -> Option<(PathBuf, World, Recorder, PathBuf)> {
    let real = smolvm()?;
    if !docker_available() {
        return None;
    }
    let w = World::new();
    let rec = Recorder::new(w.tmp.path(), &real);
    let state = w.tmp.path().join("smolvm-state");
    Some((real, w, rec, state))
}

fn sha256_hex(s: &str) -> String {
    let out = must(Command::new("sh").args(["-c", "printf %s \"$1\" | sha256sum", "sh", s]));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

fn curl(args: &[&str]) -> (String, String) {
    let out =
        Command::new("curl").args(["-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.to_string(), body.to_string())
}

#[test]
fn a_smolvm_bottle_publishes_its_guarded_bundle_on_its_own_loopback_address() {
    let Some((real, w, rec, state)) = recorded_world() else { return };
    let (mut child, stderr) = rec.launch(&w, &state);

    // The bottle as bot-bottle recorded it.
    let slug = std::fs::read_dir(w.home.join("state"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| !n.starts_with('.'))
        .unwrap();
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.home.join(format!("state/{slug}/plan.json"))).unwrap()).unwrap();
    let ip = plan["network"]["link"]["ip"].as_str().unwrap().to_string();
    let machine = format!("bot-bottle-{slug}-agent");
    let token = std::fs::read_to_string(w.home.join(format!("state/{slug}/supervise/token"))).unwrap();

    // The real smolvm's record: only this bottle's /32, its labels, the published ports in its
    // environment, the supervise token by reference — and its value nowhere in smolvm's state.
    let vmm = SmolvmCli::new(real.clone(), Some(state.clone()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed = rt.block_on(vmm.list()).unwrap();
    let m = listed.iter().find(|m| m.name == machine).unwrap_or_else(|| panic!("{listed:?}"));
    assert_eq!(m.allowed_cidrs, [format!("{ip}/32")]);
    assert_eq!(m.labels.get("bot-bottle.slug"), Some(&slug));
    let rec_db = db_record(&state, &machine);
    let env: Vec<(String, String)> = serde_json::from_value(rec_db["env"].clone()).unwrap();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let proxy = get("HTTPS_PROXY");
    assert!(proxy.starts_with(&format!("http://{ip}:")), "{proxy}");
    let supervise_url = get("MCP_SUPERVISE_URL");
    assert!(supervise_url.starts_with(&format!("http://{ip}:")), "{supervise_url}");
    assert_eq!(rec_db["secret_refs"]["MCP_SUPERVISE_TOKEN"]["from_env"], "BOT_BOTTLE_VM_SECRET_MCP_SUPERVISE_TOKEN");
    nowhere_in(&state, token.trim());
    nowhere_in(&state, &w.token);
    // start and every exec got the token's value in their environment (its hash recorded).
    let calls = rec.calls();
    let verbs: Vec<&str> = calls.iter().map(|c| c["verb"].as_str().unwrap()).collect();
    assert_eq!(verbs[..2], ["create", "start"], "{verbs:?}");
    let want = sha256_hex(token.trim());
    for c in calls.iter().filter(|c| c["verb"] == "start" || c["verb"] == "exec") {
        assert_eq!(c["secrets"]["BOT_BOTTLE_VM_SECRET_MCP_SUPERVISE_TOKEN"], want.as_str(), "{c}");
        assert!(!c["argv"].to_string().contains(token.trim()), "{c}");
    }

    // The bundle's ports are published on that address only, and guarded there.
    let ports = String::from_utf8_lossy(&docker(&["port", &format!("bot-bottle-{slug}-bundle")]).stdout).to_string();
    for p in ["9099/tcp", "9420/tcp", "9100/tcp"] {
        let line = ports.lines().find(|l| l.starts_with(p)).unwrap_or_else(|| panic!("{p} not published: {ports}"));
        assert!(line.contains(&format!("-> {ip}:")), "{line}");
    }
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let mcp = |extra: &[&str]| {
        let mut args = vec![
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json, text/event-stream",
            "--data",
            init,
        ];
        args.extend_from_slice(extra);
        args.push(&supervise_url);
        curl(&args).0
    };
    let bearer = format!("Authorization: Bearer {}", token.trim());
    assert_eq!(mcp(&[]), "401", "no token");
    assert_eq!(mcp(&["-H", "Authorization: Bearer wrong"]), "401", "a wrong token");
    assert_eq!(mcp(&["-H", &bearer, "-H", "Host: evil.test"]), "403", "a foreign Host");
    assert_eq!(mcp(&["-H", &bearer, "-H", "Origin: http://evil.test"]), "403", "a foreign Origin");
    assert_eq!(mcp(&["-H", &bearer]), "200", "the agent's own request");
    // The proxy there is the bottle's: its route, its token injected, its CA.
    let ca = w.home.join(format!("state/{slug}/agent/ca.crt"));
    let (code, _) = curl(&[
        "-x",
        &proxy,
        "--cacert",
        ca.to_str().unwrap(),
        &format!("https://api.test:{}/v1/through-the-published-proxy", w.api.port),
    ]);
    assert_eq!(code, "200");
    let reqs = w.api.requests();
    let seen = reqs.iter().find(|r| r["path"] == "/v1/through-the-published-proxy").expect("the stand-in's record");
    assert_eq!(header(seen, "authorization"), Some(format!("Bearer {}", w.token).as_str()));

    // The agent's command ends; teardown leaves nothing: no machine, container, network, state.
    std::fs::write(rec.dir.join("release"), "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {}", stderr.lock().unwrap());
    let verbs: Vec<String> = rec.calls().iter().map(|c| c["verb"].as_str().unwrap().to_string()).collect();
    assert_eq!(verbs.iter().rev().take(2).collect::<Vec<_>>(), ["delete", "stop"], "{verbs:?}");
    assert!(!rt.block_on(vmm.list()).unwrap().iter().any(|m| m.name == machine));
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn cleanup_finds_a_dead_smolvm_bottles_machine_by_its_labels() {
    let Some((real, w, rec, state)) = recorded_world() else { return };
    let (mut child, _stderr) = rec.launch(&w, &state);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(rec.dir.join("release"), "").unwrap();
    // Only the machine is left to find: its state, queue and Docker objects are gone too.
    let slug = std::fs::read_dir(w.home.join("state")).unwrap().flatten().next().unwrap().file_name();
    let slug = slug.to_string_lossy().to_string();
    std::fs::remove_dir_all(w.home.join("state").join(&slug)).unwrap();
    std::fs::remove_dir_all(w.home.join("queue").join(&slug)).unwrap();
    let label = format!("label=bot-bottle.slug={slug}");
    for (ls, rm) in [
        (&["ps", "-aq", "--filter"][..], &["rm", "-f"][..]),
        (&["network", "ls", "-q", "--filter"][..], &["network", "rm"][..]),
    ] {
        let mut args = ls.to_vec();
        args.push(&label);
        let ids = String::from_utf8_lossy(&docker(&args).stdout).to_string();
        for id in ids.split_whitespace() {
            let mut args = rm.to_vec();
            args.push(id);
            docker(&args);
        }
    }
    let vmm = SmolvmCli::new(real, Some(state.clone()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let machine = format!("bot-bottle-{slug}-agent");
    assert!(rt.block_on(vmm.list()).unwrap().iter().any(|m| m.name == machine), "the dead bottle's machine");
    let out = w
        .cmd(&["cleanup"])
        .env("BOT_BOTTLE_SMOLVM", rec.bin())
        .env("BOT_BOTTLE_SMOLVM_STATE_DIR", &state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("removed bottle {slug}")), "{err}");
    assert!(!rt.block_on(vmm.list()).unwrap().iter().any(|m| m.name == machine), "{err}");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}
