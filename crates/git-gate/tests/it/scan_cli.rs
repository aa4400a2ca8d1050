//! `git-gate scan` and the `git_gate::scan` library against real repositories built with the
//! `git` CLI: a labelled corpus of fake credentials (every built-in family, planted in code,
//! configs, commit messages, deleted files and merge commits) must be found completely and
//! nothing else; the workspace's own sources must scan clean; a pre-receive hook must see a
//! push in quarantine, and a scanner that opens the repository without the quarantine must
//! refuse the push rather than pass it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::scan::corpus::{FakeRng, families};
use common::scan::{Confidence, Rules};
use git_gate::scan::{COMMIT_MESSAGE, GitFinding, scan_new_commits, scan_paths, scan_range};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_git-gate")
}

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main"])
        .args(["-c", "commit.gpgsign=false", "-c", "core.hooksPath="])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("running git")
}

fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Realistic code that mentions secrets without containing any.
fn filler(rng: &mut FakeRng, i: usize) -> String {
    format!(
        r#"use std::env;

/// Loads settings for worker {i}.
pub fn load(cfg: &Config) -> Result<Settings, Error> {{
    let token = env::var("API_TOKEN").context("API_TOKEN is not set")?;
    let password = cfg.password.clone();
    let api_key = settings.get("api_key").unwrap_or_default();
    let secret_path = "/etc/app/secret.pem";
    let checksum = "{}";
    let request_id = "{}-{}-{}";
    if token.is_empty() || password.len() < 8 {{
        return Err(Error::Invalid("token"));
    }}
    Ok(Settings {{ token, password, api_key, retries: {} }})
}}
"#,
        rng.hex(64),
        rng.hex(8),
        rng.hex(4),
        rng.hex(12),
        rng.below(10)
    )
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Planted {
    rule_id: String,
    file: String,
    commit: String,
    line: usize,
}

/// Builds the labelled corpus repository and returns what was planted where.
fn corpus(dir: &Path) -> Vec<Planted> {
    git_ok(dir, &["init", "-q", "-b", "main"]);
    let fams = families();
    let mut rng = FakeRng::new(42);
    let mut planted = Vec::new();
    let head = |d: &Path| git_ok(d, &["rev-parse", "HEAD"]);

    // Clean filler first.
    for i in 0..3 {
        write(dir, &format!("src/mod{i}.rs"), &filler(&mut rng, i));
    }
    write(dir, "README.md", "# app\n\nSet `API_TOKEN` and `password` in the environment.\n");
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "initial import"]);

    // Each family lands in one of five places, in turn.
    let mut pending_in_file: Vec<(String, String, usize)> = Vec::new(); // (rule, file, line)
    let mut pending_deleted: Vec<(String, usize)> = Vec::new();
    let mut code = String::from("import os\n\n");
    let mut config = String::from("# settings\nservice:\n  name: app\n");
    let mut env_file = String::new();
    let mut messages: Vec<(String, String)> = Vec::new();
    let mut feature: Vec<(String, String)> = Vec::new();
    for (i, f) in fams.iter().enumerate() {
        let (line, _) = f.line(&mut rng);
        match i % 5 {
            0 => {
                // A quoted string literal: a PEM block's newlines become `\n` escapes.
                let stmt = format!("def f{i}():\n    return {line:?}\n");
                code.push_str(&stmt);
                pending_in_file.push((f.rule_id.to_string(), "app/client.py".into(), code.lines().count()));
            }
            1 => {
                config.push_str(&format!("# {i}\n{line}\n"));
                let n = config.lines().count();
                pending_in_file.push((f.rule_id.to_string(), "config/app.yaml".into(), n - line.lines().count() + 1));
            }
            2 => messages.push((f.rule_id.to_string(), line)),
            3 => {
                env_file.push_str(&format!("{line}\n"));
                pending_deleted.push((f.rule_id.to_string(), env_file.lines().count() - line.lines().count() + 1));
            }
            _ => feature.push((f.rule_id.to_string(), line)),
        }
    }
    write(dir, "app/client.py", &code);
    write(dir, "config/app.yaml", &config);
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "add client and config"]);
    let c = head(dir);
    for (rule_id, file, line) in pending_in_file {
        planted.push(Planted { rule_id, file, commit: c.clone(), line });
    }

    // Secrets in commit messages.
    for (i, (rule_id, line)) in messages.into_iter().enumerate() {
        write(dir, &format!("src/mod{}.rs", 10 + i), &filler(&mut rng, 10 + i));
        git_ok(dir, &["add", "-A"]);
        let msg = format!("tune worker {i}\n\nfor the record:\n{line}\n");
        git_ok(dir, &["commit", "-q", "-m", &msg]);
        let n = msg.lines().position(|l| l.contains(line.lines().next().unwrap())).unwrap() + 1;
        planted.push(Planted { rule_id, file: COMMIT_MESSAGE.into(), commit: head(dir), line: n });
    }

    // A file added, then deleted: the secrets stay in history.
    write(dir, "deploy/.env", &env_file);
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "deploy settings"]);
    let c = head(dir);
    for (rule_id, line) in pending_deleted {
        planted.push(Planted { rule_id, file: "deploy/.env".into(), commit: c.clone(), line });
    }
    git_ok(dir, &["rm", "-q", "deploy/.env"]);
    git_ok(dir, &["commit", "-q", "-m", "remove deploy settings"]);

    // Merge commits: the second half of these secrets come in on a branch; the first half are
    // written by the merge commit itself (an "evil merge").
    let half = feature.len() / 2;
    git_ok(dir, &["checkout", "-q", "-b", "feature"]);
    let mut branch_text = String::new();
    for (_, line) in &feature[half..] {
        branch_text.push_str(line);
        branch_text.push('\n');
    }
    write(dir, "feature/notes.txt", &branch_text);
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "feature work"]);
    let fc = head(dir);
    let mut n = 0;
    for (rule_id, line) in &feature[half..] {
        planted.push(Planted {
            rule_id: rule_id.clone(),
            file: "feature/notes.txt".into(),
            commit: fc.clone(),
            line: n + 1,
        });
        n += line.lines().count();
    }
    git_ok(dir, &["checkout", "-q", "main"]);
    write(dir, "src/main_only.rs", &filler(&mut rng, 99));
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "main work"]);
    git_ok(dir, &["merge", "-q", "--no-ff", "--no-commit", "feature"]);
    let mut merge_text = String::new();
    for (_, line) in &feature[..half] {
        merge_text.push_str(line);
        merge_text.push('\n');
    }
    write(dir, "merge/resolution.txt", &merge_text);
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "merge feature"]);
    let mc = head(dir);
    let mut n = 0;
    for (rule_id, line) in &feature[..half] {
        planted.push(Planted {
            rule_id: rule_id.clone(),
            file: "merge/resolution.txt".into(),
            commit: mc.clone(),
            line: n + 1,
        });
        n += line.lines().count();
    }
    planted
}

