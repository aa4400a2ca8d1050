//! git-gate end to end: the stock `git` client against `git_gate::run` on 127.0.0.1:0, with a
//! real `sshd` upstream reached with a generated deploy key and a pinned host key.

// Tests drive real programs (git, curl, docker, sshd, the binaries under test) directly.
#![allow(clippy::disallowed_methods)]

mod every_byte;
mod hold;
mod scan_cli;
mod support;

use support::*;

const ALLOW_ALL: &str = r#"{"branches":["*"],"allow_force":true,"allow_delete":true,"allow_tags":true}"#;

fn push(w: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["push"];
    all.extend_from_slice(args);
    try_g(w, &all)
}

#[test]
fn clone_then_fetch_after_upstream_moved() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 3);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    assert_eq!(g(&w, &["rev-parse", "HEAD"]), up.rev("main").unwrap());
    assert_eq!(g(&w, &["rev-list", "--count", "HEAD"]), "3");

    let moved = up.advance("main", "other.txt");
    g(&w, &["fetch", "-q", "origin"]);
    assert_eq!(g(&w, &["rev-parse", "origin/main"]), moved, "fetch through the gate sees the upstream's new commit");

    // A branch deleted upstream disappears from the mirror (fetch --prune), tags come through.
    g(&up.path, &["branch", "gone", "main"]);
    g(&up.path, &["tag", "v1", "main"]);
    g(&w, &["fetch", "-q", "--tags", "origin"]);
    assert_eq!(g(&w, &["rev-parse", "origin/gone"]), moved);
    assert_eq!(g(&w, &["rev-parse", "v1"]), moved);
    g(&up.path, &["branch", "-D", "gone"]);
    g(&w, &["fetch", "-q", "--prune", "origin"]);
    assert!(!try_g(&w, &["rev-parse", "--verify", "-q", "origin/gone"]).0, "pruned upstream branch is gone");
}

#[test]
fn clone_with_protocol_v0_and_v2() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 2);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    for v in ["0", "2"] {
        let t = tempfile::tempdir().unwrap();
        g(t.path(), &["-c", &format!("protocol.version={v}"), "clone", "-q", &gate.url("app"), "w"]);
        assert_eq!(g(&t.path().join("w"), &["rev-parse", "HEAD"]), up.rev("main").unwrap(), "protocol v{v}");
    }
}

#[test]
fn clean_push_lands_upstream() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    let sha = commit_file(&w, "src/lib.rs", "pub fn answer() -> u32 { 42 }\n", "add answer");
    let (ok, out) = push(&w, &["origin", "main"]);
    assert!(ok, "clean push accepted: {out}");
    assert!(out.contains("scanned 1 commits"), "{out}");
    assert!(out.contains("upstream accepted"), "{out}");
    assert!(!out.contains("PRIVATE KEY") && !out.contains("deploy_key"), "no key material reaches the client: {out}");
    assert_eq!(up.rev("main").unwrap(), sha, "upstream has the push");
    assert_eq!(g(&gate.mirror("app"), &["rev-parse", "main"]), sha, "the gate's ref moved too");

    // A large (chunked, gzip-free) push also streams through.
    let big: String = (0..200_000).map(|i| format!("{i:08x}\n")).collect();
    let sha = commit_file(&w, "big.txt", &big, "big file");
    let (ok, out) = push(&w, &["origin", "main"]);
    assert!(ok, "big push accepted: {out}");
    assert_eq!(up.rev("main").unwrap(), sha);
    // Tags are allowed by default.
    g(&w, &["tag", "-a", "-m", "release", "v1.0"]);
    let (ok, out) = push(&w, &["origin", "v1.0"]);
    assert!(ok, "tag push: {out}");
    assert!(up.rev("refs/tags/v1.0").is_some());
}

/// Pushes `w`'s `main` and asserts the push was rejected for a secret, named in the output,
/// and that the upstream did not change.
fn assert_secret_rejected(w: &std::path::Path, up: &Upstream, what: &str) -> String {
    let before = up.refs();
    let (ok, out) = push(w, &["origin", "HEAD:main"]);
    assert!(!ok, "{what}: push with a secret must be rejected: {out}");
    assert!(out.contains("secret found: rule "), "{what}: the finding is named: {out}");
    assert!(out.contains("nothing was sent upstream"), "{what}: {out}");
    assert!(!out.contains(&fake_secret()), "{what}: the secret itself is never echoed: {out}");
    assert_eq!(up.refs(), before, "{what}: upstream unchanged");
    out
}

