//! The `supervise` binary's process contract: one `listening on IP:PORT` line on stdout,
//! exit 64 naming every bad flag, exit 0 after SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_supervise");

#[test]
fn bad_flags_exit_64_naming_every_problem() {
    let out = Command::new(BIN)
        .args(["--listen", "nowhere", "--queue-dir", "/nonexistent-queue", "--wait-timeout", "99999"])
        .env("SUPERVISE_AUTH_TOKEN_FILE", "/nonexistent-token")
        .env_remove("BOT_BOTTLE_BOTTLE")
        .env_remove("SUPERVISE_BOTTLE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    for frag in [
        "--listen: \"nowhere\"",
        "--queue-dir: /nonexistent-queue",
        "--bottle: required",
        "--wait-timeout: 99999",
        "--auth-token-file: /nonexistent-token",
    ] {
        assert!(err.contains(frag), "{frag} missing from: {err}");
    }
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn announces_then_exits_0_on_sigterm_with_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env("SUPERVISE_LISTEN", "127.0.0.1:0")
        .env("SUPERVISE_QUEUE_DIR", dir.path())
        .env("BOT_BOTTLE_BOTTLE", "b1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line.trim().strip_prefix("listening on ").expect(&line).parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    std::net::TcpStream::connect(addr).expect("serving");
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.is_empty(), "only one line on stdout, got more: {rest:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err.matches("unauthenticated").count(), 1, "standalone without a token it says so once: {err}");
}

#[test]
fn a_token_file_that_is_not_a_token_exits_64_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "short secret\n").unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--bottle", "b1", "--queue-dir"])
        .arg(dir.path())
        .arg("--auth-token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth-token-file") && err.contains("not a bearer token"), "{err}");
    assert!(!err.contains("short secret"), "the file's content is never shown: {err}");
}
