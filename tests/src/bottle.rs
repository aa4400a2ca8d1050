//! Support for end-to-end tests of `bot-bottle start` on the real engine: a throwaway home with
//! a bottle and the scripted agent (its prompt is the bash script it runs), stand-in upstreams
//! the test owns and reads the records of (an HTTPS API, a real `sshd` git upstream, TCP and UDP
//! traps on the host), the real `bot-bottle` binary, and the "nothing left" check.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{PyStandIn, Sshd, bin_dir, git, host_gateway, must};

/// The env var holding the route's real token on the host.
pub const TOKEN_VAR: &str = "BOT_BOTTLE_E2E_TOKEN";
/// Prefix of every test token: the agent searches its filesystem for it (the prefix is no
/// secret; the whole value never reaches the agent, so only the host can check for that).
pub const TOKEN_PREFIX: &str = "tok-e2e-";

/// A credential-shaped value DLP must stop (a fake AWS key id, built at run time).
pub fn fake_secret() -> String {
    ["AKIA", "QYLPMN5HHHFDZAIK"].concat()
}

/// The HTTPS stand-in API (`tests/fixtures/upstream.py` on the host) answering for `api.test`,
/// `other.test` and `late.test`: 200 to everything, and its own record of every request.
pub fn stand_in(dir: &Path) -> PyStandIn {
    PyStandIn::start("upstream.py", dir, &["api.test", "other.test", "late.test"], &[])
}

/// A header of a recorded request.
pub fn header<'a>(req: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    req["headers"].as_array()?.iter().find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))?[1].as_str()
}

/// A TCP listener and a UDP socket on the host (all addresses) that count what reaches them.
pub struct Traps {
    pub tcp_port: u16,
    pub udp_port: u16,
    tcp_hits: Arc<AtomicUsize>,
    udp_hits: Arc<Mutex<Vec<String>>>,
}

impl Traps {
    pub fn start() -> Traps {
        let tcp = TcpListener::bind("0.0.0.0:0").unwrap();
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        let (tcp_port, udp_port) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
        let tcp_hits = Arc::new(AtomicUsize::new(0));
        let udp_hits = Arc::new(Mutex::new(Vec::new()));
        let hits = tcp_hits.clone();
        std::thread::spawn(move || {
            for s in tcp.incoming().flatten() {
                hits.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        let hits = udp_hits.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                hits.lock().unwrap().push(format!("{from}: {}", String::from_utf8_lossy(&buf[..n])));
            }
        });
        Traps { tcp_port, udp_port, tcp_hits, udp_hits }
    }

    pub fn tcp_hits(&self) -> usize {
        self.tcp_hits.load(Ordering::SeqCst)
    }

    pub fn udp_hits(&self) -> Vec<String> {
        self.udp_hits.lock().unwrap().clone()
    }
}

/// A git upstream over SSH: a real `sshd` on the Docker host gateway, a bare `app.git` with one
/// commit, and the deploy key the bottle's gate pushes with.
pub struct GitUpstream {
    _sshd: Sshd,
    /// The file sshd takes authorized keys from (re-read on every connection).
    pub authorized_keys: PathBuf,
    pub port: u16,
    pub repo: PathBuf,
    pub identity: PathBuf,
    pub host_key: String,
}

impl GitUpstream {
    pub fn start(dir: &Path, ip: &str) -> GitUpstream {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let identity = dir.join("keys/deploy");
        must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&identity));
        std::fs::copy(dir.join("keys/deploy.pub"), dir.join("authorized_keys")).unwrap();
        let (sshd, port) = Sshd::start(dir, ip);
        let repo = dir.join("srv/app.git");
        std::fs::create_dir_all(&repo).unwrap();
        must(git(&repo).args(["init", "-q", "--bare", "-b", "main"]));
        let seed = dir.join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        must(git(&seed).args(["init", "-q", "-b", "main"]));
        std::fs::write(seed.join("README.md"), "the app\n").unwrap();
        must(git(&seed).args(["add", "README.md"]));
        must(git(&seed).args(["commit", "-qm", "init"]));
        must(git(&seed).args(["push", "-q", repo.to_str().unwrap(), "main"]));
        GitUpstream {
            _sshd: sshd,
            authorized_keys: dir.join("authorized_keys"),
            port,
            repo,
            identity,
            host_key: Sshd::host_key(dir),
        }
    }

    /// `ssh://root@git.test:<port>/…/app.git`: `git.test` is pinned to the host gateway.
    pub fn url(&self) -> String {
        format!("ssh://root@git.test:{}{}", self.port, self.repo.display())
    }

    /// Every commit subject on `main`, newest first.
    pub fn log(&self) -> Vec<String> {
        let out = must(git(&self.repo).args(["log", "--format=%s", "main"]));
        String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
    }
}

