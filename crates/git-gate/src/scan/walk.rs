//! Choosing what to scan in a repository (commits and tags: headers, messages, new paths,
//! added content of text and binary blobs) or on disk, and running the engine over it in
//! parallel.

use std::path::{Path, PathBuf};

use common::scan::{Context, Rules};
use git2::{ObjectType, Oid, Repository, RevparseMode, Sort};
use imara_diff::{Algorithm, Diff, InternedInput};
use rayon::prelude::*;

use super::changes::{BlobChange, TreeChanges, tree_changes};
use super::printable::{self, is_binary};
use super::{
    COMMIT_HEADER, COMMIT_MESSAGE, GitFinding, GitScanError, PATH, REF_NAME, ScanReport, TAG_HEADER, TAG_MESSAGE,
    TAGGED_BLOB,
};

/// Longest chain of tags (a tag on a tag on …) followed from one pushed tip.
const MAX_TAG_CHAIN: usize = 64;

/// Everything `new_tips` bring that no existing ref (`refs/*`) of `repo` has: every commit
/// reachable from them and from no ref (its header, message, new paths and the content it adds
/// against its first parent — all of it for a root commit); every tag in a chain of annotated
/// tags (header and message); and a tree or blob a tag or ref points at directly (as if a root
/// commit added it). Zero ids (deletions) are skipped. Missing objects are errors.
pub fn scan_new_commits(repo: &Repository, new_tips: &[Oid], rules: &Rules) -> Result<ScanReport, GitScanError> {
    skip_rehashing_objects();
    let mut walk = repo.revwalk().map_err(GitScanError::git("starting a revision walk"))?;
    walk.set_sorting(Sort::TOPOLOGICAL).map_err(GitScanError::git("sorting the revision walk"))?;
    let mut findings = Vec::new();
    let mut pushed = 0;
    for &tip in new_tips {
        if tip.is_zero() {
            continue;
        }
        let mut obj = repo.find_object(tip, None).map_err(GitScanError::git(format!("reading pushed object {tip}")))?;
        for depth in 0.. {
            if depth > MAX_TAG_CHAIN {
                return Err(GitScanError::Usage(format!(
                    "pushed object {tip}: a chain of more than {MAX_TAG_CHAIN} tags"
                )));
            }
            match obj.kind() {
                Some(ObjectType::Tag) => {
                    let target = {
                        let tag =
                            obj.as_tag().ok_or_else(|| GitScanError::Usage(format!("tag {} unreadable", obj.id())))?;
                        scan_object_text(repo, tag.id(), TAG_HEADER, TAG_MESSAGE, rules, &mut findings)?;
                        tag.target_id()
                    };
                    obj = repo
                        .find_object(target, None)
                        .map_err(GitScanError::git(format!("reading {target}, which tag {} points at", obj.id())))?;
                }
                Some(ObjectType::Commit) => {
                    walk.push(obj.id()).map_err(GitScanError::git(format!("walking from {tip}")))?;
                    pushed += 1;
                    break;
                }
                Some(ObjectType::Tree) => {
                    let tree = obj.peel_to_tree().map_err(GitScanError::git(format!("reading tree {}", obj.id())))?;
                    let changes = tree_changes(repo, None, &tree)?;
                    findings.extend(scan_changes(repo, &changes, &tip.to_string(), &[], rules)?);
                    break;
                }
                Some(ObjectType::Blob) => {
                    let change = BlobChange { path: TAGGED_BLOB.to_string(), new: obj.id(), old: None };
                    let changes = TreeChanges { blobs: vec![change], new_paths: Vec::new() };
                    findings.extend(scan_changes(repo, &changes, &tip.to_string(), &[], rules)?);
                    break;
                }
                other => {
                    return Err(GitScanError::Usage(format!("pushed object {tip}: unexpected object type {other:?}")));
                }
            }
        }
    }
    if pushed == 0 {
        findings.sort();
        return Ok(ScanReport { findings, commits_scanned: 0 });
    }
    let refs = repo.references().map_err(GitScanError::git("listing refs"))?;
    for r in refs {
        let r = r.map_err(GitScanError::git("reading a ref"))?;
        // Refs to trees or blobs hide nothing; a ref to a missing commit is an error.
        let Some(target) = r.resolve().ok().and_then(|r| r.target()) else { continue };
        let Ok(obj) = repo.find_object(target, None) else {
            return Err(GitScanError::Usage(format!(
                "ref {} points to missing object {target}",
                r.name().unwrap_or("?")
            )));
        };
        if let Ok(c) = obj.peel_to_commit() {
            walk.hide(c.id()).map_err(GitScanError::git(format!("hiding ref {}", r.name().unwrap_or("?"))))?;
        }
    }
    let oids = walk.collect::<Result<Vec<_>, _>>().map_err(GitScanError::git("walking the new commits"))?;
    let mut report = scan_commits(repo, &oids, rules)?;
    report.findings.extend(findings);
    report.findings.sort();
    Ok(report)
}

