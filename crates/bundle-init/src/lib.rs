//! bundle-init: PID 1 of the sidecar bundle.
//!
//! Starts the daemons named in `BUNDLE_DAEMONS` (CSV of `egress,git-gate,supervise`, default all)
//! with their in-bundle flags, prefixes every line they print with `[name] `, forwards
//! SIGTERM/SIGINT (and SIGHUP, which makes egress-proxy reload) to them, SIGKILLs what is still
//! running 8 s after a stop signal, restarts a daemon that dies with exponential backoff, and
//! gives up — stopping the rest and exiting 1 — when one keeps dying. It also reaps orphaned
//! grandchildren (git and ssh processes), as a PID 1 must.
//!
//! Exit codes: 0 after a stop signal when every daemon exited within the grace period; 1 when a
//! daemon keeps dying or had to be SIGKILLed; 64 for a bad `BUNDLE_DAEMONS` or when a daemon
//! reports bad configuration (its own exit 64: restarting cannot fix that).
//!
//! This is a small synchronous loop over `waitpid(-1)` rather than tokio's process API, because
//! a PID 1 must reap children it never spawned, and that would steal tokio's exit statuses.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::consts::{DAEMONS, env, path, port};
use common::daemon::UsageError;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// One daemon to run: its `BUNDLE_DAEMONS` name and its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub argv: Vec<String>,
}

/// Restart and stop timing.
#[derive(Debug, Clone)]
pub struct Policy {
    /// After a stop signal, how long before SIGKILL.
    pub grace: Duration,
    /// First restart delay; doubles on each consecutive crash up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A daemon that ran at least this long counts as healthy again: its backoff resets.
    pub stable_after: Duration,
    /// More than this many restarts of one daemon within `window` ends the bundle.
    pub max_restarts: usize,
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace: Duration::from_secs(8),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// The default policy with `BUNDLE_GRACE_SECS` applied.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Policy, UsageError> {
        let mut p = Policy::default();
        if let Some(v) = get(env::BUNDLE_GRACE_SECS) {
            let secs: u64 = v.trim().parse().map_err(|_| {
                UsageError(format!("{}={v:?} is not a whole number of seconds", env::BUNDLE_GRACE_SECS))
            })?;
            p.grace = Duration::from_secs(secs);
        }
        Ok(p)
    }
}

/// What bundle-init found in the container that shapes the daemons' command lines.
#[derive(Debug, Clone, Default)]
pub struct Surroundings {
    /// `BOT_BOTTLE_BOTTLE`: the bottle's slug; adds the queue flags.
    pub bottle: Option<String>,
    /// `routes.json` is mounted: supervise gets `--routes` so `list_egress_routes` works.
    pub routes_mounted: bool,
}

/// The in-bundle command line of each daemon (docs/interfaces.md: paths and ports).
fn default_argv(name: &str, bin_dir: &Path, around: &Surroundings) -> Vec<String> {
    let bin = |b: &str| bin_dir.join(b).display().to_string();
    let mut argv: Vec<String> = match name {
        "egress" => vec![
            bin("egress-proxy"),
            "--listen".into(),
            format!("0.0.0.0:{}", port::EGRESS),
            "--routes".into(),
            path::ROUTES_FILE.into(),
            "--ca-cert".into(),
            path::CA_CERT.into(),
            "--ca-key".into(),
            path::CA_KEY.into(),
        ],
        "git-gate" => vec![
            bin("git-gate"),
            "serve".into(),
            "--listen".into(),
            format!("0.0.0.0:{}", port::GIT_GATE),
            "--config".into(),
            path::GIT_GATE_CONFIG.into(),
            "--data-dir".into(),
            path::GIT_GATE_DATA.into(),
        ],
        "supervise" => vec![
            bin("supervise"),
            "--listen".into(),
            format!("0.0.0.0:{}", port::SUPERVISE),
            "--queue-dir".into(),
            path::QUEUE_DIR.into(),
        ],
        _ => unreachable!("names are checked against DAEMONS first"),
    };
    if name == "supervise" && around.routes_mounted {
        argv.extend(["--routes".into(), path::ROUTES_FILE.into()]);
    }
    if let Some(slug) = &around.bottle {
        if name != "supervise" {
            argv.extend(["--supervise-queue".into(), path::QUEUE_DIR.into()]);
        }
        argv.extend(["--bottle".into(), slug.to_string()]);
    }
    argv
}

