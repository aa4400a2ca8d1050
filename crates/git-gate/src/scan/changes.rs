//! What a commit's tree changes against one parent's tree: the blobs that are new or changed
//! at each path (with the old blob when there was one), and every path that did not exist
//! before — files, symlinks, submodule entries and empty directories alike, since a name in a
//! tree reaches the upstream as surely as a file's content does.
//!
//! A walk over both trees that descends only into subtrees whose ids differ (what a tree diff
//! does), looking each entry up by name in the old directory.

use git2::{ObjectType, Oid, Repository, Tree};

use super::GitScanError;

/// A blob that is new or changed at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobChange {
    pub path: String,
    pub new: Oid,
    /// The blob at the same path before, if the path held a blob.
    pub old: Option<Oid>,
}

/// Everything new in a tree against its parent's.
#[derive(Debug, Default)]
pub(crate) struct TreeChanges {
    pub blobs: Vec<BlobChange>,
    /// Paths that did not exist before: each new file, link or submodule entry, and each new
    /// empty directory (a new directory's name is part of its files' paths).
    pub new_paths: Vec<String>,
}

/// The changes from `old` (none for a root commit) to `new`.
pub(crate) fn tree_changes(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: &Tree<'_>,
) -> Result<TreeChanges, GitScanError> {
    let mut out = TreeChanges::default();
    walk(repo, old, new, "", &mut out)?;
    Ok(out)
}

fn walk(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: &Tree<'_>,
    prefix: &str,
    out: &mut TreeChanges,
) -> Result<(), GitScanError> {
    if new.is_empty() && old.is_none() && !prefix.is_empty() {
        out.new_paths.push(prefix.trim_end_matches('/').to_string());
    }
    for e in new.iter() {
        let name = e.name_bytes();
        let prev = old.and_then(|t| t.get_name_bytes(name)).map(|p| (p.id(), p.filemode(), p.kind()));
        if prev.is_some_and(|(id, mode, _)| id == e.id() && mode == e.filemode()) {
            continue;
        }
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        match e.kind() {
            Some(ObjectType::Tree) => {
                let sub = repo.find_tree(e.id()).map_err(GitScanError::git(format!("reading tree {path}")))?;
                let old_sub = match prev {
                    Some((id, _, Some(ObjectType::Tree))) => {
                        Some(repo.find_tree(id).map_err(GitScanError::git(format!("reading tree {path} before")))?)
                    }
                    _ => None,
                };
                walk(repo, old_sub.as_ref(), &sub, &format!("{path}/"), out)?;
            }
            Some(ObjectType::Blob) => {
                if prev.is_none_or(|(_, _, kind)| kind != Some(ObjectType::Blob)) {
                    out.new_paths.push(path.clone());
                }
                let old = match prev {
                    Some((id, _, Some(ObjectType::Blob))) => Some(id),
                    _ => None,
                };
                out.blobs.push(BlobChange { path, new: e.id(), old });
            }
            // A submodule (gitlink): its commit is not in this repository, its name is.
            _ => {
                if prev.is_none() {
                    out.new_paths.push(path);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(repo: &Repository, files: &[(&str, &[u8])]) -> Oid {
        // Builds nested trees from slash-separated paths; a path ending in '/' is an empty dir.
        fn build(repo: &Repository, entries: &[(&str, &[u8])]) -> Oid {
            let mut b = repo.treebuilder(None).unwrap();
            let mut dirs: std::collections::BTreeMap<&str, Vec<(&str, &[u8])>> = Default::default();
            for (path, data) in entries {
                match path.split_once('/') {
                    Some((dir, rest)) => dirs.entry(dir).or_default().push((rest, data)),
                    None => {
                        let blob = repo.blob(data).unwrap();
                        b.insert(path, blob, 0o100644).unwrap();
                    }
                }
            }
            for (dir, inner) in dirs {
                let inner: Vec<(&str, &[u8])> = inner.into_iter().filter(|(p, _)| !p.is_empty()).collect();
                b.insert(dir, build(repo, &inner), 0o040000).unwrap();
            }
            b.write().unwrap()
        }
        build(repo, files)
    }

    #[test]
    fn new_and_changed_blobs_and_new_paths() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let a = tree(&repo, &[("keep.txt", b"same"), ("src/lib.rs", b"v1"), ("old/gone.txt", b"x")]);
        let b = tree(
            &repo,
            &[("keep.txt", b"same"), ("src/lib.rs", b"v2"), ("src/new.rs", b"n"), ("empty/", b""), ("d/e/f.txt", b"f")],
        );
        let (a, b) = (repo.find_tree(a).unwrap(), repo.find_tree(b).unwrap());
        let c = tree_changes(&repo, Some(&a), &b).unwrap();
        let blobs: Vec<(&str, bool)> = c.blobs.iter().map(|b| (b.path.as_str(), b.old.is_some())).collect();
        assert_eq!(blobs, [("d/e/f.txt", false), ("src/lib.rs", true), ("src/new.rs", false)]);
        assert_eq!(c.new_paths, ["d/e/f.txt", "empty", "src/new.rs"]);
        let root = tree_changes(&repo, None, &a).unwrap();
        assert_eq!(root.blobs.len(), 3);
        assert_eq!(root.new_paths, ["keep.txt", "old/gone.txt", "src/lib.rs"]);
    }
}