/// Findings in the names of refs a push updates (a branch or tag name can carry a secret as
/// well as a file can); `file` is [`REF_NAME`] followed by the name, the secret redacted.
pub fn scan_ref_names(names: &[&str], rules: &Rules) -> Vec<GitFinding> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut out = Vec::new();
    scan_names(rules, &names, REF_NAME, "", &mut out);
    out
}

/// The commits of `range` (`A..B`, `A...B`, or one revision and its history), or every commit
/// reachable from any ref and HEAD when `None`.
pub fn scan_range(repo: &Repository, range: Option<&str>, rules: &Rules) -> Result<ScanReport, GitScanError> {
    let mut walk = repo.revwalk().map_err(GitScanError::git("starting a revision walk"))?;
    match range {
        None => {
            walk.push_glob("*").map_err(GitScanError::git("walking all refs"))?;
            if repo.head().is_ok() {
                walk.push_head().map_err(GitScanError::git("walking HEAD"))?;
            }
        }
        Some(spec) => {
            let rs = repo.revparse(spec).map_err(GitScanError::git(format!("revision range {spec:?}")))?;
            let commit_of = |o: Option<&git2::Object<'_>>| -> Result<Oid, GitScanError> {
                let o = o.ok_or_else(|| GitScanError::Usage(format!("revision range {spec:?}: missing an end")))?;
                o.peel_to_commit().map(|c| c.id()).map_err(GitScanError::git(format!("revision range {spec:?}")))
            };
            if rs.mode().contains(RevparseMode::SINGLE) {
                walk.push(commit_of(rs.from())?).map_err(GitScanError::git(format!("walking {spec:?}")))?;
            } else {
                let from = commit_of(rs.from())?;
                let to = commit_of(rs.to())?;
                walk.push(to).map_err(GitScanError::git(format!("walking {spec:?}")))?;
                if rs.mode().contains(RevparseMode::MERGE_BASE) {
                    walk.push(from).map_err(GitScanError::git(format!("walking {spec:?}")))?;
                    let base =
                        repo.merge_base(from, to).map_err(GitScanError::git(format!("merge base of {spec:?}")))?;
                    walk.hide(base).map_err(GitScanError::git(format!("walking {spec:?}")))?;
                } else {
                    walk.hide(from).map_err(GitScanError::git(format!("walking {spec:?}")))?;
                }
            }
        }
    }
    let oids = walk.collect::<Result<Vec<_>, _>>().map_err(GitScanError::git("walking the history"))?;
    scan_commits(repo, &oids, rules)
}

