//! Every byte of a push is scanned, tried the way an agent hiding a key would: behind a NUL
//! byte, in UTF-16, encoded without a rule keyword in sight, in commit metadata, in a path or a
//! ref name, in a tag inside a tag, in a blob or tree a tag points at; and malformed objects are
//! refused by fsck. Each push is judged by the upstream's own refs: nothing may arrive.

use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::push;
use crate::support::*;

/// One gate over a 1-commit upstream, and a clone of it (dropped in this order). Failed checks
/// are collected, so one run reports every way through at once.
struct Setup {
    failures: std::cell::RefCell<Vec<String>>,
    _clone: tempfile::TempDir,
    w: std::path::PathBuf,
    _gate: Gate,
    up: Upstream,
    _sshd: Sshd,
}

fn setup() -> Setup {
    let sshd = Sshd::start();
    let up = sshd.upstream("app", 1);
    let gate = Gate::start(&[("app", &up.url, None)], &sshd);
    let (clone, w) = gate.clone("app");
    Setup { failures: Default::default(), _clone: clone, w, _gate: gate, up, _sshd: sshd }
}

impl Setup {
    fn check(&self, ok: bool, what: impl std::fmt::Display) {
        if !ok {
            self.failures.borrow_mut().push(what.to_string());
        }
    }

    fn done(self) {
        let failures = self.failures.take();
        assert!(failures.is_empty(), "{} check(s) failed:\n{}", failures.len(), failures.join("\n\n"));
    }
}

/// Pushes `refspec`, which must be refused with nothing reaching the upstream; when `secret`,
/// for a secret finding (named, redacted). Then puts the clone back on the upstream's `main`.
fn refused(s: &Setup, refspec: &str, what: &str, secret: bool) -> String {
    let before = s.up.refs();
    let (ok, out) = push(&s.w, &["origin", refspec]);
    s.check(!ok, format!("{what}: the push must be refused: {out}"));
    s.check(s.up.refs() == before, format!("{what}: the upstream's refs show something arrived"));
    if secret {
        s.check(out.contains("secret found"), format!("{what}: refused for the secret: {out}"));
        s.check(out.contains("nothing was sent upstream"), format!("{what}: {out}"));
        // The client itself prints the refspec it pushed; the gate's own lines never show the secret.
        let remote = out.lines().filter(|l| l.starts_with("remote:")).any(|l| l.contains(&fake_secret()));
        s.check(!remote, format!("{what}: the secret itself is never echoed: {out}"));
    }
    let (reset, why) = try_g(&s.w, &["reset", "-q", "--hard", "origin/main"]);
    s.check(reset, format!("{what}: resetting the clone after the push: {why}"));
    out
}

/// Commits `bytes` as `file` (any bytes, not only text).
fn commit_bytes(dir: &Path, file: &str, bytes: &[u8], msg: &str) -> String {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    g(dir, &["add", file]);
    g(dir, &["commit", "-q", "-m", msg]);
    g(dir, &["rev-parse", "HEAD"])
}

