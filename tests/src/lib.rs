//! Support for tests that run the real sidecar image on a real Docker engine.
//!
//! - [`docker_available`]: whether an engine answers. A test returns early (printing why) when
//!   none does, except under `BOT_BOTTLE_REQUIRE_DOCKER=1` (CI sets it), where that is a failure.
//! - [`sidecar_image`]: builds the image once per test process from the binaries cargo built
//!   beside the test executable (`cargo build --workspace --bins` first; `.ci/run` does).
//! - [`Container`]: `docker run -d`, with helpers to read logs, publish ports, exec and stop;
//!   removed on drop.

// Tests drive real programs (git, curl, docker, sshd, the binaries under test) directly.
#![allow(clippy::disallowed_methods)]

pub mod agents;
pub mod bottle;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Label on every container the tests start, so strays can be found: `docker ps -af label=bot-bottle-test`.
pub const TEST_LABEL: &str = "bot-bottle-test=1";
/// The uid:gid the sidecar image runs as.
pub const BUNDLE_UID: u32 = 10001;

/// `docker <args>`, whatever its status.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap_or_else(|e| panic!("running docker {args:?}: {e}"))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// True when a Docker engine answers. Panics instead of returning false when
/// `BOT_BOTTLE_REQUIRE_DOCKER=1`, so CI can never skip the image tests silently.
pub fn docker_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let ok = *AVAILABLE.get_or_init(|| Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()));
    if !ok {
        assert!(
            std::env::var("BOT_BOTTLE_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "BOT_BOTTLE_REQUIRE_DOCKER=1 but no Docker engine answers (scripts/dockerd-up starts one)"
        );
        eprintln!("skipped: no Docker engine answers (scripts/dockerd-up starts one)");
    }
    ok
}

/// The real smolvm CLI (`$BOT_BOTTLE_SMOLVM`, with `SMOLVM_LIB_DIR`/`SMOLVM_AGENT_ROOTFS` set as
/// the `smolmachines` wheel needs; `.ci/run` installs it into a venv of its own). `None` (the
/// test returns early) when unset, except under `BOT_BOTTLE_REQUIRE_SMOLVM=1` (CI), where that
/// is a failure.
pub fn smolvm() -> Option<PathBuf> {
    let bin = std::env::var_os("BOT_BOTTLE_SMOLVM").filter(|v| !v.is_empty()).map(PathBuf::from);
    if bin.is_none() {
        assert!(
            std::env::var("BOT_BOTTLE_REQUIRE_SMOLVM").as_deref() != Ok("1"),
            "BOT_BOTTLE_REQUIRE_SMOLVM=1 but BOT_BOTTLE_SMOLVM is not set (.ci/run sets it)"
        );
        eprintln!("skipped: BOT_BOTTLE_SMOLVM is not set (scripts/venv smolvm 3.11 smolmachines installs it)");
    }
    bin
}

/// Where cargo put the workspace binaries for this build: the test executable lives in
/// `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory").to_path_buf();
    for b in orchestrator::image::BINARIES {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run `cargo build --workspace --bins` before these tests (.ci/run does)",
            dir.join(b).display()
        );
    }
    dir
}

/// The sidecar image built from this build's binaries (once per test process).
pub fn sidecar_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let dir = bin_dir();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let built = rt
            .block_on(async {
                let engine = orchestrator::engine::docker::DockerEngine::connect().await?;
                orchestrator::image::ensure(
                    &engine,
                    &dir,
                    orchestrator::image::DEFAULT_BASE_IMAGE,
                    None,
                    &mut |line: String| eprintln!("  {line}"),
                )
                .await
            })
            .unwrap_or_else(|e| panic!("building the sidecar image: {e:#}"));
        built.tag
    })
    .clone()
}

/// Runs the `openssl` CLI, failing the test with its stderr.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh P-256 CA (`name`.crt/.key) in `dir`, as the orchestrator mints a bottle's.
pub fn make_ca(dir: &Path, name: &str) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]);
}

/// A leaf certificate in `dir` (`leaf.crt`, `leaf.key`) for `names`, signed by the CA `ca`
/// made there by [`make_ca`]; returns (certificate, key).
pub fn make_leaf(dir: &Path, ca: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let (key, csr, crt, ext) = (dir.join("leaf.key"), dir.join("leaf.csr"), dir.join("leaf.crt"), dir.join("ext"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let subject = format!("/CN={}", names[0]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &subject,
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ]);
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(&ext, format!("subjectAltName={}\n", sans.join(","))).unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&dir.join(format!("{ca}.crt"))),
        "-CAkey",
        &s(&dir.join(format!("{ca}.key"))),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&crt),
    ]);
    (crt, key)
}

/// A Python HTTPS stand-in from `tests/fixtures/` (they share `fixtures/standin.py`): a fresh CA
/// and a leaf certificate for `names` in `dir`, the script started with `--cert --key --record
/// --ready` and `extra`, returned once it announced its port. Its `requests()` is the
/// upstream's own record. Killed on drop.
pub struct PyStandIn {
    child: Child,
    pub port: u16,
    record: PathBuf,
    /// The CA its certificate chains to (a bottle's `egress.upstream_ca`).
    pub ca: PathBuf,
}