/// Scan files and directories on disk (recursively; `.git` directories and symlinks are
/// skipped; binary files are scanned by their printable runs). `commit` is empty in the
/// findings.
pub fn scan_paths(paths: &[PathBuf], rules: &Rules) -> Result<Vec<GitFinding>, GitScanError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let per_file: Vec<Vec<GitFinding>> = files
        .par_iter()
        .map(|path| {
            let data =
                std::fs::read(path).map_err(|source| GitScanError::Io { path: path.display().to_string(), source })?;
            let name = path.display().to_string();
            if rules.path_allowed(&name) {
                return Ok(Vec::new());
            }
            let ctx = Context { path: Some(&name), commit: None, low_confidence: true };
            let (text, lines) = if is_binary(&data) {
                let runs = printable::runs(&data);
                (runs.text, Some(runs.lines))
            } else {
                (data, None)
            };
            Ok(rules
                .scan_with_context(&text, ctx)
                .into_iter()
                .map(|f| GitFinding {
                    rule_id: f.rule_id,
                    file: name.clone(),
                    line: lines.as_ref().map_or(f.line, |l| line_of(l, f.line)),
                    commit: String::new(),
                    secret_redacted: f.secret_redacted,
                    confidence: f.confidence,
                })
                .collect())
        })
        .collect::<Result<_, GitScanError>>()?;
    let mut out: Vec<GitFinding> = per_file.into_iter().flatten().collect();
    out.sort();
    Ok(out)
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), GitScanError> {
    let io = |source| GitScanError::Io { path: p.display().to_string(), source };
    let meta = std::fs::symlink_metadata(p).map_err(io)?;
    if meta.is_file() {
        out.push(p.to_path_buf());
    } else if meta.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(p).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
        entries.sort();
        for e in entries {
            if e.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            let m = std::fs::symlink_metadata(&e)
                .map_err(|source| GitScanError::Io { path: e.display().to_string(), source })?;
            if m.is_dir() || m.is_file() {
                collect_files(&e, out)?;
            }
        }
    }
    Ok(())
}

/// The blob line of line `n` (1-based) of a [`printable::Runs`] text (0 stays 0).
fn line_of(lines: &[u32], n: usize) -> usize {
    if n == 0 { 0 } else { lines.get(n - 1).copied().unwrap_or(0) as usize }
}

/// Object directories a hook's environment adds (the push quarantine), for worker handles.
fn env_object_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(d) = std::env::var_os("GIT_OBJECT_DIRECTORY") {
        dirs.push(cwd.join(d));
    }
    if let Some(list) = std::env::var_os("GIT_ALTERNATE_OBJECT_DIRECTORIES") {
        dirs.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).map(|p| cwd.join(p)));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// A second handle on the same repository for a worker thread (git2 handles are not `Sync`),
/// seeing the same objects, quarantine included.
fn worker_repo(path: &Path, extra: &[PathBuf]) -> Result<Repository, git2::Error> {
    let repo = Repository::open(path)?;
    {
        let odb = repo.odb()?;
        for d in extra {
            odb.add_disk_alternate(&d.to_string_lossy())?;
        }
    }
    Ok(repo)
}

/// Process-wide: libgit2 re-hashes (SHA-1 with collision detection) every object it reads,
/// which was the largest single cost of a history scan. Objects are already verified when they
/// enter a repository (`index-pack`/`unpack-objects`, also for a push in quarantine), so the
/// scanner turns the re-check off.
fn skip_rehashing_objects() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| git2::opts::strict_hash_verification(false));
}

/// Scan commits: in parallel when there is more than a handful.
fn scan_commits(repo: &Repository, oids: &[Oid], rules: &Rules) -> Result<ScanReport, GitScanError> {
    skip_rehashing_objects();
    let mut findings = if oids.len() < 4 {
        let mut out = Vec::new();
        for &oid in oids {
            out.extend(scan_commit(repo, oid, rules)?);
        }
        out
    } else {
        let path = repo.path().to_path_buf();
        let extra = env_object_dirs();
        let per_commit: Vec<Vec<GitFinding>> = oids
            .par_iter()
            .with_min_len(8)
            .map_init(
                || worker_repo(&path, &extra),
                |w, &oid| match w {
                    Ok(r) => scan_commit(r, oid, rules),
                    Err(e) => Err(GitScanError::Git {
                        what: format!("opening {} for a scan worker", path.display()),
                        source: git2::Error::new(e.code(), e.class(), e.message()),
                    }),
                },
            )
            .collect::<Result<_, _>>()?;
        per_commit.into_iter().flatten().collect()
    };
    findings.sort();
    Ok(ScanReport { findings, commits_scanned: oids.len() })
}

struct FileAdds {
    path: String,
    buf: Vec<u8>,
    /// New-file line number of each line in `buf`.
    lines: Vec<u32>,
}