/// Works out what to run from the environment: `BUNDLE_DAEMONS`, `BOT_BOTTLE_BOTTLE`, and the
/// `BUNDLE_CMD_<NAME>` overrides (a command line split like a shell would, never run by one).
/// `routes_mounted` says whether `routes.json` exists in the container.
pub fn specs_from_env(
    get: &dyn Fn(&str) -> Option<String>,
    bin_dir: &Path,
    routes_mounted: bool,
) -> Result<Vec<Spec>, UsageError> {
    let list = get(env::BUNDLE_DAEMONS).unwrap_or_else(|| DAEMONS.map(|(n, _)| n).join(","));
    let around = Surroundings { bottle: get(env::BOTTLE).filter(|s| !s.is_empty()), routes_mounted };
    let mut specs: Vec<Spec> = Vec::new();
    for raw in list.split(',') {
        let name = raw.trim();
        if name.is_empty() {
            continue;
        }
        if !DAEMONS.iter().any(|(n, _)| *n == name) {
            let known = DAEMONS.map(|(n, _)| n).join(", ");
            return Err(UsageError(format!("{}: unknown daemon {name:?} (known: {known})", env::BUNDLE_DAEMONS)));
        }
        if specs.iter().any(|s| s.name == name) {
            return Err(UsageError(format!("{}: {name:?} is listed twice", env::BUNDLE_DAEMONS)));
        }
        let var = format!("{}{}", env::BUNDLE_CMD_PREFIX, name.to_ascii_uppercase().replace('-', "_"));
        let argv = match get(&var) {
            Some(cmd) => {
                let argv = shell_words::split(&cmd).map_err(|e| UsageError(format!("{var}: {e}")))?;
                if argv.is_empty() {
                    return Err(UsageError(format!("{var} is empty")));
                }
                argv
            }
            None => default_argv(name, bin_dir, &around),
        };
        specs.push(Spec { name: name.to_string(), argv });
    }
    if specs.is_empty() {
        return Err(UsageError(format!("{} names no daemon", env::BUNDLE_DAEMONS)));
    }
    Ok(specs)
}

/// Writes a line from bundle-init itself (stderr, prefixed like the daemons' lines).
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "[bundle-init] {msg}");
}

/// How long bundle-init, its daemons gone, waits for the rest of their output: a pipe stays
/// open while anything a daemon started still holds it.
const DRAIN: Duration = Duration::from_secs(1);

/// Copies `from` to `to` line by line, each prefixed with `[name] `, until `from` ends.
fn forward_lines(name: String, from: impl Read + Send + 'static, to: fn() -> Box<dyn Write>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let prefix = format!("[{name}] ");
        let mut line = Vec::new();
        loop {
            // The prefix goes into the same buffer as the line: one write, so a line from
            // bundle-init itself (or another daemon) can never land between the two.
            line.clear();
            line.extend_from_slice(prefix.as_bytes());
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    let mut out = to();
                    let _ = out.write_all(&line);
                    let _ = out.flush();
                }
            }
        }
    })
}

/// Waits, up to `within` in all, for the forwarding threads to copy what is left in their
/// pipes: a daemon's last lines (`got TERM`, a final error) are written just before it exits,
/// and bundle-init exiting first would lose them.
fn drain(forwarders: Vec<JoinHandle<()>>, within: Duration) {
    let deadline = Instant::now() + within;
    for f in forwarders {
        while !f.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if f.is_finished() {
            let _ = f.join();
        }
    }
}

struct Daemon {
    spec: Spec,
    pid: Option<Pid>,
    started: Instant,
    next_start: Option<Instant>,
    backoff: Duration,
    restarts: VecDeque<Instant>,
    /// Already sent its stop signal (sent once per run of the daemon).
    signalled: bool,
}

