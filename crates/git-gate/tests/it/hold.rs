//! A push whose only findings are low-confidence (a value that reads like an identifier,
//! assigned to a password name) is held for the operator in the supervise queue: it reaches
//! the upstream only when approved. Without a queue, rejected or unanswered, nothing is sent.

use std::path::Path;
use std::time::{Duration, Instant};

use common::formats::{QueueResponse, ResponseStatus};
use common::queue::Queue;

use crate::push;
use crate::support::*;

/// A line only the low-confidence tier reports (gitleaks reports it too).
fn low_line() -> String {
    ["db_password = \"result_record", "_secret-299\"\n"].concat()
}

/// Answers the first request filed in `dir` with `status` (and checks what it says).
fn operator(dir: &Path, status: ResponseStatus) -> std::thread::JoinHandle<serde_json::Value> {
    let queue = Queue::new(dir);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (entries, errors) = queue.list().unwrap();
            assert!(errors.is_empty(), "{errors:?}");
            if let Some((req, _)) = entries.first() {
                assert_eq!((req.tool.as_str(), req.bottle.as_str()), ("git_push", "b1"));
                let notes = if status.is_yes() { "fine" } else { "not that one" };
                queue.answer(&req.id, &QueueResponse { status, notes: notes.into(), arguments: None }).unwrap();
                return req.arguments.clone();
            }
            assert!(Instant::now() < deadline, "no request was filed");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// A gate over upstream `app` that holds low-confidence pushes in a queue for up to
/// `wait_secs`, and a clone of it (fields drop in order: clone, gate, queue, upstream, sshd).
struct Held {
    _clone: tempfile::TempDir,
    w: std::path::PathBuf,
    _gate: Gate,
    queue: tempfile::TempDir,
    up: Upstream,
    _sshd: Sshd,
}

fn held(wait_secs: u64) -> Held {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let queue = tempfile::tempdir().unwrap();
    let gate = Gate::start_held(&[("app", &up.url, None)], &sshd, queue.path(), wait_secs);
    let (clone, w) = gate.clone("app");
    Held { _clone: clone, w, _gate: gate, queue, up, _sshd: sshd }
}

#[test]
fn low_confidence_push_without_a_queue_is_rejected() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    commit_file(&w, "config/db.toml", &low_line(), "db settings");
    let before = up.refs();
    let (ok, out) = push(&w, &["origin", "main"]);
    assert!(!ok, "{out}");
    assert!(out.contains("secret found (low confidence): rule generic-api-key in config/db.toml line 1"), "{out}");
    assert!(out.contains("no supervise queue"), "{out}");
    assert!(out.contains("nothing was sent upstream"), "{out}");
    assert_eq!(up.refs(), before, "upstream unchanged");
}

#[test]
fn low_confidence_push_goes_through_when_the_operator_approves() {
    let Held { up, queue, w, .. } = &held(60);
    let sha = commit_file(w, "config/db.toml", &low_line(), "db settings");
    let answered = operator(queue.path(), ResponseStatus::Approved);
    let (ok, out) = push(w, &["origin", "main"]);
    let args = answered.join().unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("push held for the operator"), "{out}");
    assert!(out.contains("the operator approved the push (fine)"), "{out}");
    assert_eq!(up.rev("main").unwrap(), sha, "upstream has the push");
    // The operator sees the repo, the refs and the redacted findings, never the value.
    assert_eq!(args["repo"], "app");
    assert_eq!(args["refs"][0], "refs/heads/main");
    assert_eq!(args["findings"][0]["file"], "config/db.toml");
    assert_eq!(args["findings"][0]["confidence"], "low");
    assert!(!args.to_string().contains("record_secret-299"), "{args}");
}

#[test]
fn low_confidence_push_rejected_by_the_operator_or_unanswered_sends_nothing() {
    let Held { up, queue, w, .. } = &held(2);
    commit_file(w, "config/db.toml", &low_line(), "db settings");
    let before = up.refs();

    // Nobody answers within the 2 s the gate waits.
    let (ok, out) = push(w, &["origin", "main"]);
    assert!(!ok, "{out}");
    assert!(out.contains("no answer from the operator within 2 s"), "{out}");
    assert_eq!(up.refs(), before, "upstream unchanged");
    for e in std::fs::read_dir(queue.path()).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }

    let answered = operator(queue.path(), ResponseStatus::Rejected);
    let (ok, out) = push(w, &["origin", "main"]);
    answered.join().unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("push rejected by the operator (not that one)"), "{out}");
    assert_eq!(up.refs(), before, "upstream unchanged");
}

#[test]
fn a_sure_finding_is_rejected_without_asking() {
    let Held { up, queue, w, .. } = &held(60);
    commit_file(w, "config/db.toml", &format!("{}k = {}\n", low_line(), fake_secret()), "db settings");
    let before = up.refs();
    let (ok, out) = push(w, &["origin", "main"]);
    assert!(!ok, "{out}");
    assert!(out.contains("push rejected: 1 secret finding(s)"), "{out}");
    assert_eq!(up.refs(), before, "upstream unchanged");
    assert_eq!(std::fs::read_dir(queue.path()).unwrap().count(), 0, "nothing was filed for the operator");
}
