//! `bot-bottle start`: manifests → plan → (`--dry-run`: print it) → launch → the agent →
//! teardown. Teardown runs however the launch ends: the agent exits, a step fails, or a signal
//! (Ctrl-C, SIGTERM, SIGHUP) arrives; every teardown error is reported.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use std::path::Path;

use crate::agent::AgentRuntime;
use crate::agent::docker::DockerRuntime;
use crate::agent::smolvm::SmolvmRuntime;
use crate::cli::{BackendArg, Format, StartArgs};
use crate::engine::docker::DockerEngine;
use crate::engine::{EngineError, ExecIo};
use crate::home::Home;
use crate::launch::{self, Launch, Secrets, Sidecar, Timings};
use crate::manifest::{self, Search};
use crate::plan::{self, Backend, BottlePlan, Options};
use crate::vmm::Vmm;
use crate::vmm::smolvm::SmolvmCli;

/// How many times a launch re-plans when another bottle took its subnet first.
const SUBNET_ATTEMPTS: usize = 4;

pub async fn run(args: StartArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let search = Search { home, cwd: &cwd };
    let request = manifest::Request { agent: args.agent.clone(), bottles: args.bottles.clone() };
    let (resolved, warnings) = manifest::load(&search, &request)?;
    for w in &warnings {
        say(&format!("warning: {w}"));
    }
    let smolvm = SmolvmCli::find();
    let backend = match args.backend {
        BackendArg::Docker => Backend::Docker,
        BackendArg::Smolvm => Backend::Smolvm,
        // smolvm where a microVM really boots (found by trying, once), Docker elsewhere.
        BackendArg::Auto => match &smolvm {
            Some(vmm) if crate::vmm::boot::probe(vmm, &home.cache_dir()).await.boots => Backend::Smolvm,
            _ => Backend::Docker,
        },
    };
    let vmm: Option<&dyn Vmm> = match (backend, &smolvm) {
        (Backend::Smolvm, None) => {
            return Err(common::daemon::UsageError(format!(
                "--backend smolvm needs the smolvm CLI: pip install smolmachines, or set ${} to it",
                crate::vmm::smolvm::BIN_ENV
            ))
            .into());
        }
        (Backend::Smolvm, Some(v)) => Some(v),
        (Backend::Docker, _) => None,
    };
    let opts = Options {
        label: args.label.clone(),
        backend: Some(backend),
        headless: args.headless,
        prompt: args.prompt.clone(),
        smolvm_state_dir: smolvm.as_ref().and_then(|v| v.state_dir().map(Path::to_path_buf)),
    };
    let sidecar = Sidecar {
        bin_dir: match &args.bin_dir {
            Some(d) => d.clone(),
            None => crate::image::default_bin_dir()?,
        },
        base_image: args.base_image.clone(),
        cache_dir: home.cache_dir(),
    };
    let engine = DockerEngine::connect().await?;
    let nonce = launch::facts::nonce()?;

    if args.dry_run {
        let facts = launch::facts::gather(&engine, home.root(), &sidecar, nonce, backend).await?;
        let plan = plan::plan(&resolved, &facts, &opts)?;
        let out = match args.format {
            Format::Text => plan::text(&plan),
            Format::Json => serde_json::to_string_pretty(&plan).expect("a plan serializes") + "\n",
        };
        print(&out);
        return Ok(ExitCode::SUCCESS);
    }
    if !args.headless && !std::io::stdin().is_terminal() {
        return Err(common::daemon::UsageError(
            "an interactive bottle needs a terminal; without one, use --headless --prompt TEXT".into(),
        )
        .into());
    }

    let timings = Timings::new(args.timings);
    let started = Instant::now();
    let mut signals = Signals::install()?;
    for attempt in 1..=SUBNET_ATTEMPTS {
        // Loopback addresses are chosen from what the home's bottles record: hold the lock
        // until this bottle's record (plan.json) is written.
        let lock = LoopbackLock::take(home, backend)?;
        let facts = launch::facts::gather(&engine, home.root(), &sidecar, nonce.clone(), backend).await?;
        let plan = plan::plan(&resolved, &facts, &opts)?;
        let host = |k: &str| std::env::var(k).ok();
        let secrets = Secrets::gather(&plan, &resolved, &host, &launch::secrets::ask_terminal)?;
        let docker_runtime;
        let vm_runtime;
        let runtime: &dyn AgentRuntime = match (backend, vmm) {
            (Backend::Smolvm, Some(vmm)) => {
                vm_runtime = SmolvmRuntime::new(&engine, vmm, home.cache_dir());
                &vm_runtime
            }
            _ => {
                docker_runtime = DockerRuntime::new(&engine, home.cache_dir());
                &docker_runtime
            }
        };
        let progress = |line: String| say(&line);
        let l =
            Launch { engine: &engine, runtime, plan: &plan, timings: &timings, progress: &progress, euid: facts.uid };
        let state_start = Instant::now();
        let ledger = launch::begin(&plan, &facts.owner, &facts.now, &secrets, facts.uid);
        timings.record("state", state_start.elapsed());
        drop(lock);
        let ledger = match ledger {
            Ok(l) => l,
            Err(e) => {
                // Whatever `begin` made before failing is in its directories; remove them.
                let _ = std::fs::remove_dir_all(&plan.state_dir);
                let _ = std::fs::remove_dir_all(&plan.queue_dir);
                return Err(e);
            }
        };
        let outcome = tokio::select! {
            r = up_and_run(&l, &ledger, &secrets, &sidecar, &plan, started) => Outcome::Finished(r),
            sig = signals.next() => Outcome::Signal(sig),
        };
        let tokens =
            |var: &str| secrets.forge_token(var).cloned().or_else(|| std::env::var(var).ok().map(common::Secret::new));
        let errors = launch::teardown(&engine, vmm, &tokens, &plan.slug, &ledger.entries(), &timings).await;
        report_teardown(&plan, &errors);
        let failed_teardown = !errors.is_empty();
        match outcome {
            Outcome::Signal((name, code)) => {
                say(&format!("{name}: bottle {} torn down", plan.slug));
                return Ok(ExitCode::from(code));
            }
            Outcome::Finished(Err(EngineError::SubnetTaken(subnet))) if attempt < SUBNET_ATTEMPTS => {
                say(&format!("subnet {subnet} was taken by another bottle meanwhile; planning again"));
                continue;
            }
            Outcome::Finished(Err(e)) => {
                return Err(anyhow::Error::new(e).context(format!("launching bottle {}", plan.slug)));
            }
            Outcome::Finished(Ok(code)) => {
                if failed_teardown && code == 0 {
                    return Ok(ExitCode::FAILURE);
                }
                return Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)));
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// An exclusive lock on the home's `.loopback.lock` (smolvm launches only), released on
/// drop.
struct LoopbackLock {
    _held: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl LoopbackLock {
    fn take(home: &Home, backend: Backend) -> anyhow::Result<LoopbackLock> {
        if backend != Backend::Smolvm {
            return Ok(LoopbackLock { _held: None });
        }
        let dir = home.root();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(".loopback.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))?;
        Ok(LoopbackLock { _held: Some(lock) })
    }
}

enum Outcome {
    Finished(Result<i64, EngineError>),
    Signal((&'static str, u8)),
}

async fn up_and_run(
    l: &Launch<'_>,
    ledger: &launch::ledger::Ledger,
    secrets: &Secrets,
    sidecar: &Sidecar,
    plan: &BottlePlan,
    started: Instant,
) -> Result<i64, EngineError> {
    let ready = launch::up(l, ledger, secrets, sidecar).await?;
    let io = if plan.agent.interactive { ExecIo::Terminal } else { ExecIo::Inherit };
    say(&format!(
        "bottle {} ready in {:.2} s ({}); the agent's only way out is its bundle",
        plan.slug,
        started.elapsed().as_secs_f64(),
        if plan.agent.interactive { "your terminal is the agent's" } else { "headless" }
    ));
    Ok(launch::run(l, &ready, io).await?)
}

fn report_teardown(plan: &BottlePlan, errors: &[String]) {
    if errors.is_empty() {
        return;
    }
    say(&format!("teardown of bottle {} left {} problem(s); `bot-bottle cleanup` retries:", plan.slug, errors.len()));
    for e in errors {
        say(&format!("  {e}"));
    }
}

/// A status line of bot-bottle's own (stderr; the agent owns stdout).
pub(crate) fn say(line: &str) {
    eprintln!("bot-bottle: {line}");
}

fn print(s: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(s.as_bytes());
}

/// SIGINT, SIGTERM and SIGHUP, installed before the launch starts, so none of them can kill
/// bot-bottle before it has torn down what it made.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The first signal: its name and the exit code it means (128 + number).
    async fn next(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 130),
            _ = self.term.recv() => ("SIGTERM", 143),
            _ = self.hup.recv() => ("SIGHUP", 129),
        }
    }
}
