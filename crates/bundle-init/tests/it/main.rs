//! bundle-init supervising real child processes: prefixing, signal forwarding, SIGKILL after
//! the grace period, crash-restart with backoff, giving up, and exit 64 for bad configuration.
//! The children are `sh` scripts given through the `BUNDLE_CMD_<NAME>` overrides.

// Tests drive real programs (git, curl, docker, sshd, the binaries under test) directly.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A daemon that logs to stdout and stderr, and exits 0 on SIGTERM/SIGINT saying which.
const POLITE: &str = r#"sh -c 'trap "echo got TERM; exit 0" TERM; trap "echo got INT; exit 0" INT; echo listening on 127.0.0.1:1; echo warming up >&2; while true; do sleep 0.05; done'"#;

struct Bundle {
    child: Child,
    dir: tempfile::TempDir,
}

impl Bundle {
    fn start(envs: &[(&str, String)]) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bundle-init"));
        cmd.env_remove("BUNDLE_DAEMONS").env_remove("BOT_BOTTLE_BOTTLE");
        for (k, v) in envs {
            cmd.env(k, v.replace("{dir}", &dir.path().display().to_string()));
        }
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap();
        Bundle { child, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Waits (bounded) until `file` contains `needle`.
    fn wait_for(&self, file: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.read(file).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {file}:\n{}\nstderr:\n{}",
                self.read(file),
                self.read("stderr")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits (bounded) for bundle-init to exit.
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("bundle-init did not exit; stderr:\n{}", self.read("stderr"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pid_alive(pid_file: &Path) -> bool {
    let pid: i32 = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
    kill(Pid::from_raw(pid), None).is_ok()
}

#[test]
fn prefixes_lines_forwards_sigterm_and_exits_zero() {
    let mut b = Bundle::start(&[
        ("BUNDLE_DAEMONS", "egress,supervise".into()),
        ("BUNDLE_CMD_EGRESS", POLITE.into()),
        ("BUNDLE_CMD_SUPERVISE", POLITE.into()),
    ]);
    b.wait_for("stdout", "[egress] listening on 127.0.0.1:1");
    b.wait_for("stdout", "[supervise] listening on 127.0.0.1:1");
    b.wait_for("stderr", "[egress] warming up");
    b.signal(Signal::SIGTERM);
    let status = b.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", b.read("stderr"));
    let out = b.read("stdout");
    assert!(out.contains("[egress] got TERM") && out.contains("[supervise] got TERM"), "{out}");
}

#[test]
fn a_daemons_last_lines_are_forwarded_before_bundle_init_exits() {
    // On TERM the daemon exits at once; what it started writes its last line a moment later,
    // through the same pipe (as a daemon's final words can trail its exit).
    let late = r#"sh -c 'trap "(sleep 0.3; echo last words) & exit 0" TERM; echo listening on 127.0.0.1:1; while true; do sleep 0.05; done'"#;
    let mut b = Bundle::start(&[("BUNDLE_DAEMONS", "egress".into()), ("BUNDLE_CMD_EGRESS", late.into())]);
    b.wait_for("stdout", "[egress] listening on 127.0.0.1:1");
    b.signal(Signal::SIGTERM);
    assert_eq!(b.exit().code(), Some(0), "stderr:\n{}", b.read("stderr"));
    assert!(b.read("stdout").contains("[egress] last words"), "{}", b.read("stdout"));
}

#[test]
fn sigint_is_forwarded_as_sigint() {
    let mut b = Bundle::start(&[("BUNDLE_DAEMONS", "egress".into()), ("BUNDLE_CMD_EGRESS", POLITE.into())]);
    b.wait_for("stdout", "[egress] listening on");
    b.signal(Signal::SIGINT);
    assert_eq!(b.exit().code(), Some(0));
    assert!(b.read("stdout").contains("[egress] got INT"), "{}", b.read("stdout"));
}

#[test]
fn sighup_is_passed_on() {
    let hup = r#"sh -c 'trap "echo reloading" HUP; trap "exit 0" TERM; echo up; while true; do sleep 0.05; done'"#;
    let mut b = Bundle::start(&[("BUNDLE_DAEMONS", "egress".into()), ("BUNDLE_CMD_EGRESS", hup.into())]);
    b.wait_for("stdout", "[egress] up");
    b.signal(Signal::SIGHUP);
    b.wait_for("stdout", "[egress] reloading");
    b.signal(Signal::SIGTERM);
    assert_eq!(b.exit().code(), Some(0));
}

#[test]
fn a_daemon_ignoring_sigterm_is_killed_after_the_grace_period() {
    let stubborn =
        r#"sh -c 'trap "echo ignoring TERM" TERM; echo $$ > {dir}/pid; echo up; while true; do sleep 0.05; done'"#;
    let mut b = Bundle::start(&[
        ("BUNDLE_DAEMONS", "git-gate".into()),
        ("BUNDLE_CMD_GIT_GATE", stubborn.into()),
        ("BUNDLE_GRACE_SECS", "1".into()),
    ]);
    b.wait_for("stdout", "[git-gate] up");
    b.signal(Signal::SIGTERM);
    let status = b.exit();
    assert_eq!(status.code(), Some(1), "a SIGKILLed daemon makes the stop unclean");
    assert!(b.read("stderr").contains("sending SIGKILL"), "{}", b.read("stderr"));
    assert!(b.read("stdout").contains("[git-gate] ignoring TERM"));
    assert!(!pid_alive(&b.path("pid")), "the stubborn daemon is gone");
}

#[test]
fn a_crashed_daemon_is_restarted() {
    // Crashes on its first two runs, then stays up.
    let flaky = r#"sh -c 'n=$(cat {dir}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {dir}/count; echo run $n; if [ $n -lt 3 ]; then exit 3; fi; trap "exit 0" TERM; while true; do sleep 0.05; done'"#;
    let mut b = Bundle::start(&[("BUNDLE_DAEMONS", "egress".into()), ("BUNDLE_CMD_EGRESS", flaky.into())]);
    b.wait_for("stdout", "[egress] run 3");
    let err = b.read("stderr");
    assert_eq!(err.matches("egress exited with status 3; restarting in").count(), 2, "{err}");
    // Backoff doubles: the second restart waits longer than the first.
    assert!(err.contains("restarting in 100ms") && err.contains("restarting in 200ms"), "{err}");
    b.signal(Signal::SIGTERM);
    assert_eq!(b.exit().code(), Some(0));
}

#[test]
fn gives_up_when_a_daemon_keeps_dying_and_stops_the_others() {
    let dying = r#"sh -c 'echo dying; exit 1'"#;
    let mut b = Bundle::start(&[
        ("BUNDLE_DAEMONS", "egress,supervise".into()),
        ("BUNDLE_CMD_EGRESS", dying.into()),
        ("BUNDLE_CMD_SUPERVISE", POLITE.into()),
    ]);
    let status = b.exit();
    assert_eq!(status.code(), Some(1));
    let err = b.read("stderr");
    assert!(err.contains("giving up"), "{err}");
    assert_eq!(b.read("stdout").matches("[egress] dying").count(), 6, "first run + 5 restarts");
    assert!(b.read("stdout").contains("[supervise] got TERM"), "the healthy daemon is stopped cleanly");
}

#[test]
fn bad_configuration_exit_64_is_not_restarted() {
    let misconfigured = r#"sh -c 'echo "routes.json: version: unsupported" >&2; exit 64'"#;
    let mut b = Bundle::start(&[("BUNDLE_DAEMONS", "egress".into()), ("BUNDLE_CMD_EGRESS", misconfigured.into())]);
    assert_eq!(b.exit().code(), Some(64));
    let err = b.read("stderr");
    assert_eq!(err.matches("[egress] routes.json: version: unsupported").count(), 1, "{err}");
    assert!(err.contains("bad configuration"), "{err}");
}

#[test]
fn unknown_daemon_name_is_a_usage_error() {
    let mut b = Bundle::start(&[("BUNDLE_DAEMONS", "egress,dns".into())]);
    assert_eq!(b.exit().code(), Some(64));
    assert!(b.read("stderr").contains("unknown daemon \"dns\""), "{}", b.read("stderr"));
}

#[test]
fn a_missing_binary_is_reported_and_ends_the_bundle() {
    let mut b = Bundle::start(&[
        ("BUNDLE_DAEMONS", "egress".into()),
        ("BUNDLE_CMD_EGRESS", "/nonexistent/egress-proxy".into()),
    ]);
    assert_eq!(b.exit().code(), Some(1));
    assert!(b.read("stderr").contains("cannot start egress (/nonexistent/egress-proxy)"), "{}", b.read("stderr"));
}