fn check_corpus(planted: &[Planted], findings: &[GitFinding]) {
    let families: BTreeSet<&str> = planted.iter().map(|p| p.rule_id.as_str()).collect();
    assert!(families.len() >= 30, "only {} families planted", families.len());
    let found: BTreeSet<Planted> = findings
        .iter()
        .map(|f| Planted { rule_id: f.rule_id.clone(), file: f.file.clone(), commit: f.commit.clone(), line: f.line })
        .collect();
    let missed: Vec<&Planted> = planted.iter().filter(|p| !found.contains(p)).collect();
    assert!(missed.is_empty(), "missed {missed:#?}\nfound {found:#?}");
    // Nothing else: a merge does not re-report what its second parent brought in.
    let expected: BTreeSet<&Planted> = planted.iter().collect();
    let extra: Vec<&Planted> = found.iter().filter(|f| !expected.contains(f)).collect();
    assert!(extra.is_empty(), "unexpected findings {extra:#?}");
}

#[test]
fn labelled_corpus_is_found_completely_in_history() {
    let tmp = tempfile::tempdir().unwrap();
    let planted = corpus(tmp.path());
    let repo = git2::Repository::open(tmp.path()).unwrap();
    let report = scan_range(&repo, None, Rules::builtin()).unwrap();
    assert_eq!(report.commits_scanned, git_ok(tmp.path(), &["rev-list", "--all", "--count"]).parse::<usize>().unwrap());
    check_corpus(&planted, &report.findings);

    // The same through the command, as JSON with exactly the contract's fields.
    let out = Command::new(bin()).args(["scan", "--git"]).arg(tmp.path()).args(["--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.len(), report.findings.len());
    for obj in &json {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from(["rule_id", "file", "line", "commit", "secret_redacted", "confidence"])
        );
        assert!(matches!(obj["confidence"].as_str(), Some("high" | "low")), "{obj:?}");
        let red = obj["secret_redacted"].as_str().unwrap();
        assert!(red.ends_with('…') && red.chars().count() <= 5, "{red}");
    }

    // A range: only the commits after the first.
    let first = git_ok(tmp.path(), &["rev-list", "--max-parents=0", "HEAD"]);
    let ranged = scan_range(&repo, Some(&format!("{first}..main")), Rules::builtin()).unwrap();
    assert_eq!(ranged.commits_scanned, report.commits_scanned - 1);
    assert_eq!(ranged.findings, report.findings, "the root commit is clean");
}

#[test]
fn files_on_disk_and_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = FakeRng::new(7);
    let fams = families();
    let gh = fams.iter().find(|f| f.rule_id == "github-pat").unwrap();
    let (line, _) = gh.line(&mut rng);
    write(tmp.path(), "clean/a.rs", &filler(&mut rng, 1));
    write(tmp.path(), "dirty/b.txt", &format!("one\ntwo\n{line}\n"));
    std::fs::write(tmp.path().join("dirty/blob.bin"), [&[0u8, 1, 2][..], line.as_bytes()].concat()).unwrap();

    // A binary file is scanned too, by its printable runs.
    let found = scan_paths(&[tmp.path().to_path_buf()], Rules::builtin()).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].rule_id.as_str(), found[0].line, found[0].commit.as_str()), ("github-pat", 3, ""));
    assert!(found[0].file.ends_with("dirty/b.txt"));
    assert_eq!((found[1].rule_id.as_str(), found[1].line), ("github-pat", 1));
    assert!(found[1].file.ends_with("dirty/blob.bin"));

    let run = |args: &[&str], dir: &str| {
        Command::new(bin()).arg("scan").args(args).arg(tmp.path().join(dir)).output().unwrap()
    };
    let clean = run(&[], "clean");
    assert_eq!(clean.status.code(), Some(0));
    assert!(clean.stdout.is_empty());
    let dirty = run(&[], "dirty");
    assert_eq!(dirty.status.code(), Some(1));
    let text = String::from_utf8(dirty.stdout).unwrap();
    assert!(text.starts_with("github-pat ") && text.contains("b.txt:3"), "{text}");
    assert!(!text.contains(&line[8..]), "the secret itself is printed: {text}");
    let missing = run(&[], "does-not-exist");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does-not-exist"));

    // A user's gitleaks-format rules: replacing drops the built-ins, extending keeps them.
    let rules = tmp.path().join("rules.toml");
    std::fs::write(&rules, "[[rules]]\nid = \"word-two\"\nregex = '''\\btwo\\b'''\nkeywords = [\"two\"]\n").unwrap();
    let rules_arg = rules.to_str().unwrap();
    let replaced = run(&["--rules", rules_arg, "--rules-replace", "--format", "json"], "dirty");
    let v: serde_json::Value = serde_json::from_slice(&replaced.stdout).unwrap();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|f| f["rule_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["word-two"]);
    std::fs::remove_file(tmp.path().join("dirty/blob.bin")).unwrap();
    let extended = run(&["--rules", rules_arg, "--format", "json"], "dirty");
    let v: serde_json::Value = serde_json::from_slice(&extended.stdout).unwrap();
    let mut ids: Vec<&str> = v.as_array().unwrap().iter().map(|f| f["rule_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["github-pat", "word-two"]);
    std::fs::write(&rules, "[[rules]]\nid = \"broken\"\nregex = '''(oops'''\n").unwrap();
    let bad = run(&["--rules", rules_arg], "dirty");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("rules.toml") && err.contains("\"broken\"") && err.contains("regex"), "{err}");
    let nothing = Command::new(bin()).arg("scan").output().unwrap();
    assert_eq!(nothing.status.code(), Some(2));
}

#[test]
fn workspace_sources_scan_clean() {
    // The workspace root: the ancestor holding the built-in rules.
    let cwd = std::env::current_dir().unwrap();
    let this_file = Path::new(file!());
    let this_file = if this_file.is_absolute() { this_file.to_path_buf() } else { cwd.join(this_file) };
    let starts = [PathBuf::from(env!("CARGO_MANIFEST_DIR")), this_file];
    let root = starts
        .iter()
        .flat_map(|s| s.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .find(|a| a.join("crates/common/src/scan/rules.toml").is_file())
        .expect("workspace root");
    // The sources are what git tracks (not build output, fuzz corpora or other local files);
    // outside a git checkout, everything but build output and VCS data.
    let tracked = Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]).output().unwrap();
    let paths: Vec<PathBuf> = if tracked.status.success() && !tracked.stdout.is_empty() {
        tracked
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect()
    } else {
        std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !matches!(p.file_name().unwrap().to_str(), Some("target" | ".git")))
            .collect()
    };
    let found = scan_paths(&paths, Rules::builtin()).unwrap();
    let (high, low): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| f.confidence == Confidence::High);
    assert!(high.is_empty(), "the workspace must not contain credential-shaped text: {high:#?}");
    // Low-confidence findings (a push adding them is held for the operator) are printed, and
    // here come only from the generic rules.
    for f in &low {
        eprintln!("low confidence: {} {}:{} {}", f.rule_id, f.file, f.line, f.secret_redacted);
    }
    assert!(low.iter().all(|f| f.rule_id.starts_with("generic-")), "{low:#?}");
}

