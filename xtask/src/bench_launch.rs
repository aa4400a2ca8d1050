//! `cargo xtask bench launch [--runs N]`: how long a warm `bot-bottle start --headless` of a
//! trivial agent takes to its first command, and how long teardown takes, step by step, beside
//! a bare `docker run --rm` of the same image (what any container costs on this engine).
//!
//! The bottle is real: all three daemons, one egress route, one git repo, supervise; the agent is
//! `true` in `debian:bookworm-slim`. Builds the release binaries first; the first launch (images,
//! caches) is not counted.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

struct Opts {
    runs: usize,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts { runs: 7 };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => o.runs = it.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument {other:?} (bench launch [--runs N])"),
        }
    }
    Ok(o)
}

/// One launch: wall time to the agent's first command, and each step's time.
struct Run {
    to_ready: Duration,
    total: Duration,
    steps: BTreeMap<String, f64>,
}

fn launch(bb: &Path, home: &Path, bin: &Path) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut child = Command::new(bb)
        .args(["start", "bench", "--backend", "docker", "--headless", "--prompt", "go", "--timings"])
        .env("BOT_BOTTLE_HOME", home)
        .env("BOT_BOTTLE_BIN_DIR", bin)
        .env("BENCH_TOKEN", "bench-token-value")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting bot-bottle")?;
    let mut to_ready = None;
    let mut steps = BTreeMap::new();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line?;
        if line.contains(" ready in ") && to_ready.is_none() {
            to_ready = Some(start.elapsed());
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let (Some(step), Some(ms)) = (v["step"].as_str(), v["ms"].as_f64())
        {
            steps.insert(step.to_string(), ms);
        }
        lines.push(line);
    }
    let status = child.wait()?;
    let total = start.elapsed();
    if !status.success() {
        bail!("bot-bottle start failed ({status}):\n{}", lines.join("\n"));
    }
    Ok(Run { to_ready: to_ready.context("no `ready in` line")?, total, steps })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(args)?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
    eprintln!("building the release binaries...");
    let built = Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .args(["build", "--release", "-q", "--workspace", "--bins"])
        .status()?;
    if !built.success() {
        bail!("cargo build --release failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(Into::into).unwrap_or_else(|| workspace.join("target"));
    let bin = Path::new(&target).join("release");
    let bb = bin.join("bot-bottle");
    let tmp = tempfile::tempdir()?;
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("bottles"))?;
    std::fs::write(
        home.join("bottles/bench.md"),
        "---\negress:\n  routes:\n    - host: api.example.com\n      auth: {token_ref: BENCH_TOKEN}\n\
         git-gate:\n  repos:\n    app:\n      url: file:///srv/app.git\n\
         agent_provider:\n  template: command\n  image: debian:bookworm-slim\n  command: [\"true\"]\n---\n",
    )?;
    std::fs::create_dir_all(home.join("agents"))?;
    std::fs::write(home.join("agents/bench.md"), "---\nbottle: bench\n---\n")?;

    eprintln!("warm-up launch (builds or finds the images, fills the caches)...");
    launch(&bb, &home, &bin)?;
    let mut runs = Vec::new();
    let mut bare = Vec::new();
    for i in 0..o.runs {
        // Alternate with the baseline so load from elsewhere falls on both alike.
        let t = Instant::now();
        let s = Command::new("docker")
            .args(["run", "--rm", "--network", "none", "debian:bookworm-slim", "true"])
            .stdout(Stdio::null())
            .status()?;
        if !s.success() {
            bail!("docker run failed");
        }
        bare.push(t.elapsed().as_secs_f64() * 1000.0);
        let r = launch(&bb, &home, &bin)?;
        eprintln!(
            "  run {}: ready {:.0} ms, total {:.0} ms",
            i + 1,
            r.to_ready.as_secs_f64() * 1000.0,
            r.total.as_secs_f64() * 1000.0
        );
        runs.push(r);
    }
    let col = |f: &dyn Fn(&Run) -> f64| -> (f64, f64, f64) {
        let v: Vec<f64> = runs.iter().map(f).collect();
        (median(v.clone()), v.iter().copied().fold(f64::MAX, f64::min), v.iter().copied().fold(0.0, f64::max))
    };
    #[allow(clippy::print_stdout)]
    {
        println!("bot-bottle start --headless, trivial agent, warm caches: {} runs (ms; median, min-max)", o.runs);
        println!("{:<34} {:>8} {:>16}", "step", "median", "range");
        let mut names: Vec<String> = runs[0].steps.keys().cloned().collect();
        let order = [
            "state",
            "images",
            "networks",
            "bundle",
            "agent",
            "firewall",
            "ready",
            "run",
            "teardown: remove_container",
            "teardown: remove_network",
            "teardown: keep_audit",
            "teardown: remove_dir",
            "teardown: sweep",
            "teardown",
        ];
        names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(99));
        for name in &names {
            let (m, lo, hi) = col(&|r| r.steps.get(name).copied().unwrap_or(0.0));
            println!("{:<34} {m:>8.0} {:>16}", format!("  {name}"), format!("{lo:.0}-{hi:.0}"));
        }
        let (ready, lo, hi) = col(&|r| r.to_ready.as_secs_f64() * 1000.0);
        println!(
            "{:<34} {ready:>8.0} {:>16}   target <= 2000",
            "to agent ready (wall, from exec)",
            format!("{lo:.0}-{hi:.0}")
        );
        let (td, lo, hi) = col(&|r| r.steps.get("teardown").copied().unwrap_or(0.0));
        println!("{:<34} {td:>8.0} {:>16}   target <= 1000", "teardown", format!("{lo:.0}-{hi:.0}"));
        let (tot, lo, hi) = col(&|r| r.total.as_secs_f64() * 1000.0);
        println!("{:<34} {tot:>8.0} {:>16}", "whole command (wall)", format!("{lo:.0}-{hi:.0}"));
        let b = median(bare.clone());
        println!(
            "{:<34} {b:>8.0} {:>16}",
            "docker run --rm … true (baseline)",
            format!(
                "{:.0}-{:.0}",
                bare.iter().copied().fold(f64::MAX, f64::min),
                bare.iter().copied().fold(0.0, f64::max)
            )
        );
        println!(
            "ratio: a whole bottle (two networks, bundle, sealed agent, teardown) = {:.1}x one bare container",
            tot / b
        );
    }
    Ok(())
}
