//! The git side of secret scanning: which bytes of a repository to hand to the shared engine
//! ([`common::scan`]) and how to report what it finds.
//!
//! - [`scan_new_commits`]: what a push introduces — every commit reachable from the new tips
//!   and from no existing ref; the pre-receive hook calls it on a repository opened with
//!   [`open_repo_from_env`] so objects still in quarantine are visible.
//! - [`scan_range`]: a revision range or all history (`git-gate scan --git`).
//! - [`scan_paths`]: files and directories (`git-gate scan PATH...`).
//!
//! Per commit: its header (author, committer, extra headers) and message, the paths it creates
//! (files, links, submodules, empty directories) and the lines it adds relative to its first
//! parent (a root commit adds all of its content); binary blobs by their printable runs
//! ([`printable`]), so nothing a push carries skips the engine. Per annotated tag: header and
//! message, for every tag of a chain. Commits are scanned in parallel (rayon), each worker with
//! its own handle on the same object database. Any object that cannot be read is an error: the
//! scan never passes what it could not see.

mod changes;
mod cli;
mod printable;
mod walk;

pub use cli::{Format, ScanArgs, run_scan};
pub use common::scan::{Confidence, Rules};
pub use walk::{scan_new_commits, scan_paths, scan_range, scan_ref_names};

/// File name reported for a finding in a commit message.
pub const COMMIT_MESSAGE: &str = "(commit message)";
/// File name reported for a finding in a commit's header (author, committer, extra headers).
pub const COMMIT_HEADER: &str = "(commit header)";
/// File name reported for a finding in an annotated tag's message.
pub const TAG_MESSAGE: &str = "(tag message)";
/// File name reported for a finding in an annotated tag's header (tag name, tagger).
pub const TAG_HEADER: &str = "(tag header)";
/// File name reported for a finding in a blob a tag or ref points at directly.
pub const TAGGED_BLOB: &str = "(tagged blob)";
/// Prefix of the file name reported for a finding in a path (followed by the path, the secret
/// in it redacted).
pub const PATH: &str = "(path) ";
/// Prefix of the file name reported for a finding in a pushed ref's name.
pub const REF_NAME: &str = "(ref name) ";

/// One secret found in a repository or a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct GitFinding {
    pub rule_id: String,
    /// Path in the tree (or one of [`COMMIT_MESSAGE`], [`COMMIT_HEADER`], [`TAG_MESSAGE`],
    /// [`TAG_HEADER`], [`TAGGED_BLOB`], or [`PATH`] / [`REF_NAME`] and the name), or the path on
    /// disk for [`scan_paths`].
    pub file: String,
    /// 1-based line in the file as of `commit` (0 for a finding in a path or ref name).
    pub line: usize,
    /// Full commit id; empty for [`scan_paths`].
    pub commit: String,
    pub secret_redacted: String,
    /// `low` for a match that also reads like something harmless (e.g. an identifier assigned
    /// to a `key` name): the gate holds such a push for the operator instead of refusing it.
    pub confidence: Confidence,
}

/// The result of scanning commits.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Sorted by commit, file, line, rule.
    pub findings: Vec<GitFinding>,
    pub commits_scanned: usize,
}

/// Why a scan could not be completed (a scan that errors must be treated as failed).
#[derive(Debug, thiserror::Error)]
pub enum GitScanError {
    #[error("{what}: {source}")]
    Git {
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rules file {path}: {source}")]
    Rules {
        path: String,
        #[source]
        source: common::scan::ScanError,
    },
    #[error("{0}")]
    Usage(String),
}

impl GitScanError {
    pub(crate) fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> GitScanError {
        let what = what.into();
        move |source| GitScanError::Git { what, source }
    }
}

/// Open the repository the way git describes it to a hook: `GIT_DIR`, and the quarantine's
/// `GIT_OBJECT_DIRECTORY` + `GIT_ALTERNATE_OBJECT_DIRECTORIES`, so a pre-receive hook sees the
/// objects of the push it is judging.
pub fn open_repo_from_env() -> Result<git2::Repository, GitScanError> {
    git2::Repository::open_from_env()
        .map_err(GitScanError::git("opening the repository from GIT_DIR and the environment"))
}