#[test]
fn secret_in_new_file_is_rejected() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    let sha = commit_file(&w, "config/aws.env", &format!("AWS_ACCESS_KEY_ID={}\n", fake_secret()), "add config");
    let out = assert_secret_rejected(&w, &up, "new file");
    assert!(out.contains("config/aws.env line 1"), "file and line named: {out}");
    assert!(out.contains(&sha), "commit named: {out}");
}

#[test]
fn secret_in_modified_line_is_rejected() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    commit_file(&w, "settings.py", "A = 1\nKEY = 'placeholder'\nB = 2\n", "settings");
    assert!(push(&w, &["origin", "main"]).0);
    commit_file(&w, "settings.py", &format!("A = 1\nKEY = '{}'\nB = 2\n", fake_secret()), "tweak");
    let out = assert_secret_rejected(&w, &up, "modified line");
    assert!(out.contains("settings.py line 2"), "{out}");
}

#[test]
fn secret_in_commit_message_is_rejected() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    commit_file(&w, "notes.txt", "harmless\n", &format!("use key {} for deploys", fake_secret()));
    assert_secret_rejected(&w, &up, "commit message");
}

#[test]
fn secret_deep_in_a_50_commit_push_is_rejected() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    for i in 0..50 {
        let content = if i == 7 { format!("k = {}\n", fake_secret()) } else { format!("n = {i}\n") };
        commit_file(&w, &format!("f{i}.txt"), &content, &format!("commit {i}"));
    }
    let out = assert_secret_rejected(&w, &up, "deep in 50 commits");
    assert!(out.contains("scanned 50 commits"), "{out}");
    assert!(out.contains("f7.txt"), "{out}");
    // A fetch that sends 50+ "have" lines: the client gzips that request body.
    up.advance("main", "later.txt");
    let out = must(git(&w).env("GIT_TRACE_CURL", "1").env("GIT_TRACE_CURL_NO_DATA", "1").args(["fetch", "origin"]));
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(trace.to_ascii_lowercase().contains("content-encoding: gzip"), "gzip request body exercised:\n{trace}");
    assert_eq!(g(&w, &["rev-parse", "origin/main"]), up.rev("main").unwrap());
}

#[test]
fn secret_deleted_later_in_the_same_push_is_rejected() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    commit_file(&w, "leak.txt", &format!("{}\n", fake_secret()), "oops");
    g(&w, &["rm", "-q", "leak.txt"]);
    g(&w, &["commit", "-q", "-m", "remove it again"]);
    let out = assert_secret_rejected(&w, &up, "deleted later");
    assert!(out.contains("leak.txt"), "{out}");
}

#[test]
fn secret_in_a_merge_is_rejected() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    g(&w, &["checkout", "-q", "-b", "side"]);
    commit_file(&w, "side.txt", "side work\n", "side");
    g(&w, &["checkout", "-q", "main"]);
    commit_file(&w, "main.txt", "main work\n", "main");
    // An "evil merge": the secret is introduced by the merge commit itself.
    g(&w, &["merge", "-q", "--no-ff", "--no-commit", "side"]);
    std::fs::write(w.join("merged.txt"), format!("token={}\n", fake_secret())).unwrap();
    g(&w, &["add", "merged.txt"]);
    g(&w, &["commit", "-q", "-m", "merge side"]);
    let merge = g(&w, &["rev-parse", "HEAD"]);
    let out = assert_secret_rejected(&w, &up, "merge");
    assert!(out.contains(&merge) && out.contains("merged.txt"), "{out}");
}

