//! `cargo xtask bench scan --throughput [--secs S] [--rounds R] [--corpus prose|json]
//! [--mode standard|strict]`: how fast the DLP scan reads what leaves a bottle, in bytes per
//! second of input. The corpora are generated in memory (deterministic): technical English
//! prose, and JSON shaped like an agent's API call (messages of prose and code). Each is cut
//! into bodies of 4 KiB, 64 KiB and 1 MiB, and every body is scanned the way egress-proxy scans
//! a request body: the held secrets (two tokens) and the shared rules, in `standard` and in
//! `strict` mode (`--corpus` and `--mode` keep one of each). Rounds alternate between the cells,
//! and the best and median round of each are printed, in bytes per second of wall time and of
//! the scanning thread's CPU time (the machine is shared: the best round is the least disturbed
//! one, and CPU time leaves out what other work took). Nothing here is a test: it prints, it
//! does not assert.
#![allow(clippy::print_stdout)] // a benchmark prints its table

use std::time::{Duration, Instant};

use common::Secret;
use common::scan::corpus::FakeRng;
use common::scan::{KnownSecrets, Mode, Rules};

/// Words of technical prose, among them the names the rules key on (`key`, `token`, `access`,
/// `api`, `secret`, `password`...) at the rate any README or design note uses them.
const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "that",
    "with",
    "on",
    "as",
    "it",
    "by",
    "this",
    "be",
    "are",
    "from",
    "or",
    "an",
    "at",
    "which",
    "not",
    "when",
    "we",
    "can",
    "each",
    "its",
    "if",
    "all",
    "one",
    "into",
    "request",
    "response",
    "client",
    "server",
    "config",
    "token",
    "session",
    "user",
    "cache",
    "queue",
    "handler",
    "router",
    "buffer",
    "stream",
    "record",
    "parser",
    "value",
    "result",
    "error",
    "index",
    "account",
    "key",
    "secret",
    "password",
    "auth",
    "access",
    "api",
    "limit",
    "retry",
    "timeout",
    "payload",
    "header",
    "state",
    "worker",
    "batch",
    "metric",
    "function",
    "module",
    "test",
    "build",
    "release",
    "branch",
    "commit",
    "review",
    "change",
    "update",
    "returns",
    "reads",
    "writes",
    "checks",
    "calls",
    "sends",
    "stores",
    "loads",
    "parses",
    "before",
    "after",
    "because",
    "while",
    "until",
    "without",
    "between",
    "should",
    "must",
    "may",
    "will",
    "file",
    "path",
    "directory",
    "process",
    "thread",
    "memory",
    "disk",
    "network",
    "connection",
    "socket",
    "database",
    "table",
    "column",
    "query",
    "schema",
    "migration",
    "field",
    "type",
    "struct",
    "trait",
    "method",
];

/// Technical prose: sentences of 6 to 24 words (three in five of them the short words every
/// sentence has, the rest technical), paragraphs of 3 to 8 sentences, a number now and then.
fn prose(r: &mut FakeRng, len: usize) -> String {
    let mut out = String::with_capacity(len + 256);
    while out.len() < len {
        for _ in 0..3 + r.below(6) {
            let n = 6 + r.below(19);
            for i in 0..n {
                let w = if r.below(5) < 3 { WORDS[r.below(32)] } else { WORDS[32 + r.below(WORDS.len() - 32)] };
                if i == 0 {
                    let mut c = w.chars();
                    if let Some(f) = c.next() {
                        out.extend(f.to_uppercase());
                        out.push_str(c.as_str());
                    }
                } else {
                    out.push(' ');
                    if r.below(40) == 0 {
                        out.push_str(&r.below(10_000).to_string());
                        out.push(' ');
                    }
                    out.push_str(w);
                }
                if i + 1 < n && r.below(12) == 0 {
                    out.push(',');
                }
            }
            out.push_str(". ");
        }
        out.push_str("\n\n");
    }
    out.truncate(len);
    out
}

/// A code-ish line, for the code blocks inside JSON messages.
fn code(r: &mut FakeRng) -> String {
    let w = |r: &mut FakeRng| WORDS[32 + r.below(WORDS.len() - 32)];
    match r.below(5) {
        0 => format!("    let {}_{} = {}.get(\"{}\")?;", w(r), w(r), w(r), w(r)),
        1 => format!("fn {}(input: &str) -> Result<{}, Error> {{", w(r), "Value"),
        2 => format!("    // {} {} before {}", w(r), w(r), w(r)),
        3 => format!("    if {}.len() > {} {{ return Err(Error::TooLong); }}", w(r), r.below(4096)),
        _ => format!("    {}.insert(\"{}\", {});", w(r), w(r), r.below(100_000)),
    }
}

/// JSON like an agent's API call: a model, settings, and alternating messages of prose with the
/// odd code block, escaped as JSON strings are.
fn json(r: &mut FakeRng, len: usize) -> String {
    let mut out = String::from(r#"{"model":"some-model-1","max_tokens":4096,"stream":true,"messages":["#);
    let mut turn = 0;
    while out.len() < len {
        let n = 200 + r.below(1500);
        let mut text = prose(r, n);
        if r.below(3) == 0 {
            text.push_str("\n```rust\n");
            for _ in 0..3 + r.below(12) {
                text.push_str(&code(r));
                text.push('\n');
            }
            text.push_str("```\n");
        }
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        let sep = if turn == 0 { "" } else { "," };
        out.push_str(&format!(r#"{sep}{{"role":"{role}","content":{}}}"#, serde_json::Value::String(text)));
        turn += 1;
    }
    out.push_str("]}");
    out
}

struct Opts {
    secs: f64,
    rounds: usize,
    /// Only this corpus (`prose` or `json`), only this mode.
    corpus: Option<String>,
    mode: Option<Mode>,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts { secs: 1.0, rounds: 5, corpus: None, mode: None };
    let mut it = args.iter().filter(|a| *a != "--throughput");
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--corpus" => match val()?.as_str() {
                c @ ("prose" | "json") => o.corpus = Some(c.to_string()),
                other => anyhow::bail!("--corpus {other:?}: expected prose or json"),
            },
            "--mode" => {
                o.mode = Some(match val()?.as_str() {
                    "standard" => Mode::Standard,
                    "strict" => Mode::Strict,
                    other => anyhow::bail!("--mode {other:?}: expected standard or strict"),
                })
            }
            other => anyhow::bail!(
                "unknown argument {other:?} (expected --throughput [--secs S] [--rounds R] [--corpus prose|json] \
                 [--mode standard|strict])"
            ),
        }
    }
    Ok(o)
}

