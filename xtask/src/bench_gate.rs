//! `cargo xtask bench gate [--commits N] [--runs R] [--bin GIT_GATE]`: a push of N commits (default 1,000)
//! through git-gate (smart HTTP → policy → secret scan → forward over SSH) vs the same push
//! directly to the same kind of upstream over SSH, side by side in one run, on a real `sshd`
//! started on a loopback port. Prints both times, the ratio, and how much of the gate's time was
//! scanning (from the hook's `scanned N commits in X ms` line). Target: gate ≤ 2× direct.
//! The pushed content is realistic (see [`push_content`]): the scan time is the real one, not
//! the cost of skipping text without a rule keyword.
//!
//! Needs: root (sshd logs in as root with a generated key), /usr/sbin/sshd, ssh-keygen, git.
//! Builds `git-gate` in release mode first.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::scan::corpus::FakeRng;

struct Opts {
    commits: usize,
    runs: usize,
    /// A git-gate binary to measure instead of building this tree's.
    bin: Option<PathBuf>,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts { commits: 1000, runs: 3, bin: None };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> anyhow::Result<usize> {
            it.next().with_context(|| format!("{name} needs a value"))?.parse().with_context(|| name.to_string())
        };
        match a.as_str() {
            "--commits" => o.commits = val("--commits")?,
            "--runs" => o.runs = val("--runs")?,
            "--bin" => o.bin = Some(PathBuf::from(it.next().context("--bin needs a path")?)),
            other => bail!("unknown argument {other:?} (expected --commits N, --runs R, --bin GIT_GATE)"),
        }
    }
    ensure!(o.commits > 0 && o.runs > 0, "--commits and --runs must be positive");
    Ok(o)
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@bottle.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@bottle.invalid");
    c
}

/// Killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sshd(dir: &Path) -> anyhow::Result<(Proc, u16)> {
    std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
    run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join("host_key")))?;
    run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join("deploy_key")))?;
    std::fs::copy(dir.join("deploy_key.pub"), dir.join("authorized_keys"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nLogLevel ERROR\nMaxStartups 100\n",
            dir.join("host_key").display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display()
        ),
    )?;
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting /usr/sbin/sshd")?;
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "sshd did not listen on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let host = std::fs::read_to_string(dir.join("host_key.pub"))?;
    let mut hp = host.split_whitespace();
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {} {}\n", hp.next().unwrap_or(""), hp.next().unwrap_or("")),
    )?;
    Ok((p, port))
}

/// One line of Rust that talks about credentials without holding one.
fn code_line(r: &mut FakeRng, i: usize, l: usize) -> String {
    match r.below(8) {
        0 => format!("    let token = settings.get(\"token_{l}\").context(\"token_{l} is not set\")?;"),
        1 => format!("    let password_file = Path::new(\"/etc/app/password_{i}.txt\");"),
        2 => format!("    // the api_key for worker {i} comes from the environment, never from this file"),
        3 => format!("    if secret.len() < {} {{ return Err(Error::TooShort(\"secret\")); }}", 8 + l),
        4 => format!("    headers.insert(AUTHORIZATION, format!(\"Bearer {{}}\", token_{l}));"),
        5 => format!("    let checksum_{l} = \"{}\";", r.hex(64)),
        _ => format!("fn f_{i}_{l}(x: u64) -> u64 {{ x.wrapping_mul({l}) + {i} }}"),
    }
}