/// One commit: its header (author, committer, any extra header), its message, the paths it
/// creates and the content it adds against its first parent.
fn scan_commit(repo: &Repository, oid: Oid, rules: &Rules) -> Result<Vec<GitFinding>, GitScanError> {
    let commit = repo.find_commit(oid).map_err(GitScanError::git(format!("reading commit {oid}")))?;
    let id = oid.to_string();
    let mut out = Vec::new();
    scan_text(rules, commit.raw_header_bytes(), COMMIT_HEADER, &id, &mut out);
    scan_text(rules, commit.message_raw_bytes(), COMMIT_MESSAGE, &id, &mut out);
    let tree = commit.tree().map_err(GitScanError::git(format!("reading the tree of commit {oid}")))?;
    let parent_tree = if commit.parent_count() > 0 {
        let parent =
            commit.parent(0).map_err(GitScanError::git(format!("reading the first parent of commit {oid}")))?;
        Some(parent.tree().map_err(GitScanError::git(format!("reading the tree of {}", parent.id())))?)
    } else {
        None
    };
    let changes = tree_changes(repo, parent_tree.as_ref(), &tree)?;
    // A merge re-presents its other parents' lines as added against the first parent; a line
    // that one of the other parents already has at that path is not the merge's own.
    let other_parents: Vec<git2::Tree<'_>> = if commit.parent_count() > 1 {
        commit
            .parents()
            .skip(1)
            .map(|p| p.tree().map_err(GitScanError::git(format!("reading the tree of {}", p.id()))))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    out.extend(scan_changes(repo, &changes, &id, &other_parents, rules)?);
    Ok(out)
}

/// Findings in `data` (a header or a message), reported in `file` (e.g. [`COMMIT_MESSAGE`]).
fn scan_text(rules: &Rules, data: &[u8], file: &str, id: &str, out: &mut Vec<GitFinding>) {
    let ctx = Context { path: None, commit: Some(id), low_confidence: true };
    for f in rules.scan_with_context(data, ctx) {
        out.push(GitFinding {
            rule_id: f.rule_id,
            file: file.to_string(),
            line: f.line,
            commit: id.to_string(),
            secret_redacted: f.secret_redacted,
            confidence: f.confidence,
        });
    }
}

/// A tag or commit object as stored: its header (up to the first empty line) is scanned as
/// `header`, the rest as `message`.
fn scan_object_text(
    repo: &Repository,
    oid: Oid,
    header: &str,
    message: &str,
    rules: &Rules,
    out: &mut Vec<GitFinding>,
) -> Result<(), GitScanError> {
    let odb = repo.odb().map_err(GitScanError::git("opening the object database"))?;
    let obj = odb.read(oid).map_err(GitScanError::git(format!("reading object {oid}")))?;
    let data = obj.data();
    let split = memchr::memmem::find(data, b"\n\n").map_or(data.len(), |p| p + 1);
    let id = oid.to_string();
    scan_text(rules, &data[..split], header, &id, out);
    scan_text(rules, data.get(split + 1..).unwrap_or_default(), message, &id, out);
    Ok(())
}

/// Findings in names (paths, ref names), one per line of one scan; `file` is `prefix` and the
/// name with the secret's span replaced by its redacted form, so no finding repeats a secret.
fn scan_names(rules: &Rules, names: &[String], prefix: &str, id: &str, out: &mut Vec<GitFinding>) {
    let mut buf = Vec::new();
    let mut starts = Vec::with_capacity(names.len());
    for n in names {
        starts.push(buf.len());
        buf.extend_from_slice(n.as_bytes());
        buf.push(b'\n');
    }
    if !rules.may_match_decoded(&buf) {
        return;
    }
    let ctx = Context { path: None, commit: Some(id), low_confidence: true };
    for f in rules.scan_with_context(&buf, ctx) {
        let Some((name, &at)) = f.line.checked_sub(1).and_then(|i| names.get(i).zip(starts.get(i))) else { continue };
        let name = name.as_bytes();
        let (s, e) = (f.start.saturating_sub(at).min(name.len()), f.end.saturating_sub(at).min(name.len()));
        let shown = format!(
            "{}{}{}",
            String::from_utf8_lossy(&name[..s]),
            f.secret_redacted,
            String::from_utf8_lossy(&name[e.max(s)..])
        );
        out.push(GitFinding {
            rule_id: f.rule_id,
            file: format!("{prefix}{shown}"),
            line: 0,
            commit: id.to_string(),
            secret_redacted: f.secret_redacted,
            confidence: f.confidence,
        });
    }
}

