//! The binary's process contract: readiness line, exit 64 on bad config naming the problem,
//! exit 0 on SIGTERM, SIGHUP reload.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::Ca;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_egress-proxy")
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(routes: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("bottle");
        std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), &ca.key_pem).unwrap();
        std::fs::write(dir.path().join("routes.json"), routes).unwrap();
        Files { dir }
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--routes={}", self.dir.path().join("routes.json").display()))
            .arg(format!("--ca-cert={}", self.dir.path().join("ca.crt").display()))
            .arg(format!("--ca-key={}", self.dir.path().join("ca.key").display()));
        c
    }
}

#[test]
fn bad_config_exits_64_naming_every_problem() {
    let f = Files::new(r#"{"version":1,"routes":[{"host":"a.test","auth":{"token_env":"EGRESS_TOKEN_7"}}]}"#);
    let out = f.cmd().arg("--upstream-ca=/nonexistent.pem").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("EGRESS_TOKEN_7"), "{err}");
    assert!(err.contains("routes[0].auth.token_env"), "{err}");
    assert!(err.contains("/nonexistent.pem"), "{err}");
    assert!(out.stdout.is_empty());

    let f = Files::new(r#"{"version":1,"routes":[],"bogus":1}"#);
    let out = f.cmd().output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains(": bogus: unknown field"));

    let out = Command::new(bin()).arg("--listen=nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn announces_reloads_on_sighup_and_exits_0_on_sigterm() {
    let f = Files::new(r#"{"version":1,"routes":[]}"#);
    let mut child = f
        .cmd()
        .env("EGRESS_TOKEN_0", concat!("tok-", "abcdefgh12345678"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SIGHUP: reloading routes"), "{err}");
    assert!(!err.contains("tok-abcdefgh12345678"));
}