impl PyStandIn {
    pub fn start(script: &str, dir: &Path, names: &[&str], extra: &[&str]) -> PyStandIn {
        std::fs::create_dir_all(dir).unwrap();
        make_ca(dir, "stand-in-ca");
        let (crt, key) = make_leaf(dir, "stand-in-ca", names);
        let (record, ready) = (dir.join("record.jsonl"), dir.join("port"));
        std::fs::write(&record, "").unwrap();
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(script))
            .arg("--cert")
            .arg(&crt)
            .arg("--key")
            .arg(&key)
            .arg("--record")
            .arg(&record)
            .arg("--ready")
            .arg(&ready)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting python3 tests/fixtures/{script}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&ready) {
                break p.trim().parse().unwrap();
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!("tests/fixtures/{script} exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "tests/fixtures/{script} did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        PyStandIn { child, port, record, ca: dir.join("stand-in-ca.crt") }
    }

    /// Every request received so far, as the stand-in recorded it.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for PyStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a bot-bottle home left: its containers and networks (by the `bot-bottle.home` label)
/// and its state and queue entries. Empty after a clean teardown.
pub fn leftovers(home: &Path) -> Vec<String> {
    let label = format!("label=bot-bottle.home={}", orchestrator::plan::home_id(home));
    let mut out: Vec<String> = Vec::new();
    for args in [
        vec!["ps", "-a", "--filter", label.as_str(), "--format", "container {{.Names}}"],
        vec!["network", "ls", "--filter", label.as_str(), "--format", "network {{.Name}}"],
    ] {
        let o = docker(&args);
        out.extend(String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.is_empty()).map(String::from));
    }
    for dir in ["state", "queue"] {
        if let Ok(rd) = std::fs::read_dir(home.join(dir)) {
            out.extend(rd.flatten().map(|e| format!("{dir}/{}", e.file_name().to_string_lossy())));
        }
    }
    out
}

/// Makes `path` (and everything below it) owned by the bundle's uid, for rw bind mounts.
pub fn chown_for_bundle(path: &Path) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{BUNDLE_UID}:{BUNDLE_UID}"))
        .arg(path)
        .status()
        .expect("running chown");
    assert!(status.success(), "chown {}", path.display());
}

/// A container started by a test; force-removed on drop.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d --label bot-bottle-test=1 <args>`; `args` ends with the image (and command).
    pub fn run(args: &[&str]) -> Container {
        let mut all = vec!["run", "-d", "--label", TEST_LABEL];
        all.extend_from_slice(args);
        Container { id: docker_ok(&all) }
    }

    /// The container's IP on its first network.
    pub fn ip(&self) -> String {
        docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", &self.id])
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// The host address a container port was published on (`-p 127.0.0.1::PORT`).
    pub fn host_port(&self, port: u16) -> SocketAddr {
        let out = docker_ok(&["port", &self.id, &format!("{port}/tcp")]);
        let line = out
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("port {port} not published: {out}"));
        line.parse().unwrap()
    }

    /// stdout and stderr so far (interleaved per stream, stdout first).
    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.id]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Waits (bounded, 60 s) until the logs contain `needle`; panics with the logs otherwise.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return;
            }
            if !self.running() {
                panic!("container exited before logging {needle:?}:\n{logs}");
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the container logs:\n{logs}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn running(&self) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.id]).stdout.starts_with(b"true")
    }

    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut all = vec!["exec", self.id.as_str()];
        all.extend_from_slice(cmd);
        docker(&all)
    }

    /// Sends a signal to the container's PID 1 (`docker kill -s`).
    pub fn signal(&self, signal: &str) {
        docker_ok(&["kill", "-s", signal, &self.id]);
    }

    /// Waits (bounded) for the container to exit and returns its exit code.
    pub fn wait_exit(&self, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        while self.running() {
            assert!(Instant::now() < deadline, "container still running after {timeout:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &self.id]).parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.id]);
    }
}

/// Runs a command to completion, panicking with its output on failure.
pub fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The stock `git` client with no system or global config and a fixed identity.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@bottle.invalid")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@bottle.invalid");
    c
}

/// `git rev-parse <r>` in `repo`.
pub fn rev(repo: &Path, r: &str) -> String {
    String::from_utf8_lossy(&must(git(repo).args(["rev-parse", r])).stdout).trim().to_string()
}

/// The address `host-gateway` means to the engine, the host as containers see it: asked of the
/// engine itself (a container's `/etc/hosts` entry), not read off the bridge's IPAM config,
/// which a fresh dockerd leaves without a gateway. Once per test process.
pub fn host_gateway() -> String {
    static GATEWAY: OnceLock<String> = OnceLock::new();
    GATEWAY
        .get_or_init(|| {
            let base = orchestrator::image::DEFAULT_BASE_IMAGE;
            let line =
                docker_ok(&["run", "--rm", "--add-host", "gw.test:host-gateway", base, "getent", "hosts", "gw.test"]);
            let gw = line.split_whitespace().next().unwrap_or_default().to_string();
            assert!(
                gw.parse::<std::net::Ipv4Addr>().is_ok(),
                "the engine's host-gateway is not an IPv4 address: {line:?}"
            );
            gw
        })
        .clone()
}

/// A real OpenSSH server on `ip:<free port>`, accepting the keys in `<dir>/authorized_keys`,
/// with its host key at `<dir>/host_key(.pub)`. Killed on drop.
pub struct Sshd(Child);

impl Sshd {
    pub fn start(dir: &Path, ip: &str) -> (Sshd, u16) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        if !dir.join("host_key").exists() {
            must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join("host_key")));
        }
        for _ in 0..5 {
            let port = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
            let config = format!(
                "Port {port}\nListenAddress {ip}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAllowUsers root\nLogLevel ERROR\nMaxStartups 100\n",
                dir.join("host_key").display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display()
            );
            std::fs::write(dir.join("sshd_config"), config).unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting /usr/sbin/sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                    eprintln!("sshd on {ip}:{port} exited: {err}");
                    break;
                }
                if std::net::TcpStream::connect((ip, port)).is_ok() {
                    return (Sshd(child), port);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start on {ip}");
    }

    /// `<type> <base64>` of the host key, as a bottle's `host_key` takes it.
    pub fn host_key(dir: &Path) -> String {
        let public = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
