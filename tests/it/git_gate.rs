//! git-gate inside the real sidecar image: config and creds mounted read-only as the
//! orchestrator mounts them, the standard bundle-init command line, and a real `sshd` upstream
//! on the host, bound to the Docker bridge's gateway address so the bundle (on the default
//! bridge network, port 9420 published on 127.0.0.1) reaches it. Clone, clean push forwarded
//! over SSH with the mounted deploy key, a secret push refused with nothing reaching upstream.

use std::process::Command;
use std::time::Duration;

use tests::{BUNDLE_UID, Container, Sshd, docker_available, git, host_gateway, must, rev, sidecar_image};

#[test]
fn git_gate_in_the_image_forwards_clean_pushes_over_ssh_and_refuses_secrets() {
    if !docker_available() {
        return;
    }
    let image = sidecar_image();
    // The host as containers on the default bridge see it (`host-gateway`); sshd binds there,
    // so it is reachable from the bundle and nowhere else.
    let gateway = host_gateway();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let sshd_dir = root.join("sshd");
    std::fs::create_dir(&sshd_dir).unwrap();
    // Creds as the orchestrator lays them out: <dir>/config.json and <dir>/creds/.
    let gate_dir = root.join("git-gate");
    let creds = gate_dir.join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(creds.join("app-key")));
    std::fs::copy(creds.join("app-key.pub"), sshd_dir.join("authorized_keys")).unwrap();
    let (_sshd, port) = Sshd::start(&sshd_dir, &gateway);
    let host_pub = std::fs::read_to_string(sshd_dir.join("host_key.pub")).unwrap();
    let mut hp = host_pub.split_whitespace();
    std::fs::write(
        creds.join("app-known_hosts"),
        format!("[{gateway}]:{port} {} {}\n", hp.next().unwrap(), hp.next().unwrap()),
    )
    .unwrap();
    // The key is the bundle user's and private to it (ssh insists).
    for f in ["app-key", "app-known_hosts"] {
        must(Command::new("chown").arg(format!("{BUNDLE_UID}:{BUNDLE_UID}")).arg(creds.join(f)));
    }

    let upstream = root.join("upstream/app.git");
    std::fs::create_dir_all(&upstream).unwrap();
    must(git(&upstream).args(["init", "-q", "--bare", "-b", "main"]));
    let seed = root.join("seed");
    std::fs::create_dir(&seed).unwrap();
    must(git(&seed).args(["init", "-q", "-b", "main"]));
    std::fs::write(seed.join("README"), "hello\n").unwrap();
    must(git(&seed).args(["add", "README"]));
    must(git(&seed).args(["commit", "-qm", "init"]));
    must(git(&seed).args(["push", "-q", upstream.to_str().unwrap(), "main"]));

    std::fs::write(
        gate_dir.join("config.json"),
        format!(
            r#"{{"version":1,"user":{{"name":"agent","email":"agent@bottle.invalid"}},
                "repos":[{{"name":"app","url":"ssh://root@{gateway}:{port}{}",
                  "identity_file":"/etc/bot-bottle/git-gate/creds/app-key",
                  "known_hosts_file":"/etc/bot-bottle/git-gate/creds/app-known_hosts"}}]}}"#,
            upstream.display()
        ),
    )
    .unwrap();

    let c = Container::run(&[
        "-e",
        "BUNDLE_DAEMONS=git-gate",
        "-v",
        &format!("{}:/etc/bot-bottle/git-gate:ro", gate_dir.display()),
        "-p",
        "127.0.0.1::9420",
        &image,
    ]);
    c.wait_for_log("[git-gate] listening on 0.0.0.0:9420");
    let addr = c.host_port(9420);
    let url = format!("http://{addr}/app.git");

    let work = root.join("work");
    std::fs::create_dir(&work).unwrap();
    let clone = git(&work).args(["clone", "-q", &url, "w"]).output().unwrap();
    assert!(clone.status.success(), "clone: {}\n{}", String::from_utf8_lossy(&clone.stderr), c.logs());
    let w = work.join("w");
    assert_eq!(std::fs::read_to_string(w.join("README")).unwrap(), "hello\n");

    std::fs::write(w.join("code.rs"), "fn main() {}\n").unwrap();
    must(git(&w).args(["add", "code.rs"]));
    must(git(&w).args(["commit", "-qm", "clean"]));
    let out = git(&w).args(["push", "origin", "main"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clean push through the image: {text}\n{}", c.logs());
    assert!(text.contains("scanned 1 commits") && text.contains("upstream accepted"), "{text}");
    assert_eq!(rev(&upstream, "main"), rev(&w, "HEAD"), "the push reached the ssh upstream");

    let secret = ["AKIA", "QYLPMN5HHHFDZAIK"].concat();
    std::fs::write(w.join("leak.txt"), format!("token = {secret}\n")).unwrap();
    must(git(&w).args(["add", "leak.txt"]));
    must(git(&w).args(["commit", "-qm", "leak"]));
    let before = rev(&upstream, "main");
    let out = git(&w).args(["push", "origin", "main"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "secret push must be refused: {text}");
    assert!(text.contains("secret found: rule ") && text.contains("leak.txt"), "{text}");
    assert!(!text.contains(&secret), "{text}");
    assert_eq!(rev(&upstream, "main"), before, "nothing reached upstream");

    // Nothing but the smart-HTTP endpoints of configured repos is served.
    for target in
        ["/app.git/config", "/creds/app-key", "/../etc/bot-bottle/git-gate/creds/app-key", "/other.git/info/refs"]
    {
        let out = must(
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is"])
                .arg(format!("http://{addr}{target}")),
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404", "{target}");
    }
    let logs = c.logs();
    assert!(!logs.contains("PRIVATE KEY"), "no key material in the logs:\n{logs}");

    c.signal("TERM");
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.logs());
}

/// git runs no hook it cannot execute (it warns and goes on), so a gate whose data directory is
/// on a `noexec` mount would take pushes unscanned. It must refuse to start instead, before it
/// says it is listening, with a configuration exit that bundle-init does not retry.
#[test]
fn git_gate_refuses_to_start_when_its_hook_cannot_run() {
    if !docker_available() {
        return;
    }
    let image = sidecar_image();
    let tmp = tempfile::tempdir().unwrap();
    let gate_dir = tmp.path().join("git-gate");
    std::fs::create_dir_all(&gate_dir).unwrap();
    std::fs::write(
        gate_dir.join("config.json"),
        r#"{"version":1,"user":{"name":"agent","email":"agent@bottle.invalid"},
            "repos":[{"name":"app","url":"file:///upstream/app.git"}]}"#,
    )
    .unwrap();
    let c = Container::run(&[
        "-e",
        "BUNDLE_DAEMONS=git-gate",
        "--tmpfs",
        &format!("/var/lib/git-gate:rw,noexec,uid={BUNDLE_UID},gid={BUNDLE_UID}"),
        "-v",
        &format!("{}:/etc/bot-bottle/git-gate:ro", gate_dir.display()),
        &image,
    ]);
    let code = c.wait_exit(Duration::from_secs(60));
    let logs = c.logs();
    assert_eq!(code, 64, "a gate that cannot run its hook is a configuration error:\n{logs}");
    assert!(logs.contains("pre-receive hook") && logs.contains("cannot be executed"), "{logs}");
    assert!(!logs.contains("[git-gate] listening on"), "never announced:\n{logs}");
}