/// This thread's CPU time (user + system) in seconds, from /proc.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rfind(')').map_or("", |i| &stat[i + 2..]).split_whitespace().collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks as f64 / 100.0
}

/// Scans `bodies` over and over for about `secs`: bytes per second of wall time and of this
/// thread's CPU time (the second does not count time other work on a shared machine took).
fn rate(bodies: &[&[u8]], secs: f64, scan: &dyn Fn(&[u8]) -> usize) -> (f64, f64) {
    let (mut bytes, mut found) = (0usize, 0usize);
    let (start, cpu) = (Instant::now(), cpu_secs());
    let limit = Duration::from_secs_f64(secs);
    while start.elapsed() < limit {
        for b in bodies {
            found += scan(b);
            bytes += b.len();
        }
    }
    std::hint::black_box(found);
    let cpu = (cpu_secs() - cpu).max(0.01);
    (bytes as f64 / start.elapsed().as_secs_f64(), bytes as f64 / cpu)
}

/// One cell of the table: corpus index, body size, mode, and each round's (wall, CPU) rates.
type Cell = (usize, usize, Mode, Vec<(f64, f64)>);

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    if cfg!(debug_assertions) {
        // `cargo xtask` is a debug build, whose scanner is a hundred times slower than the one
        // egress-proxy ships: the numbers come from this benchmark built in release.
        eprintln!("building the scan throughput benchmark (release)...");
        let st = std::process::Command::new("cargo")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["run", "--release", "-q", "-p", "xtask", "--", "bench", "scan"])
            .args(args)
            .status()?;
        anyhow::ensure!(st.success(), "the release build of the scan throughput benchmark failed");
        return Ok(());
    }
    let mut r = FakeRng::new(0x5ca1ab1e);
    let corpora = [("prose", prose(&mut r, 4 << 20)), ("json", json(&mut r, 4 << 20))];
    let rules = Rules::builtin();
    // Two held tokens, as a bottle with two routes has.
    let known = KnownSecrets::new([
        Secret::new(format!("tok-{}", r.chars("abcdefghijklmnopqrstuvwxyz0123456789", 32))),
        Secret::new(r.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 40)),
    ]);
    let sizes = [4 << 10, 64 << 10, 1 << 20];
    let modes = [Mode::Standard, Mode::Strict];
    // Every cell: (corpus, size, mode) and its rounds' rates (wall, CPU).
    let mut cells: Vec<Cell> = Vec::new();
    for (c, (name, _)) in corpora.iter().enumerate() {
        for &size in &sizes {
            for &mode in &modes {
                if o.corpus.as_deref().is_some_and(|only| only != *name) || o.mode.is_some_and(|m| m != mode) {
                    continue;
                }
                cells.push((c, size, mode, Vec::new()));
            }
        }
    }
    // Sanity: the corpora are clean in both modes (a DLP that blocked them would not be fast,
    // it would be wrong).
    for (name, text) in &corpora {
        for &mode in &modes {
            let found = common::scan::scan_outbound(Some(rules), Some(&known), mode, text.as_bytes());
            anyhow::ensure!(found.is_empty(), "the {name} corpus is not clean in {mode:?} mode: {found:?}");
        }
    }
    println!(
        "scan throughput: {} MiB of each corpus, bodies of 4 KiB / 64 KiB / 1 MiB, {} rounds of ~{} s per cell, \
         alternating; {} CPUs",
        4,
        o.rounds,
        o.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for _ in 0..o.rounds {
        for (c, size, mode, rates) in cells.iter_mut() {
            let bodies: Vec<&[u8]> = corpora[*c].1.as_bytes().chunks(*size).collect();
            let mode = *mode;
            rates.push(rate(&bodies, o.secs, &|b| {
                common::scan::scan_outbound(Some(rules), Some(&known), mode, b).len()
            }));
        }
    }
    println!(
        "{:<8} {:>8} {:>9} {:>15} {:>15} {:>14} {:>14}",
        "corpus", "body", "mode", "best wall MB/s", "median wall", "best CPU MB/s", "median CPU"
    );
    for (c, size, mode, rates) in cells {
        let mut wall: Vec<f64> = rates.iter().map(|r| r.0).collect();
        let mut cpu: Vec<f64> = rates.iter().map(|r| r.1).collect();
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        println!(
            "{:<8} {:>8} {:>9} {:>15.0} {:>15.0} {:>14.0} {:>14.0}",
            corpora[c].0,
            format!("{} KiB", size >> 10),
            mode.as_str(),
            wall[wall.len() - 1] / 1e6,
            wall[wall.len() / 2] / 1e6,
            cpu[cpu.len() - 1] / 1e6,
            cpu[cpu.len() / 2] / 1e6
        );
    }
    Ok(())
}