#[test]
fn new_commits_only_and_missing_objects_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = FakeRng::new(3);
    let fams = families();
    let gh = fams.iter().find(|f| f.rule_id == "github-pat").unwrap();
    let np = fams.iter().find(|f| f.rule_id == "npm-access-token").unwrap();
    git_ok(dir, &["init", "-q", "-b", "main"]);
    write(dir, "old.txt", &gh.line(&mut rng).0);
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "old secret already on main"]);
    git_ok(dir, &["checkout", "-q", "-b", "topic"]);
    write(dir, "new.txt", &format!("x\n{}\n", np.line(&mut rng).0));
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "-q", "-m", "new"]);
    let tip = git2::Oid::from_str(&git_ok(dir, &["rev-parse", "HEAD"])).unwrap();
    git_ok(dir, &["checkout", "-q", "main"]);
    git_ok(dir, &["branch", "-q", "-D", "topic"]);

    let repo = git2::Repository::open(dir).unwrap();
    let report = scan_new_commits(&repo, &[tip], Rules::builtin()).unwrap();
    assert_eq!(report.commits_scanned, 1);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(
        (report.findings[0].rule_id.as_str(), report.findings[0].file.as_str(), report.findings[0].line),
        ("npm-access-token", "new.txt", 2)
    );

    // Deletions (zero ids) scan nothing; an object that is not there is an error, not a pass.
    let none = scan_new_commits(&repo, &[git2::Oid::ZERO_SHA1], Rules::builtin()).unwrap();
    assert_eq!((none.commits_scanned, none.findings.len()), (0, 0));
    let ghost = git2::Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
    let err = scan_new_commits(&repo, &[ghost], Rules::builtin()).unwrap_err();
    assert!(err.to_string().contains("0123456789abcdef0123456789abcdef01234567"), "{err}");
}