/// What a tree change brings: its new paths, and the content it adds to each changed blob
/// (all of a new blob; binary blobs by their printable runs). `other_parents` are a merge's
/// parents beyond the first, whose lines and paths are not the merge's own.
fn scan_changes(
    repo: &Repository,
    changes: &TreeChanges,
    id: &str,
    other_parents: &[git2::Tree<'_>],
    rules: &Rules,
) -> Result<Vec<GitFinding>, GitScanError> {
    let mut out = Vec::new();
    let new_paths: Vec<String> = changes
        .new_paths
        .iter()
        .filter(|p| !other_parents.iter().any(|t| t.get_path(Path::new(p.as_str())).is_ok()))
        .cloned()
        .collect();
    scan_names(rules, &new_paths, PATH, id, &mut out);
    let mut files: Vec<FileAdds> = Vec::new();
    for change in &changes.blobs {
        if let Some(f) = added_content(repo, change, id, rules)? {
            files.push(f);
        }
    }
    for f in files {
        if f.buf.is_empty() || rules.path_allowed(&f.path) {
            continue;
        }
        let ctx = Context { path: Some(&f.path), commit: Some(id), low_confidence: true };
        let buf_lines: Vec<&[u8]> =
            if other_parents.is_empty() { Vec::new() } else { f.buf.split(|&b| b == b'\n').collect() };
        for x in rules.scan_with_context(&f.buf, ctx) {
            if x.line > 0
                && let Some(text) = buf_lines.get(x.line - 1)
                && in_other_parent(repo, other_parents, &f.path, text)?
            {
                continue;
            }
            out.push(GitFinding {
                rule_id: x.rule_id,
                file: f.path.clone(),
                line: line_of(&f.lines, x.line),
                commit: id.to_string(),
                secret_redacted: x.secret_redacted,
                confidence: x.confidence,
            });
        }
    }
    Ok(out)
}

/// The content `change` adds, with the blob line of each added line; `None` when nothing in it
/// (raw or decoded) can match a rule. Text is diffed line by line; a binary blob is diffed by
/// its printable runs, so only the text the change brings is reported.
fn added_content(
    repo: &Repository,
    change: &BlobChange,
    id: &str,
    rules: &Rules,
) -> Result<Option<FileAdds>, GitScanError> {
    let path = &change.path;
    let new_blob = repo.find_blob(change.new).map_err(GitScanError::git(format!("reading {path} in {id}")))?;
    let old_blob = change
        .old
        .map(|o| repo.find_blob(o).map_err(GitScanError::git(format!("reading {path} in the parent of {id}"))))
        .transpose()?;
    let (new_data, old_data) = (new_blob.content(), old_blob.as_ref().map_or(&[][..], |b| b.content()));
    let (buf, lines) = if is_binary(new_data) {
        let new_runs = printable::runs(new_data);
        if !rules.may_match_decoded(&new_runs.text) {
            return Ok(None);
        }
        let (buf, numbers) = added_lines(&printable::runs(old_data).text, &new_runs.text);
        let lines = numbers.iter().map(|&n| line_of(&new_runs.lines, n as usize) as u32).collect();
        (buf, lines)
    } else {
        added_lines(old_data, new_data)
    };
    // Added text no rule can match, raw or decoded, needs no further work.
    Ok(rules.may_match_decoded(&buf).then(|| FileAdds { path: path.clone(), buf, lines }))
}

/// Whether any of `trees` has a file at `path` containing `line` as a whole line.
fn in_other_parent(repo: &Repository, trees: &[git2::Tree<'_>], path: &str, line: &[u8]) -> Result<bool, GitScanError> {
    for t in trees {
        let Ok(entry) = t.get_path(Path::new(path)) else { continue };
        if entry.kind() != Some(ObjectType::Blob) {
            continue;
        }
        let blob =
            repo.find_blob(entry.id()).map_err(GitScanError::git(format!("reading {path} in a merge parent")))?;
        if blob.content().split(|&b| b == b'\n').any(|l| l == line || l.strip_suffix(b"\r") == Some(line)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Unchanged lines kept around a change when the common start and end of two versions are
/// cut off before diffing, so the diff can still choose among repeated lines as it would with
/// the whole files.
const DIFF_MARGIN_LINES: usize = 20;

/// The lines of `new` that a line diff from `old` shows as added, joined with `\n`, and their
/// 1-based line numbers in `new`: Myers with git's indent heuristic (imara-diff) on the part
/// between the common start and end. A moved line counts as added, as in `git log -p` (so a
/// secret that gitleaks sees in a moved line we see too); where identical lines repeat, the
/// line numbers of added copies may differ from git's choice, never their content. (libgit2's
/// diff matches git exactly but costs twice as much here: it hashes every line of both versions
/// and SHA-1s the buffers.)
fn added_lines(old: &[u8], new: &[u8]) -> (Vec<u8>, Vec<u32>) {
    let (start, old_end, new_end) = middle(old, new);
    let line_base = memchr::memchr_iter(b'\n', &new[..start]).count() as u32;
    let input = InternedInput::new(&old[start..old_end], &new[start..new_end]);
    let mut diff = Diff::compute(Algorithm::Myers, &input);
    diff.postprocess_lines(&input);
    let mut buf = Vec::new();
    let mut numbers = Vec::new();
    for hunk in diff.hunks() {
        for i in hunk.after {
            let line = input.interner[input.after[i as usize]];
            buf.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
            buf.push(b'\n');
            numbers.push(line_base + i + 1);
        }
    }
    (buf, numbers)
}

/// The part of two versions worth diffing: `(start, old_end, new_end)`, where `old[..start]`
/// equals `new[..start]` and the ends after `old_end`/`new_end` are equal too, all on line
/// boundaries and [`DIFF_MARGIN_LINES`] away from the first and last difference.
fn middle(old: &[u8], new: &[u8]) -> (usize, usize, usize) {
    let mut start = common_prefix(old, new);
    for _ in 0..=DIFF_MARGIN_LINES {
        match memchr::memrchr(b'\n', &new[..start]) {
            Some(p) => start = p,
            None => {
                start = 0;
                break;
            }
        }
    }
    if start > 0 {
        start += 1;
    }
    let suffix = common_suffix(&old[start..], &new[start..]);
    let mut end = new.len() - suffix;
    for _ in 0..=DIFF_MARGIN_LINES {
        match memchr::memchr(b'\n', &new[end..]) {
            Some(p) if end + p + 1 < new.len() => end += p + 1,
            _ => return (start, old.len(), new.len()),
        }
    }
    (start, old.len() - (new.len() - end), end)
}

/// Length of the common prefix of `a` and `b` (block-wise compares first: they vectorise).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    i + a[i..n].iter().zip(&b[i..n]).take_while(|(x, y)| x == y).count()
}

/// Length of the common suffix of `a` and `b`.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let n = a.len().min(b.len());
    let (ta, tb) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut k = 0;
    while k + BLOCK <= n && ta[n - k - BLOCK..n - k] == tb[n - k - BLOCK..n - k] {
        k += BLOCK;
    }
    k + ta[..n - k].iter().rev().zip(tb[..n - k].iter().rev()).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(old: &str, new: &str) -> (String, Vec<u32>) {
        let (buf, n) = added_lines(old.as_bytes(), new.as_bytes());
        (String::from_utf8(buf).unwrap(), n)
    }

    #[test]
    fn added_lines_against_the_old_version() {
        assert_eq!(added("", "a\nb\n"), ("a\nb\n".into(), vec![1, 2]));
        assert_eq!(added("a\nb\nc\n", "a\nx\nb\nc\ny"), ("x\ny\n".into(), vec![2, 5]));
        assert_eq!(added("a\nb\n", "b\na\n"), ("a\n".into(), vec![2]), "a moved line is new, as in git");
        assert_eq!(added("a\nb\n", "a\nb\nb\n"), ("b\n".into(), vec![3]), "an extra copy is new");
        assert_eq!(added("a\nb\nc\n", "a\nc\n"), (String::new(), vec![]), "deletions add nothing");
        assert_eq!(added("a\r\nb\r\n", "a\r\nz\r\nb\r\n"), ("z\r\n".into(), vec![2]));
        assert_eq!(added("abc\n", "abd\n"), ("abd\n".into(), vec![1]), "a changed line is new");
        assert_eq!(added("x\nab\n", "x\nab\nab\n"), ("ab\n".into(), vec![3]));
        assert_eq!(added("a\nb", "a\nbc"), ("bc\n".into(), vec![2]), "no final newline");
        assert_eq!(added("a\n", "a\n"), (String::new(), vec![]));
        assert_eq!(added("k\nend\n", "k\nnew\nend\n"), ("new\n".into(), vec![2]));
        assert_eq!(added("line\n", "\nline\n"), ("\n".into(), vec![1]), "an empty line");
        assert_eq!(added("aXb\nc\n", "aYb\nc\n"), ("aYb\n".into(), vec![1]));
        let long: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let mut changed = long.clone();
        let pos = long[..2000].rfind('\n').unwrap() + 1;
        changed.insert_str(pos, "fresh\n");
        let at = long[..pos].matches('\n').count() as u32 + 1;
        assert_eq!(added(&long, &changed), ("fresh\n".into(), vec![at]));
    }

    /// The added lines' numbers as the stock `git diff` reports them (`-U0` hunk headers).
    #[allow(clippy::disallowed_methods)] // the test compares with the real git diff
    fn git_added(dir: &Path, old: &str, new: &str) -> Vec<u32> {
        std::fs::write(dir.join("old"), old).unwrap();
        std::fs::write(dir.join("new"), new).unwrap();
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["diff", "--no-index", "--no-color", "-U0", "old", "new"])
            .output()
            .expect("running git diff");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut numbers = Vec::new();
        for header in text.lines().filter(|l| l.starts_with("@@ ")) {
            let plus = header.split(' ').nth(2).unwrap().trim_start_matches('+');
            let (start, count) = plus.split_once(',').map_or((plus, "1"), |(s, c)| (s, c));
            let (start, count): (u32, u32) = (start.parse().unwrap(), count.parse().unwrap());
            numbers.extend(start..start + count);
        }
        numbers
    }

    #[test]
    fn added_lines_agree_with_git_among_repeated_and_moved_lines() {
        let dir = tempfile::tempdir().unwrap();
        let block = |i: u32| format!("\tcase {{\n\t\tname: \"t{i}\",\n\t\tkey: \"AKIA\",\n\t}},\n");
        let small: String = (0..6).map(block).collect();
        // A large file too, so that cutting off its common start and end is exercised.
        let large: String = (0..400).map(|i| block(i % 50)).collect();
        let mut seed = 7u64;
        let mut exact = 0;
        for round in 0..300 {
            let base = if round % 3 == 2 { &large } else { &small };
            // Edit the base: insert copies of blocks, move lines, change one.
            let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
            for _ in 0..1 + round % 4 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let at = (seed >> 33) as usize % (lines.len() + 1);
                match (seed >> 20) % 3 {
                    0 => lines.splice(at..at, block(0).lines().map(str::to_string)).for_each(drop),
                    1 if at < lines.len() => {
                        let l = lines.remove(at);
                        lines.insert((seed >> 40) as usize % (lines.len() + 1), l);
                    }
                    _ => lines.insert(at, format!("\tnew {round}")),
                }
            }
            let new = lines.join("\n") + "\n";
            let (text, ours) = added(base, &new);
            let theirs = git_added(dir.path(), base, &new);
            let new_lines: Vec<&str> = new.lines().collect();
            let content = |numbers: &[u32]| {
                let mut v: Vec<&str> = numbers.iter().map(|&n| new_lines[n as usize - 1]).collect();
                v.sort_unstable();
                v
            };
            assert_eq!(content(&ours), content(&theirs), "round {round}: the same lines are added");
            let listed: Vec<&str> = ours.iter().map(|&n| new_lines[n as usize - 1]).collect();
            assert_eq!(text.lines().collect::<Vec<_>>(), listed, "round {round}: numbers match the text");
            exact += usize::from(ours == theirs);
        }
        assert!(exact * 10 >= 300 * 9, "line numbers equal to git's in only {exact} of 300 rounds");
    }
}