#[test]
fn new_branch_scans_only_its_own_commits() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 20);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    g(&w, &["checkout", "-q", "-b", "feature/x"]);
    commit_file(&w, "a.txt", "a\n", "a");
    let sha = commit_file(&w, "b.txt", "b\n", "b");
    let (ok, out) = push(&w, &["origin", "feature/x"]);
    assert!(ok, "{out}");
    assert!(out.contains("scanned 2 commits"), "only the 2 new commits, not the 20 of history: {out}");
    assert_eq!(up.rev("feature/x").unwrap(), sha);
    // A second new branch at an existing commit introduces nothing.
    let (ok, out) = push(&w, &["origin", "main:refs/heads/copy"]);
    assert!(ok, "{out}");
    assert!(out.contains("scanned 0 commits"), "{out}");
}

#[test]
fn force_push_and_delete_refused_by_default() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 2);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    assert!(push(&w, &["origin", "main:refs/heads/topic"]).0);
    let before = up.refs();
    g(&w, &["reset", "-q", "--hard", "HEAD~1"]);
    commit_file(&w, "rewrite.txt", "x\n", "rewritten");
    let (ok, out) = push(&w, &["--force", "origin", "main"]);
    assert!(!ok, "{out}");
    assert!(out.contains("refs/heads/main: force-push (non-fast-forward) is not allowed"), "{out}");
    let (ok, out) = push(&w, &["origin", "--delete", "topic"]);
    assert!(!ok, "{out}");
    assert!(out.contains("refs/heads/topic: delete is not allowed"), "{out}");
    assert_eq!(up.refs(), before, "nothing reached upstream");
}

#[test]
fn force_push_and_delete_allowed_when_configured() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 2);
    let gate = Gate::start(&[("app", &up.url, Some(ALLOW_ALL))], &sshd);
    let (_t, w) = gate.clone("app");
    assert!(push(&w, &["origin", "main:refs/heads/topic"]).0);
    g(&w, &["reset", "-q", "--hard", "HEAD~1"]);
    let sha = commit_file(&w, "rewrite.txt", "x\n", "rewritten");
    let (ok, out) = push(&w, &["--force", "origin", "main"]);
    assert!(ok, "{out}");
    assert_eq!(up.rev("main").unwrap(), sha);
    let (ok, out) = push(&w, &["origin", "--delete", "topic"]);
    assert!(ok, "{out}");
    assert_eq!(up.rev("refs/heads/topic"), None);
}

#[test]
fn branch_globs_limit_pushes() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, Some(r#"{"branches":["agent/*"],"allow_tags":false}"#))], &sshd);
    let (_t, w) = gate.clone("app");
    commit_file(&w, "x.txt", "x\n", "x");
    let (ok, out) = push(&w, &["origin", "HEAD:main"]);
    assert!(!ok && out.contains("branch \"main\" is not allowed"), "{out}");
    let (ok, out) = push(&w, &["origin", "HEAD:agent/work"]);
    assert!(ok, "{out}");
    g(&w, &["tag", "v2"]);
    let (ok, out) = push(&w, &["origin", "v2"]);
    assert!(!ok && out.contains("pushing tags is not allowed"), "{out}");
}

#[test]
fn upstream_rejection_reaches_the_client() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let hook = up.path.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'upstream policy: protected branch, open a PR instead' >&2\nexit 1\n")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    let before_gate = g(&gate.mirror("app"), &["rev-parse", "main"]);
    commit_file(&w, "x.txt", "x\n", "x");
    let (ok, out) = push(&w, &["origin", "main"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("upstream policy: protected branch, open a PR instead"),
        "upstream's words reach the client: {out}"
    );
    assert!(out.contains("upstream refused the push"), "{out}");
    assert_eq!(g(&gate.mirror("app"), &["rev-parse", "main"]), before_gate, "gate refs unchanged");
}

#[test]
fn upstream_moved_since_the_advertisement_is_not_clobbered() {
    // The agent pushes on top of a stale view; the gate refetches first, so this is an ordinary
    // non-fast-forward the client sees and nothing is overwritten upstream.
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    let theirs = up.advance("main", "theirs.txt");
    commit_file(&w, "mine.txt", "mine\n", "mine");
    let (ok, out) = push(&w, &["origin", "main"]);
    assert!(!ok, "{out}");
    assert_eq!(up.rev("main").unwrap(), theirs, "their commit survives");
}