/// A bare repository whose pre-receive hook runs `git-gate scan --pre-receive [extra]`.
fn hooked_bare(dir: &Path, extra: &str) -> PathBuf {
    let bare = dir.join("gate.git");
    std::fs::create_dir_all(&bare).unwrap();
    git_ok(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(&hook, format!("#!/bin/sh\nexec '{}' scan --pre-receive {extra}\n", bin())).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    bare
}

fn push(work: &Path, bare: &Path, refspec: &str) -> Output {
    Command::new("git")
        .args(["-c", "core.hooksPath="])
        .arg("push")
        .arg(bare)
        .arg(refspec)
        .current_dir(work)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn pre_receive_hook_sees_the_quarantined_push() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = hooked_bare(tmp.path(), "");
    // git honours hooks only in the repository's own hooks dir unless configured otherwise.
    git_ok(&bare, &["config", "core.hooksPath", bare.join("hooks").to_str().unwrap()]);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git_ok(&work, &["init", "-q", "-b", "main"]);
    write(&work, "a.txt", "hello\n");
    git_ok(&work, &["add", "-A"]);
    git_ok(&work, &["commit", "-q", "-m", "clean"]);
    let ok = push(&work, &bare, "main");
    assert!(ok.status.success(), "clean push refused: {}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stderr).contains("1 new commit(s) scanned"));

    let mut rng = FakeRng::new(11);
    let fams = families();
    let aws = fams.iter().find(|f| f.rule_id == "aws-access-token").unwrap();
    write(&work, "b.txt", &format!("x\n{}\n", aws.line(&mut rng).0));
    git_ok(&work, &["add", "-A"]);
    git_ok(&work, &["commit", "-q", "-m", "oops"]);
    let bad_commit = git_ok(&work, &["rev-parse", "HEAD"]);
    let refused = push(&work, &bare, "main");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "push with a secret accepted: {stderr}");
    assert!(
        stderr.contains("aws-access-token") && stderr.contains("b.txt:2") && stderr.contains(&bad_commit),
        "{stderr}"
    );
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");
    // The quarantined objects were discarded with the refused push.
    let r = git(&bare, &["cat-file", "-e", &bad_commit]);
    assert!(!r.status.success(), "refused objects reached the repository");

    // Many new commits are scanned by parallel workers, which must see the quarantine too.
    git_ok(&work, &["reset", "-q", "--hard", "HEAD~1"]);
    let gh = fams.iter().find(|f| f.rule_id == "github-pat").unwrap();
    let mut secret_commit = String::new();
    for i in 0..12 {
        let text = if i == 7 { format!("{}\n", gh.line(&mut rng).0) } else { format!("clean {i}\n") };
        write(&work, &format!("many/{i}.txt"), &text);
        git_ok(&work, &["add", "-A"]);
        git_ok(&work, &["commit", "-q", "-m", &format!("step {i}")]);
        if i == 7 {
            secret_commit = git_ok(&work, &["rev-parse", "HEAD"]);
        }
    }
    let refused = push(&work, &bare, "main");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "push with a secret accepted: {stderr}");
    assert!(stderr.contains("12 new commit(s) scanned") && stderr.contains(&secret_commit), "{stderr}");
    assert!(stderr.contains("github-pat many/7.txt:1"), "{stderr}");
    // Without the secret the same number of commits goes through.
    git_ok(&work, &["reset", "-q", "--hard", "HEAD~12"]);
    for i in 0..12 {
        write(&work, &format!("many/{i}.txt"), &format!("clean {i}\n"));
        git_ok(&work, &["add", "-A"]);
        git_ok(&work, &["commit", "-q", "-m", &format!("step {i}")]);
    }
    let ok = push(&work, &bare, "main");
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success() && stderr.contains("12 new commit(s) scanned"), "{stderr}");
}

#[test]
fn a_scanner_blind_to_the_quarantine_refuses_instead_of_passing() {
    let tmp = tempfile::tempdir().unwrap();
    // Opening the repository by path ignores GIT_OBJECT_DIRECTORY: the new commit is invisible.
    let bare = hooked_bare(tmp.path(), "--git \"$PWD\"");
    git_ok(&bare, &["config", "core.hooksPath", bare.join("hooks").to_str().unwrap()]);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git_ok(&work, &["init", "-q", "-b", "main"]);
    write(&work, "a.txt", "clean content\n");
    git_ok(&work, &["add", "-A"]);
    git_ok(&work, &["commit", "-q", "-m", "clean"]);
    let out = push(&work, &bare, "main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a scanner that cannot see the push let it through: {stderr}");
    assert!(stderr.contains("reading pushed object"), "{stderr}");
}
