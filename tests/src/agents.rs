//! Support for end-to-end tests of the provider templates with the real agent CLIs: a stand-in
//! model provider (`fixtures/provider.py`: HTTPS for api.anthropic.com and api.openai.com on the
//! host's port 443, the documented streaming Messages and Responses APIs, its own record of
//! every request), a throwaway home whose bottle pins those names to the host and trusts the
//! stand-in's CA, and a look inside the running agent container.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{PyStandIn, bin_dir, docker};

/// The host variable holding the provider credential in these tests.
pub const KEY_VAR: &str = "BOT_BOTTLE_E2E_PROVIDER_KEY";

/// One stand-in on port 443 at a time (the CLIs call the providers' standard port).
static PORT_443: Mutex<()> = Mutex::new(());

/// The stand-in provider. Holds port 443 (and the lock on it) until dropped.
pub struct Provider {
    stand_in: PyStandIn,
    /// The file that releases held model requests (see `hold`).
    pub release: PathBuf,
    /// What the stand-in answers.
    pub answer: String,
    _port: MutexGuard<'static, ()>,
}

/// Its port, CA and record are the stand-in's.
impl std::ops::Deref for Provider {
    type Target = PyStandIn;
    fn deref(&self) -> &PyStandIn {
        &self.stand_in
    }
}

impl Provider {
    /// Starts the stand-in in `dir`; with `hold`, model requests wait for [`Provider::release`].
    /// It exits at once when port 443 is taken (the panic carries its error).
    pub fn start(dir: &Path, answer: &str, hold: bool) -> Provider {
        let guard = PORT_443.lock().unwrap_or_else(|e| e.into_inner());
        let release = dir.join("release");
        let release_arg = release.to_str().unwrap().to_string();
        let mut extra = vec!["--answer", answer];
        if hold {
            extra.extend(["--hold", release_arg.as_str()]);
        }
        let stand_in = PyStandIn::start("provider.py", dir, &["api.anthropic.com", "api.openai.com"], &extra);
        Provider { stand_in, release, answer: answer.to_string(), _port: guard }
    }

    /// Waits until a request for `path` arrived (the CLI is mid-turn when held).
    pub fn wait_for(&self, path: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.requests().iter().any(|r| r["path"].as_str().is_some_and(|p| p.starts_with(path))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Lets held model requests be answered.
    pub fn release(&self) {
        std::fs::write(&self.release, "").unwrap();
    }
}

/// A random credential of the given shape (prefix + hex), generated per test.
pub fn credential(prefix: &str) -> String {
    let mut rnd = [0u8; 24];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut rnd).unwrap();
    format!("{prefix}{}", rnd.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A throwaway home with one bottle, `agent`, running `template` against the stand-in.
pub struct Home {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub key: String,
}

impl Home {
    /// `extra` is more YAML at the top level of the bottle.
    pub fn new(template: &str, provider: &Provider, key: String, extra: &str) -> Home {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join("bottles")).unwrap();
        let text = format!(
            "---\nhosts:\n  api.anthropic.com: host-gateway\n  api.openai.com: host-gateway\n\
             egress:\n  log: 2\n  upstream_ca: {ca}\n\
             agent_provider:\n  template: {template}\n  auth_token: {KEY_VAR}\n{extra}---\n",
            ca = provider.ca.display(),
        );
        std::fs::write(home.join("bottles/agent.md"), text).unwrap();
        Home { tmp, home, key }
    }

    /// `bot-bottle <args>` against this home, with the credential in its environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("bot-bottle"));
        c.args(args)
            .env("BOT_BOTTLE_HOME", &self.home)
            .env("BOT_BOTTLE_BIN_DIR", bin_dir())
            .env(KEY_VAR, &self.key)
            .env("RUST_LOG", "warn")
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    /// `bot-bottle start --bottle agent --headless --prompt PROMPT`, in the background.
    pub fn spawn_headless(&self, prompt: &str) -> Child {
        self.cmd(&["start", "--bottle", "agent", "--label", "real-cli", "--headless", "--prompt", prompt])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn home_id(&self) -> String {
        orchestrator::plan::home_id(&self.home)
    }

    /// The running agent container's name, once there is one.
    pub fn agent_container(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let home = format!("label=bot-bottle.home={}", self.home_id());
        while Instant::now() < deadline {
            let out =
                docker(&["ps", "--filter", &home, "--filter", "label=bot-bottle.role=agent", "--format", "{{.Names}}"]);
            if let Some(name) = String::from_utf8_lossy(&out.stdout).lines().find(|l| !l.is_empty()) {
                return Some(name.to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Everything the agent can see that might hold a credential, read as the agent's user
    /// (uid 1000, the template images' `agent`) inside the running container: every process's environment and argv, the files under its writable
    /// and bot-bottle places, and the container's configuration as the engine holds it.
    pub fn agent_view(&self, container: &str) -> String {
        let script = "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ; tr '\\0' ' ' < $p/cmdline; echo; done 2>/dev/null; \
                      grep -rIa '' /home /tmp /var/tmp /etc/bot-bottle 2>/dev/null";
        let out = docker(&["exec", "-u", "1000:1000", container, "sh", "-c", script]);
        let inspect = docker(&["inspect", container]);
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&inspect.stdout))
    }

    /// This home's containers and networks (by label), and its state and queue entries.
    pub fn leftovers(&self) -> Vec<String> {
        crate::leftovers(&self.home)
    }

    /// The bottle's egress audit lines (kept in the home's audit.jsonl at teardown).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.home.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A provider template's agent image, built (once per test process) the way `bot-bottle start`
/// builds it; its ID.
pub fn template_image(template: orchestrator::manifest::types::Template) -> String {
    static IDS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let name = orchestrator::templates::name(template).to_string();
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, id)) = ids.iter().find(|(n, _)| *n == name) {
        return id.clone();
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let id = rt
        .block_on(async {
            let engine = orchestrator::engine::docker::DockerEngine::connect().await?;
            orchestrator::templates::image::ensure(&engine, template, &|line: String| eprintln!("{line}")).await
        })
        .unwrap_or_else(|e| panic!("building the {name} template image: {e:#}"));
    ids.push((name, id.clone()));
    id
}

/// The runtime matrix's stand-in (`fixtures/files.py`): a text file, a package index, an npm
/// registry and a git repository over HTTPS for `files.test`, on a free port.
pub struct Files {
    stand_in: PyStandIn,
}

/// Its port and CA are the stand-in's.
impl std::ops::Deref for Files {
    type Target = PyStandIn;
    fn deref(&self) -> &PyStandIn {
        &self.stand_in
    }
}

impl Files {
    pub fn start(dir: &Path) -> Files {
        let root = dir.join("root");
        let root = root.to_str().unwrap();
        Files {
            stand_in: PyStandIn::start("files.py", dir, &["files.test"], &["--root", root, "--host", "files.test"]),
        }
    }

    /// The paths requested so far.
    pub fn paths(&self) -> Vec<String> {
        self.requests().iter().filter_map(|v| v["path"].as_str().map(String::from)).collect()
    }
}