/// fast-import input for `commits` commits on `main` (the first one on top of the seed).
fn push_content(commits: usize) -> Vec<u8> {
    use base64::Engine as _;
    let mut r = FakeRng::new(0x9a7e);
    let mut out = Vec::new();
    let file = |out: &mut Vec<u8>, path: &str, data: &[u8]| {
        out.extend_from_slice(format!("M 100644 inline {path}\ndata {}\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.push(b'\n');
    };
    for i in 0..commits {
        let msg = format!("commit {i}: rotate the token cache, api_key lookup\n");
        out.extend_from_slice(
            format!("commit refs/heads/main\ncommitter bench <bench@bottle.invalid> {} +0000\n", 1_700_000_000 + i)
                .as_bytes(),
        );
        out.extend_from_slice(format!("data {}\n{msg}", msg.len()).as_bytes());
        if i == 0 {
            out.extend_from_slice(b"from refs/heads/main^0\n");
        }
        let body: String = (0..40).map(|l| code_line(&mut r, i, l) + "\n").collect();
        file(&mut out, &format!("src/m{}.rs", i % 50), body.as_bytes());
        if i % 4 == 0 {
            let yaml = format!(
                "service: worker-{i}\npassword_file: /run/secrets/db_password\ntoken_ttl: {}\napi_key_header: X-Api-Key\n",
                300 + r.below(3600)
            );
            file(&mut out, &format!("config/settings{}.yaml", i % 10), yaml.as_bytes());
        }
        if i % 5 == 0 {
            let text: String = (0..20)
                .map(|l| format!("{{\"id\": {l}, \"name\": \"item-{i}-{l}\", \"tags\": [\"a\", \"b\"]}}\n"))
                .collect();
            let hexed: String = text.bytes().take(64).map(|b| format!("{b:02x}")).collect();
            let fixture = format!(
                "data: {}\nchecksum_source: {hexed}\n",
                base64::engine::general_purpose::STANDARD.encode(&text)
            );
            file(&mut out, &format!("fixtures/data{}.yaml", i % 20), fixture.as_bytes());
        }
        if i % 25 == 0 {
            let mut bin = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
            bin.extend((0..16_384).map(|_| r.below(256) as u8));
            bin.extend(format!("\0tEXtSoftware\0bench image {i}\0").as_bytes());
            file(&mut out, &format!("assets/image{}.png", i % 8), &bin);
        }
        out.push(b'\n');
    }
    out
}

fn bare(path: &Path, seed: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)?;
    run_ok(git(path).args(["init", "-q", "--bare", "-b", "main"]))?;
    run_ok(git(seed).args(["push", "-q", path.to_str().unwrap_or_default(), "main"]))?;
    Ok(())
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let opts = parse(args)?;
    let root_dir = std::env::var("CARGO_MANIFEST_DIR").map(PathBuf::from).context("run through cargo xtask")?;
    let workspace = root_dir.parent().context("workspace root")?.to_path_buf();
    let gate_bin = match &opts.bin {
        Some(bin) => bin.clone(),
        None => {
            eprintln!("building git-gate (release)...");
            run_ok(Command::new(env!("CARGO")).current_dir(&workspace).args([
                "build",
                "--release",
                "-q",
                "-p",
                "git-gate",
            ]))?;
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
            target.join("release/git-gate")
        }
    };

    let tmp = tempfile::tempdir()?;
    let t = tmp.path();
    let (_sshd, port) = start_sshd(t)?;
    let ssh_cmd = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        t.join("deploy_key").display(),
        t.join("known_hosts").display()
    );

    // Seed history (one commit) and the N commits to push: each changes a source-like file.
    let work = t.join("work");
    std::fs::create_dir(&work)?;
    run_ok(git(&work).args(["init", "-q", "-b", "main"]))?;
    std::fs::write(work.join("README.md"), "bench\n")?;
    run_ok(git(&work).args(["add", "README.md"]))?;
    run_ok(git(&work).args(["commit", "-qm", "seed"]))?;
    let seed_dir = t.join("seed.git");
    run_ok(git(t).args([
        "clone",
        "-q",
        "--bare",
        work.to_str().unwrap_or_default(),
        seed_dir.to_str().unwrap_or_default(),
    ]))?;
    eprintln!("making {} commits...", opts.commits);
    // fast-import keeps setup time small. The content is what an agent pushes: source files full
    // of rule keywords (token, password, api_key, secret), YAML settings, base64- and hex-encoded
    // fixtures (decoded and scanned), and now and then a binary (scanned by its printable runs),
    // so that the scan takes the time it really takes. None of it is a secret: the push must land.
    let stream = push_content(opts.commits);
    let mut fi = git(&work).args(["fast-import", "--quiet"]).stdin(Stdio::piped()).spawn()?;
    std::io::Write::write_all(fi.stdin.as_mut().context("fast-import stdin")?, &stream)?;
    drop(fi.stdin.take());
    ensure!(fi.wait()?.success(), "git fast-import failed");
    let count = run_ok(git(&work).args(["rev-list", "--count", "main"]))?;
    eprintln!("history: {} commits", count.trim());

    let mut direct = Vec::new();
    let mut gated = Vec::new();
    let mut scan_ms = Vec::new();
    for r in 0..opts.runs {
        // Direct: push straight to a fresh upstream over ssh.
        let up_direct = t.join(format!("direct-{r}.git"));
        bare(&up_direct, &seed_dir)?;
        let started = Instant::now();
        run_ok(git(&work).env("GIT_SSH_COMMAND", &ssh_cmd).args([
            "push",
            "-q",
            &format!("ssh://root@127.0.0.1:{port}{}", up_direct.display()),
            "main",
        ]))?;
        direct.push(started.elapsed());

        // Through the gate: a fresh upstream and gate, then the same push over smart HTTP.
        let up_gate = t.join(format!("gated-{r}.git"));
        bare(&up_gate, &seed_dir)?;
        let cfg = t.join(format!("gate-{r}.json"));
        std::fs::write(
            &cfg,
            format!(
                r#"{{"version":1,"user":{{"name":"bench","email":"bench@bottle.invalid"}},"repos":[{{"name":"app","url":"ssh://root@127.0.0.1:{port}{}","identity_file":"{}","known_hosts_file":"{}"}}]}}"#,
                up_gate.display(),
                t.join("deploy_key").display(),
                t.join("known_hosts").display()
            ),
        )?;
        let mut child = Command::new(&gate_bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(t.join(format!("gate-data-{r}")))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting git-gate serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("gate stdout")?).read_line(&mut line)?;
        let gate = Proc(child);
        let addr = line.trim().strip_prefix("listening on ").context("gate readiness line")?.to_string();
        // Let the gate's mirror see the seed (a clone-time fetch), as an agent's clone would.
        run_ok(git(&work).args(["ls-remote", &format!("http://{addr}/app.git")]))?;
        let started = Instant::now();
        let out = run_ok(git(&work).args(["push", &format!("http://{addr}/app.git"), "main"]))?;
        gated.push(started.elapsed());
        drop(gate);
        let ms = out
            .lines()
            .find_map(|l| l.split("scanned ").nth(1))
            .and_then(|s| s.split(" in ").nth(1))
            .and_then(|s| s.split(" ms").next())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .with_context(|| format!("no `scanned N commits in X ms` line in the push output:\n{out}"))?;
        scan_ms.push(Duration::from_millis(ms));
        let landed = run_ok(git(&up_gate).args(["rev-list", "--count", "main"]))?;
        ensure!(landed.trim() == count.trim(), "gated push did not land fully upstream ({landed} commits)");
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (d, g, s) = (median(&mut direct), median(&mut gated), median(&mut scan_ms));
    let mut out = std::io::stdout().lock();
    writeln!(out, "push of {} commits, median of {} runs", opts.commits, opts.runs)?;
    writeln!(out, "{:<28}{:>10}", "direct (git push over ssh)", format!("{:.0} ms", d.as_secs_f64() * 1e3))?;
    writeln!(out, "{:<28}{:>10}", "through git-gate", format!("{:.0} ms", g.as_secs_f64() * 1e3))?;
    writeln!(out, "{:<28}{:>10}", "  of which scanning", format!("{:.0} ms", s.as_secs_f64() * 1e3))?;
    writeln!(out, "ratio gate/direct: {:.2}x (target <= 2x)", g.as_secs_f64() / d.as_secs_f64())?;
    writeln!(out, "scanning share of gate time: {:.0}%", 100.0 * s.as_secs_f64() / g.as_secs_f64())?;
    Ok(())
}