/// `git <args>` with `input` on stdin; stdout trimmed.
fn g_in(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = git(dir).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn utf16le(s: &str) -> Vec<u8> {
    let mut v = vec![0xff, 0xfe];
    v.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
    v
}

#[test]
fn a_key_in_a_binary_or_utf16_blob_is_rejected() {
    let s = setup();
    let line = format!("AWS_ACCESS_KEY_ID={}\n", fake_secret());

    let mut nul_first = b"\0\x01\x02".to_vec();
    nul_first.extend(line.as_bytes());
    commit_bytes(&s.w, "assets/blob.bin", &nul_first, "add a binary");
    let out = refused(&s, "HEAD:main", "a NUL in the first bytes", true);
    s.check(out.contains("assets/blob.bin line 1"), format!("expected \"assets/blob.bin line 1\" in: {out}"));

    let mut nul_late = "filler line\n".repeat(900).into_bytes();
    nul_late.push(0);
    nul_late.extend(line.as_bytes());
    commit_bytes(&s.w, "data/late.dat", &nul_late, "a NUL after 8,000 bytes");
    let out = refused(&s, "HEAD:main", "a NUL later in the file", true);
    s.check(out.contains("data/late.dat line 901"), format!("expected \"data/late.dat line 901\" in: {out}"));

    commit_bytes(&s.w, "notes/win.txt", &utf16le(&format!("Windows notes\r\n{line}")), "UTF-16 notes");
    let out = refused(&s, "HEAD:main", "UTF-16 text", true);
    s.check(out.contains("notes/win.txt line 2"), format!("expected \"notes/win.txt line 2\" in: {out}"));

    // A binary without a secret goes through.
    let mut clean = b"\0\x01header".to_vec();
    clean.extend(b" nothing to see here ");
    commit_bytes(&s.w, "assets/img.bin", &clean, "a clean binary");
    let (ok, out) = push(&s.w, &["origin", "HEAD:main"]);
    s.check(ok, format!("a binary without secrets passes: {out}"));
    s.done();
}

#[test]
fn an_encoded_key_without_a_keyword_is_rejected() {
    let s = setup();
    let key = fake_secret();
    let hexed: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    let variants = [
        ("base64", STANDARD.encode(&key)),
        ("base64url", URL_SAFE_NO_PAD.encode(format!("id={key}?"))),
        ("hex", hexed),
        ("base64 of base64", STANDARD.encode(format!("v: {}", STANDARD.encode(&key)))),
    ];
    for (what, encoded) in variants {
        let content = format!("# fixture\nvalue: {encoded}\n");
        assert!(
            !common::scan::Rules::builtin().may_match(content.as_bytes()),
            "{what}: no rule keyword in the raw bytes: {content}"
        );
        commit_file(&s.w, "fixtures/data.yaml", &content, "fixture");
        let out = refused(&s, "HEAD:main", what, true);
        s.check(out.contains("fixtures/data.yaml line 2"), format!("{what}: {out}"));
    }
    s.done();
}

/// A commit object written by hand (an extra header git itself never writes), on `parent`.
fn commit_with_header(w: &Path, parent: &str, header: &str) -> String {
    let tree = g(w, &["rev-parse", &format!("{parent}^{{tree}}")]);
    let parent = g(w, &["rev-parse", parent]);
    let body = format!(
        "tree {tree}\nparent {parent}\nauthor agent <agent@bottle.invalid> 1700000000 +0000\n\
         committer agent <agent@bottle.invalid> 1700000000 +0000\n{header}\n\nwith an extra header\n"
    );
    g_in(w, &["hash-object", "-t", "commit", "-w", "--stdin"], body.as_bytes())
}

#[test]
fn metadata_paths_ref_names_and_tag_chains_are_scanned() {
    let s = setup();
    let w = &s.w;
    let key = fake_secret();

    let mut c = git(w);
    c.env("GIT_AUTHOR_NAME", format!("deploy {key}")).args(["commit", "-q", "--allow-empty", "-m", "empty"]);
    must(&mut c);
    refused(&s, "HEAD:main", "author name", true);

    let mut c = git(w);
    c.env("GIT_COMMITTER_EMAIL", format!("{key}@bottle.invalid")).args(["commit", "-q", "--allow-empty", "-m", "e"]);
    must(&mut c);
    refused(&s, "HEAD:main", "committer email", true);

    let sha = commit_with_header(w, "HEAD", &format!("x-note {key}"));
    g(w, &["update-ref", "refs/heads/main", &sha]);
    let out = refused(&s, "HEAD:main", "an extra commit header", true);
    s.check(out.contains("(commit header)"), format!("expected \"(commit header)\" in: {out}"));

    commit_file(w, &format!("keys/{key}.txt"), "harmless\n", "a file named like a key");
    let out = refused(&s, "HEAD:main", "a path that is the secret", true);
    let shown = format!("(path) keys/{}….txt", &key[..4]);
    s.check(out.contains(&shown), format!("expected {shown:?}, the secret redacted, in: {out}"));

    // An empty directory named like the key (git never records one; a hand-made tree can).
    let empty = g_in(w, &["mktree"], b"");
    let readme = g(w, &["rev-parse", "HEAD:README.md"]);
    let tree =
        g_in(w, &["mktree"], format!("100644 blob {readme}\tREADME.md\n040000 tree {empty}\t{key}\n").as_bytes());
    let sha = g(w, &["commit-tree", &tree, "-p", "HEAD", "-m", "an empty directory"]);
    g(w, &["update-ref", "refs/heads/main", &sha]);
    refused(&s, "HEAD:main", "an empty directory's name", true);

    refused(&s, &format!("HEAD:refs/heads/{key}"), "a ref name", true);

    // A tag whose message holds the key, wrapped in a clean tag: only the outer one is pushed.
    g(w, &["tag", "-a", "inner", "-m", &format!("deploy with {key}"), "HEAD"]);
    g(w, &["tag", "-a", "outer", "-m", "release", "inner"]);
    g(w, &["tag", "-d", "inner"]);
    refused(&s, "refs/tags/outer:refs/tags/outer", "a nested tag's message", true);
    g(w, &["tag", "-d", "outer"]);

    // A tag on a blob that no commit holds.
    let blob = g_in(w, &["hash-object", "-w", "--stdin"], format!("AWS_ACCESS_KEY_ID={key}\n").as_bytes());
    g(w, &["tag", "-a", "blobtag", "-m", "just a blob", &blob]);
    refused(&s, "refs/tags/blobtag:refs/tags/blobtag", "a tag on a blob", true);
    // A tag on a tree: its files and names are scanned like a root commit's.
    let tree = g_in(w, &["mktree"], format!("100644 blob {blob}\tconfig.env\n").as_bytes());
    g(w, &["tag", "tree-tag", &tree]);
    refused(&s, "refs/tags/tree-tag:refs/tags/tree-tag", "a tag on a tree", true);

    // Clean blobs and trees behind tags go through, and a clean extra header too.
    let clean = g_in(w, &["hash-object", "-w", "--stdin"], b"public notes\n");
    g(w, &["tag", "-a", "clean-blob", "-m", "notes", &clean]);
    let (ok, out) = push(w, &["origin", "refs/tags/clean-blob:refs/tags/clean-blob"]);
    s.check(ok && s.up.rev("refs/tags/clean-blob").is_some(), format!("a clean blob tag: {out}"));
    let sha = commit_with_header(w, "HEAD", "x-note nothing secret");
    g(w, &["update-ref", "refs/heads/main", &sha]);
    let (ok, out) = push(w, &["origin", "HEAD:main"]);
    s.check(ok && s.up.rev("main").unwrap() == sha, format!("a clean extra header: {out}"));
    s.done();
}

/// A tree object with one entry `name` (a directory holding one file), written raw: `git
/// mktree` and `git add` refuse such names, a hand-made object does not.
fn raw_tree_with_dir(w: &Path, name: &str) -> String {
    let blob = g_in(w, &["hash-object", "-w", "--stdin"], b"[core]\n\tbare = false\n");
    let sub = g_in(w, &["mktree"], format!("100644 blob {blob}\tconfig\n").as_bytes());
    let mut raw = format!("40000 {name}\0").into_bytes();
    raw.extend(hex::decode(&sub).unwrap());
    g_in(w, &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"], &raw)
}

#[test]
fn malformed_objects_are_refused_by_fsck() {
    let s = setup();
    let w = &s.w;
    let tree = raw_tree_with_dir(w, ".git");
    let sha = g(w, &["commit-tree", &tree, "-p", "HEAD", "-m", "a .git directory"]);
    g(w, &["update-ref", "refs/heads/main", &sha]);
    let out = refused(&s, "HEAD:main", "a tree with a .git entry", false);
    s.check(out.contains("hasDotgit"), format!("the client is told which check failed: {out}"));
    s.check(out.contains("fsck"), format!("expected \"fsck\" in: {out}"));

    let tree = g(w, &["rev-parse", "HEAD^{tree}"]);
    let head = g(w, &["rev-parse", "HEAD"]);
    let body = format!(
        "tree {tree}\nparent {head}\nauthor agent <agent@bottle.invalid> 1700000000 +99999\n\
         committer agent <agent@bottle.invalid> 1700000000 +0000\n\nbad time zone\n"
    );
    let sha = g_in(w, &["hash-object", "-t", "commit", "--literally", "-w", "--stdin"], body.as_bytes());
    g(w, &["update-ref", "refs/heads/main", &sha]);
    let out = refused(&s, "HEAD:main", "a commit with a bad time zone", false);
    s.check(out.contains("badTimezone"), format!("expected \"badTimezone\" in: {out}"));
    s.done();
}
