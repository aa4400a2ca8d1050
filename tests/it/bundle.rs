//! The sidecar image on a real Docker engine: `bot-bottle image build` is a no-op when nothing
//! changed, bundle-init is PID 1 as the non-root user and stops cleanly on SIGTERM, and the
//! three real daemons come up together with the contract's mounts.

use std::process::Command;
use std::time::Duration;

use tests::{Container, bin_dir, chown_for_bundle, docker_available, make_ca, sidecar_image};

fn bot_bottle(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("bot-bottle")).args(args).output().expect("running bot-bottle")
}

#[test]
fn image_build_twice_is_a_no_op_the_second_time() {
    if !docker_available() {
        return;
    }
    let tag = sidecar_image();
    let dir = bin_dir();
    let out = bot_bottle(&["image", "build", "--bin-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tag);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("up to date"), "nothing changed, so nothing is built: {err}");
}

#[test]
fn bundle_init_is_pid_1_and_stops_cleanly_on_sigterm() {
    if !docker_available() {
        return;
    }
    let image = sidecar_image();
    let polite =
        r#"sh -c 'trap "echo got TERM; exit 0" TERM; echo listening on 0.0.0.0:1; while true; do sleep 0.05; done'"#;
    let c = Container::run(&[
        "-e",
        "BUNDLE_DAEMONS=egress,supervise",
        "-e",
        &format!("BUNDLE_CMD_EGRESS={polite}"),
        "-e",
        &format!("BUNDLE_CMD_SUPERVISE={polite}"),
        &image,
    ]);
    c.wait_for_log("[egress] listening on 0.0.0.0:1");
    c.wait_for_log("[supervise] listening on 0.0.0.0:1");
    let comm = c.exec(&["cat", "/proc/1/comm"]);
    assert_eq!(String::from_utf8_lossy(&comm.stdout).trim(), "bundle-init");
    let uid = c.exec(&["id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "10001", "the bundle runs as the non-root user");
    c.signal("TERM");
    // bundle-init exits 0 only when every daemon stopped within the grace period (no SIGKILL).
    let code = c.wait_exit(Duration::from_secs(30));
    let logs = c.logs();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("[egress] got TERM") && logs.contains("[supervise] got TERM"), "{logs}");
}

#[test]
fn the_three_real_daemons_run_together_in_the_image() {
    if !docker_available() {
        return;
    }
    let image = sidecar_image();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Per-bottle CA, as the orchestrator mints it.
    let ca = root.join("ca");
    std::fs::create_dir(&ca).unwrap();
    make_ca(&ca, "ca");
    chown_for_bundle(&ca);
    let egress = root.join("egress");
    std::fs::create_dir(&egress).unwrap();
    std::fs::write(egress.join("routes.json"), r#"{"version":1,"routes":[{"host":"example.invalid"}]}"#).unwrap();
    // A file:// upstream mounted read-only, so git-gate can mirror it at start.
    let upstream = root.join("upstream");
    std::fs::create_dir(&upstream).unwrap();
    let git = |args: &[&str], cwd: &std::path::Path| {
        let out = Command::new("git").args(args).current_dir(cwd).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "--bare", "-b", "main", "app.git"], &upstream);
    git(&["init", "-q", "-b", "main", "seed"], root);
    std::fs::write(root.join("seed/README"), "hello\n").unwrap();
    git(&["add", "README"], &root.join("seed"));
    git(&["-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-qm", "init"], &root.join("seed"));
    git(&["push", "-q", upstream.join("app.git").to_str().unwrap(), "main"], &root.join("seed"));
    chown_for_bundle(&upstream);
    let gate = root.join("git-gate");
    std::fs::create_dir(&gate).unwrap();
    std::fs::write(
        gate.join("config.json"),
        r#"{"version":1,"user":{"name":"agent","email":"agent@bottle.invalid"},
            "repos":[{"name":"app","url":"file:///upstream/app.git"}]}"#,
    )
    .unwrap();
    let queue = root.join("queue");
    std::fs::create_dir(&queue).unwrap();
    chown_for_bundle(&queue);

    let mount = |host: &std::path::Path, target: &str, mode: &str| format!("{}:{target}:{mode}", host.display());
    let c = Container::run(&[
        "-e",
        "BOT_BOTTLE_BOTTLE=it-bundle",
        "-v",
        &mount(&ca, "/etc/bot-bottle/ca", "ro"),
        "-v",
        &mount(&egress, "/etc/bot-bottle/egress", "ro"),
        "-v",
        &mount(&gate, "/etc/bot-bottle/git-gate", "ro"),
        "-v",
        &mount(&upstream, "/upstream", "ro"),
        "-v",
        &mount(&queue, "/run/bot-bottle/queue", "rw"),
        "-p",
        "127.0.0.1::9099",
        "-p",
        "127.0.0.1::9420",
        "-p",
        "127.0.0.1::9100",
        &image,
    ]);
    c.wait_for_log("[egress] listening on 0.0.0.0:9099");
    c.wait_for_log("[git-gate] listening on 0.0.0.0:9420");
    c.wait_for_log("[supervise] listening on 0.0.0.0:9100");

    // One real exchange with each daemon through its published port.
    let proxy = c.host_port(9099);
    let health = Command::new("curl")
        .args(["-s", "-x", &format!("http://{proxy}"), "http://_egress.local/health"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");
    let gate_addr = c.host_port(9420);
    let clone = Command::new("git")
        .args(["clone", "-q", &format!("http://{gate_addr}/app.git")])
        .arg(root.join("clone"))
        .output()
        .unwrap();
    assert!(clone.status.success(), "clone through the gate: {}\n{}", String::from_utf8_lossy(&clone.stderr), c.logs());
    assert_eq!(std::fs::read_to_string(root.join("clone/README")).unwrap(), "hello\n");
    let mcp = c.host_port(9100);
    let init = Command::new("curl")
        .args(["-s", "-X", "POST", &format!("http://{mcp}/mcp")])
        .args(["-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream"])
        .args(["-d", r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"it","version":"0"}}}"#])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("bot-bottle-supervise"),
        "{}",
        String::from_utf8_lossy(&init.stdout)
    );

    c.signal("TERM");
    let code = c.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "all three daemons drain and exit within the grace period:\n{}", c.logs());
}