fn spawn(spec: &Spec, forwarders: &mut Vec<JoinHandle<()>>) -> std::io::Result<Pid> {
    // PID 1 reaps every child with waitpid(-1); a child from common::proc (tokio) would have its
    // exit status stolen by that loop.
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new(&spec.argv[0])
        .args(&spec.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(out) = child.stdout.take() {
        forwarders.push(forward_lines(spec.name.clone(), out, || Box::new(std::io::stdout())));
    }
    if let Some(err) = child.stderr.take() {
        forwarders.push(forward_lines(spec.name.clone(), err, || Box::new(std::io::stderr())));
    }
    // The child is reaped by the waitpid(-1) loop, never through `Child`.
    Ok(Pid::from_raw(child.id() as i32))
}

fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
        other => format!("{other:?}"),
    }
}

/// Runs the daemons until a stop signal, or until one keeps dying. Returns the exit code.
pub fn run(specs: Vec<Spec>, policy: Policy) -> u8 {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
    // Orphaned grandchildren (git, ssh) are re-parented to us even when we are not PID 1.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD]) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("cannot install signal handlers: {e}"));
            return 1;
        }
    };
    let now = Instant::now();
    let mut daemons: Vec<Daemon> = specs
        .into_iter()
        .map(|spec| Daemon {
            spec,
            pid: None,
            started: now,
            next_start: Some(now),
            backoff: policy.backoff_initial,
            restarts: VecDeque::new(),
            signalled: false,
        })
        .collect();
    let mut stopping: Option<(Instant, u8)> = None; // (deadline for SIGKILL, exit code)
    let mut killed = false;
    // The threads copying the daemons' output (those of earlier runs too, until they end).
    let mut forwarders: Vec<JoinHandle<()>> = Vec::new();

    loop {
        let now = Instant::now();
        // 1. Signals.
        for sig in signals.pending() {
            match sig {
                SIGTERM | SIGINT if stopping.is_none() => {
                    let signal = if sig == SIGTERM { Signal::SIGTERM } else { Signal::SIGINT };
                    say(&format!("{signal} received, stopping the daemons"));
                    stop_all(&mut daemons, signal);
                    stopping = Some((now + policy.grace, 0));
                }
                SIGHUP => {
                    for d in &daemons {
                        if let Some(pid) = d.pid {
                            let _ = kill(pid, Signal::SIGHUP);
                        }
                    }
                }
                _ => {}
            }
        }
        // 2. Reap everything that exited, ours or orphans.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { break };
                    let Some(d) = daemons.iter_mut().find(|d| d.pid == Some(pid)) else { continue };
                    d.pid = None;
                    if stopping.is_some() {
                        say(&format!("{} {}", d.spec.name, describe(&status)));
                        continue;
                    }
                    if let WaitStatus::Exited(_, code) = status
                        && i32::from(common::daemon::EXIT_USAGE) == code
                    {
                        say(&format!(
                            "{} {} (bad configuration; restarting cannot fix it), stopping the bundle",
                            d.spec.name,
                            describe(&status)
                        ));
                        stopping = Some((now + policy.grace, common::daemon::EXIT_USAGE));
                        break;
                    }
                    if now.duration_since(d.started) >= policy.stable_after {
                        d.backoff = policy.backoff_initial;
                    }
                    while d.restarts.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
                        d.restarts.pop_front();
                    }
                    if d.restarts.len() >= policy.max_restarts {
                        say(&format!(
                            "{} {}; it died {} times within {:?}, giving up and stopping the bundle",
                            d.spec.name,
                            describe(&status),
                            d.restarts.len() + 1,
                            policy.window
                        ));
                        stopping = Some((now + policy.grace, 1));
                        break;
                    }
                    say(&format!("{} {}; restarting in {:?}", d.spec.name, describe(&status), d.backoff));
                    d.restarts.push_back(now);
                    d.next_start = Some(now + d.backoff);
                    d.backoff = (d.backoff * 2).min(policy.backoff_max);
                }
            }
        }
        if let Some((deadline, code)) = stopping {
            // A stop decided during reaping (give-up, exit 64) still has live daemons to signal.
            for d in &mut daemons {
                d.next_start = None;
            }
            if daemons.iter().any(|d| d.pid.is_some()) {
                stop_all(&mut daemons, Signal::SIGTERM);
            }
            if daemons.iter().all(|d| d.pid.is_none()) {
                drain(forwarders, DRAIN);
                return if killed { 1 } else { code };
            }
            if now >= deadline && !killed {
                for d in &daemons {
                    if let Some(pid) = d.pid {
                        say(&format!("{} still running after {:?}, sending SIGKILL", d.spec.name, policy.grace));
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                }
                killed = true;
            }
        } else {
            // 3. (Re)start what is due.
            for d in &mut daemons {
                if d.pid.is_none() && d.next_start.is_some_and(|t| t <= now) {
                    d.next_start = None;
                    d.started = now;
                    forwarders.retain(|f| !f.is_finished());
                    match spawn(&d.spec, &mut forwarders) {
                        Ok(pid) => {
                            say(&format!("started {} (pid {pid})", d.spec.name));
                            d.pid = Some(pid);
                            d.signalled = false;
                        }
                        Err(e) => {
                            say(&format!("cannot start {} ({}): {e}", d.spec.name, d.spec.argv[0]));
                            stopping = Some((now + policy.grace, 1));
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to every running daemon that has not had its stop signal yet.
fn stop_all(daemons: &mut [Daemon], signal: Signal) {
    for d in daemons.iter_mut() {
        if let Some(pid) = d.pid
            && !d.signalled
        {
            let _ = kill(pid, signal);
            d.signalled = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn default_is_all_three_with_contract_flags() {
        let specs = specs_from_env(&env_of(&[]), Path::new("/usr/local/bin"), false).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["egress", "git-gate", "supervise"]);
        assert_eq!(
            specs[0].argv.join(" "),
            "/usr/local/bin/egress-proxy --listen 0.0.0.0:9099 --routes /etc/bot-bottle/egress/routes.json \
             --ca-cert /etc/bot-bottle/ca/ca.crt --ca-key /etc/bot-bottle/ca/ca.key"
        );
        assert_eq!(
            specs[1].argv.join(" "),
            "/usr/local/bin/git-gate serve --listen 0.0.0.0:9420 --config /etc/bot-bottle/git-gate/config.json \
             --data-dir /var/lib/git-gate"
        );
        assert_eq!(
            specs[2].argv.join(" "),
            "/usr/local/bin/supervise --listen 0.0.0.0:9100 --queue-dir /run/bot-bottle/queue"
        );
    }

    #[test]
    fn bottle_adds_queue_flags() {
        let specs = specs_from_env(
            &env_of(&[("BUNDLE_DAEMONS", "supervise, egress"), ("BOT_BOTTLE_BOTTLE", "b1")]),
            Path::new("/b"),
            true,
        )
        .unwrap();
        assert!(
            specs[0]
                .argv
                .join(" ")
                .ends_with("--queue-dir /run/bot-bottle/queue --routes /etc/bot-bottle/egress/routes.json --bottle b1")
        );
        assert!(specs[1].argv.join(" ").ends_with("--supervise-queue /run/bot-bottle/queue --bottle b1"));
    }

    #[test]
    fn overrides_and_bad_lists() {
        let specs = specs_from_env(
            &env_of(&[("BUNDLE_DAEMONS", "git-gate"), ("BUNDLE_CMD_GIT_GATE", "sh -c 'echo hi'")]),
            Path::new("/b"),
            false,
        )
        .unwrap();
        assert_eq!(specs[0].argv, ["sh", "-c", "echo hi"]);
        for (list, frag) in
            [("egress,dns", "unknown daemon \"dns\""), ("egress,egress", "twice"), (" , ", "names no daemon")]
        {
            let err = specs_from_env(&env_of(&[("BUNDLE_DAEMONS", list)]), Path::new("/b"), false).unwrap_err();
            assert!(err.0.contains(frag), "{list}: {err}");
        }
        let err = specs_from_env(&env_of(&[("BUNDLE_CMD_EGRESS", "sh -c 'unterminated")]), Path::new("/b"), false)
            .unwrap_err();
        assert!(err.0.contains("BUNDLE_CMD_EGRESS"), "{err}");
        let err = Policy::from_env(&env_of(&[("BUNDLE_GRACE_SECS", "soon")])).unwrap_err();
        assert!(err.0.contains("BUNDLE_GRACE_SECS"), "{err}");
    }
}