/// A throwaway bot-bottle home holding the `e2e` bottle and the scripted agent.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub gateway: String,
    pub api: PyStandIn,
    pub traps: Traps,
    pub upstream: GitUpstream,
    pub token: String,
    /// The forge token bot-bottle gets (for provisioned keys).
    pub forge_token: String,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join("bottles")).unwrap();
        std::fs::create_dir_all(home.join("agents")).unwrap();
        let gateway = host_gateway();
        let api = stand_in(&tmp.path().join("api"));
        let traps = Traps::start();
        let upstream = GitUpstream::start(&tmp.path().join("git"), &gateway);
        let mut rnd = [0u8; 12];
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut rnd).unwrap();
        let token = format!("{TOKEN_PREFIX}{}", rnd.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let forge_token = format!("forge-e2e-{}", &token[TOKEN_PREFIX.len()..]);
        let w = World { tmp, home, gateway, api, traps, upstream, token, forge_token };
        w.write_bottle("e2e", "");
        std::fs::write(w.home.join("agents/scripted.md"), "---\nbottle: e2e\n---\n").unwrap();
        w
    }

    /// Writes bottle `name` (the standard one, plus `extra` YAML lines at the top level).
    pub fn write_bottle(&self, name: &str, extra: &str) {
        let repo = format!(
            "url: {url}\n      identity: {identity}\n      host_key: {host_key}",
            url = self.upstream.url(),
            identity = self.upstream.identity.display(),
            host_key = self.upstream.host_key,
        );
        self.write_bottle_with_repo(name, &repo, extra);
    }

    /// Writes bottle `name` with `repo` as the keys of its `app` repository.
    pub fn write_bottle_with_repo(&self, name: &str, repo: &str, extra: &str) {
        let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/agent/Dockerfile");
        let text = format!(
            "---\nhosts:\n  api.test: host-gateway\n  other.test: host-gateway\n  late.test: host-gateway\n  git.test: host-gateway\n\
             egress:\n  upstream_ca: {ca}\n  routes:\n    - host: api.test\n      port: {port}\n      auth: {{token_ref: {TOKEN_VAR}}}\n\
             git-gate:\n  repos:\n    app:\n      {repo}\n\
             agent_provider:\n  template: command\n  dockerfile: {dockerfile}\n  command: [bash, /etc/bot-bottle/prompt.md]\n{extra}---\n",
            ca = self.api.ca.display(),
            port = self.api.port,
            dockerfile = dockerfile.display(),
        );
        std::fs::write(self.home.join(format!("bottles/{name}.md")), text).unwrap();
    }

    /// `bot-bottle <args>` against this home, with the token in its environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("bot-bottle"));
        c.args(args)
            .env("BOT_BOTTLE_HOME", &self.home)
            .env("BOT_BOTTLE_BIN_DIR", bin_dir())
            .env(TOKEN_VAR, &self.token)
            .env(FORGE_TOKEN_VAR, &self.forge_token)
            .env("RUST_LOG", "warn")
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs the scripted agent headless with `script` as its prompt; waits for it.
    pub fn run(&self, script: &str, extra_args: &[&str]) -> Output {
        let mut args = vec!["start", "scripted", "--headless", "--prompt", script];
        args.extend_from_slice(extra_args);
        self.cmd(&args).output().unwrap()
    }

    /// Starts the scripted agent headless in the background (stdout and stderr piped).
    pub fn spawn(&self, script: &str, extra_args: &[&str]) -> Child {
        let mut args = vec!["start", "scripted", "--headless", "--prompt", script];
        args.extend_from_slice(extra_args);
        self.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    pub fn home_id(&self) -> String {
        orchestrator::plan::home_id(&self.home)
    }

    /// This home's containers and networks (by label), and its state and queue entries.
    pub fn leftovers(&self) -> Vec<String> {
        crate::leftovers(&self.home)
    }

    /// Answers the first pending request of `tool` in any queue of this home with `bot-bottle
    /// supervise answer`, waiting for it up to `timeout`. Returns the request.
    pub fn approve(&self, tool: &str, notes: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = must(&mut self.cmd(&["supervise", "list", "--json"]));
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if let Some(req) = list.as_array().and_then(|l| l.iter().find(|r| r["tool"] == tool)) {
                let id = req["id"].as_str().unwrap().to_string();
                must(&mut self.cmd(&["supervise", "answer", &id, "--approve", "--notes", notes]));
                return req.clone();
            }
            assert!(Instant::now() < deadline, "no {tool} request arrived: {list}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// The `CHECK <name> <value>` lines a scripted agent printed.
pub fn checks(stdout: &str) -> std::collections::BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CHECK "))
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.trim().to_string())))
        .collect()
}

/// Reads a child's piped stderr in the background, line by line, into a shared buffer.
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let b = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = b.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    buf
}

/// Bash the scripted agent's checks share: `check NAME VALUE` and `code URL…` (the HTTP status
/// of a request, or of the refused CONNECT, `000` when nothing answered).
pub const PRELUDE: &str = r#"set -u
check() { echo "CHECK $1 $2"; }
code() {
  local out
  out=$(curl -s -o /dev/null --max-time 15 -w '%{http_code} %{http_connect}' "$@" 2>/dev/null)
  set -- $out
  if [ "${1:-000}" != 000 ]; then echo "$1"; else echo "${2:-000}"; fi
}
"#;

/// The forge stand-in (`orchestrator::forge::standin`) on its own runtime, for a test that is
/// not async.
pub struct Forge {
    pub standin: orchestrator::forge::standin::StandIn,
    _rt: tokio::runtime::Runtime,
}

/// The host variable holding the forge token in these tests.
pub const FORGE_TOKEN_VAR: &str = "BOT_BOTTLE_E2E_FORGE";

impl Forge {
    pub fn start(token: &str) -> Forge {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let standin = rt.block_on(orchestrator::forge::standin::StandIn::start(token));
        Forge { standin, _rt: rt }
    }
}