#[test]
fn wrong_host_key_is_refused() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    // Pin some other host's key.
    let other = tempfile::tempdir().unwrap();
    must(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(other.path().join("k")),
    );
    let pubkey = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let mut p = pubkey.split_whitespace();
    std::fs::write(
        sshd.known_hosts(),
        format!("[127.0.0.1]:{} {} {}\n", sshd.port, p.next().unwrap(), p.next().unwrap()),
    )
    .unwrap();
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let t = tempfile::tempdir().unwrap();
    let (ok, out) = try_g(t.path(), &["clone", &gate.url("app"), "w"]);
    assert!(!ok, "{out}");
    assert!(out.contains("remote error: git-gate: repo app: upstream"), "a clear error: {out}");
    assert!(out.contains("Host key verification failed"), "{out}");
}

#[test]
fn unreachable_upstream_fails_closed() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    drop(sshd);
    let (ok, out) = try_g(&w, &["fetch", "origin"]);
    assert!(!ok, "{out}");
    assert!(out.contains("upstream") && out.contains("unreachable"), "{out}");
    commit_file(&w, "x.txt", "x\n", "x");
    let (ok, out) = push(&w, &["origin", "main"]);
    assert!(!ok, "{out}");
}

#[test]
fn unknown_repo_and_traversal_are_404() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    assert_eq!(gate.get("/app.git/info/refs?service=git-upload-pack").0, 200);
    for target in [
        "/nope.git/info/refs?service=git-upload-pack",
        "/app.git/../nope.git/info/refs?service=git-upload-pack",
        "/../app.git/info/refs?service=git-upload-pack",
        "/%2e%2e/app.git/info/refs?service=git-upload-pack",
        "/app.git/config",
        "/app.git/hooks/pre-receive",
        "/app.git/HEAD",
        "/app.git/objects/info/packs",
        "/app.git/info/refs",
        "/../../config.json",
        "/config.json",
        "/data/repos/app.git/config",
    ] {
        assert_eq!(gate.get(target).0, 404, "{target}");
    }
    let t = tempfile::tempdir().unwrap();
    let (ok, out) = try_g(t.path(), &["clone", &gate.url("nope"), "w"]);
    assert!(!ok && out.contains("not found"), "{out}");
}

#[test]
fn concurrent_clones_and_a_push_on_one_repo() {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 5);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (_t, w) = gate.clone("app");
    commit_file(&w, "c.txt", "c\n", "c");
    std::thread::scope(|s| {
        let pusher = s.spawn(|| push(&w, &["origin", "main"]));
        let cloners: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let t = tempfile::tempdir().unwrap();
                    try_g(t.path(), &["clone", "-q", &gate.url("app"), "w"])
                })
            })
            .collect();
        let (ok, out) = pusher.join().unwrap();
        assert!(ok, "{out}");
        for c in cloners {
            let (ok, out) = c.join().unwrap();
            assert!(ok, "{out}");
        }
    });
    assert_eq!(up.rev("main").unwrap(), g(&w, &["rev-parse", "HEAD"]));
}

#[test]
fn binary_announces_serves_and_exits_cleanly_on_sigterm_and_64_on_bad_config() {
    use std::io::BufRead;
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("up.git");
    std::fs::create_dir(&up).unwrap();
    g(&up, &["init", "-q", "--bare", "-b", "main"]);
    let seed = t.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    g(&seed, &["init", "-q", "-b", "main"]);
    commit_file(&seed, "f", "x\n", "init");
    g(&seed, &["push", "-q", up.to_str().unwrap(), "main"]);
    let cfg = t.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"version":1,"user":{{"name":"a","email":"a@b.invalid"}},"repos":[{{"name":"app","url":"file://{}"}}]}}"#,
            up.display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_git-gate");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env("GIT_GATE_DATA_DIR", t.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("readiness line: {line:?}"));
    let (ok, out) = try_g(t.path(), &["clone", "-q", &format!("http://{addr}/app.git"), "w"]);
    assert!(ok, "{out}");
    must(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM → exit 0");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "nothing but the readiness line on stdout");

    std::fs::write(
        &cfg,
        r#"{"version":1,"user":{"name":"a","email":"a@b.invalid"},"repos":[{"name":"../x","url":""}]}"#,
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(t.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json") && err.contains("repos[0].name") && err.contains("repos[0].url"), "{err}");
    assert!(out.stdout.is_empty());
}
