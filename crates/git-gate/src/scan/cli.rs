//! `git-gate scan`: the engine as a command, for debugging, benchmarks and hooks.
//! Exit codes: 0 clean, 1 findings, 2 error (including bad usage).

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use common::scan::Rules;

use super::{
    Confidence, GitFinding, GitScanError, open_repo_from_env, scan_new_commits, scan_paths, scan_range, scan_ref_names,
};
use crate::verdict::{Verdict, verdict};

/// Output format of `git-gate scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One line per finding: `rule_id file:line commit secret_redacted`.
    #[default]
    Text,
    /// A JSON list of `{"rule_id","file","line","commit","secret_redacted"}`.
    Json,
}

/// Scan a repository's history, a revision range, ref updates on stdin (as a pre-receive
/// hook) or files and directories for secrets.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Scan the history of this git repository (added lines of each commit and its message).
    #[arg(long, value_name = "REPO")]
    pub git: Option<PathBuf>,
    /// Only these commits (`A..B`, `A...B`, or a revision and its history); default all history.
    #[arg(long, value_name = "REV-RANGE", requires = "git")]
    pub range: Option<String>,
    /// Act as a pre-receive hook: read `OLD NEW REF` lines on stdin and scan the commits the
    /// push introduces, in the repository described by the environment (or --git).
    #[arg(long, conflicts_with_all = ["range", "paths"])]
    pub pre_receive: bool,
    /// Files or directories to scan.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// A gitleaks-format rules TOML; extends the built-in rules unless --rules-replace.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Use only the rules of --rules, not the built-ins.
    #[arg(long, requires = "rules")]
    pub rules_replace: bool,
}

/// Run the command: 0 clean, 1 findings, 2 error.
pub fn run_scan(args: ScanArgs) -> ExitCode {
    match scan(&args) {
        Ok(findings) => {
            if let Err(e) = print(&findings, args.format) {
                eprintln!("git-gate scan: writing the report: {e}");
                return ExitCode::from(2);
            }
            // The push path's decision, with no operator to ask: any finding fails the scan.
            match verdict(&findings, &[], false) {
                Verdict::Forward => ExitCode::SUCCESS,
                Verdict::Hold(_) | Verdict::Refuse(_) => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("git-gate scan: {e}");
            ExitCode::from(2)
        }
    }
}

/// A user's rules file (extending the built-ins unless `replace`).
fn load_rules(path: &std::path::Path, replace: bool) -> Result<Rules, GitScanError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| GitScanError::Io { path: path.display().to_string(), source })?;
    Rules::from_gitleaks_toml(&text, !replace)
        .map_err(|source| GitScanError::Rules { path: path.display().to_string(), source })
}

fn scan(args: &ScanArgs) -> Result<Vec<GitFinding>, GitScanError> {
    let own;
    let rules: &Rules = match &args.rules {
        None => Rules::builtin(),
        Some(path) => {
            own = load_rules(path, args.rules_replace)?;
            &own
        }
    };
    if args.pre_receive {
        let repo = match &args.git {
            Some(p) => {
                git2::Repository::open(p).map_err(GitScanError::git(format!("opening repository {}", p.display())))?
            }
            None => open_repo_from_env()?,
        };
        let mut tips = Vec::new();
        let mut names = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|source| GitScanError::Io { path: "stdin".into(), source })?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let [_old, new, name] = fields[..] else {
                return Err(GitScanError::Usage(format!("malformed ref update line {line:?} (expected OLD NEW REF)")));
            };
            let oid = git2::Oid::from_str(new).map_err(GitScanError::git(format!("object id {new:?}")))?;
            if !oid.is_zero() {
                names.push(name.to_string());
            }
            tips.push(oid);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut findings = scan_ref_names(&names, rules);
        let report = scan_new_commits(&repo, &tips, rules)?;
        eprintln!(
            "git-gate scan: {} new commit(s) scanned, {} finding(s)",
            report.commits_scanned,
            report.findings.len() + findings.len()
        );
        findings.extend(report.findings);
        findings.sort();
        return Ok(findings);
    }
    if args.git.is_none() && args.paths.is_empty() {
        return Err(GitScanError::Usage("nothing to scan: give --git REPO, --pre-receive, or PATH...".into()));
    }
    let mut findings = Vec::new();
    if let Some(p) = &args.git {
        let repo =
            git2::Repository::open(p).map_err(GitScanError::git(format!("opening repository {}", p.display())))?;
        let report = scan_range(&repo, args.range.as_deref(), rules)?;
        eprintln!("git-gate scan: {} commit(s) scanned, {} finding(s)", report.commits_scanned, report.findings.len());
        findings.extend(report.findings);
    }
    if !args.paths.is_empty() {
        findings.extend(scan_paths(&args.paths, rules)?);
    }
    Ok(findings)
}

fn print(findings: &[GitFinding], format: Format) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, findings)?;
            writeln!(out)?;
        }
        Format::Text => {
            for f in findings {
                let commit = if f.commit.is_empty() { String::new() } else { format!(" {}", f.commit) };
                let low = if f.confidence == Confidence::Low { " (low confidence)" } else { "" };
                writeln!(out, "{} {}:{}{} {}{low}", f.rule_id, f.file, f.line, commit, f.secret_redacted)?;
            }
        }
    }
    out.flush()
}
