//! Test harness: a real `sshd` upstream on a loopback port (generated host and deploy keys),
//! bare upstream repos addressed as `ssh://root@127.0.0.1:PORT/abs/path.git`, the gate's
//! `run` on 127.0.0.1:0 in its own runtime, and the stock `git` client with a hermetic config.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A fake AWS access key id, assembled at runtime so the repository holds no secret-looking
/// literal.
pub fn fake_secret() -> String {
    ["AKIA", "QYLPMN5HHHFDZAIK"].concat()
}

/// Runs a command to completion, panicking with its output on failure.
pub fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `git` with no system/global config and a fixed identity.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@bottle.invalid")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@bottle.invalid")
        .env_remove("GIT_DIR")
        .env_remove("GIT_SSH_COMMAND");
    c
}

/// `git <args>` in `dir`, must succeed; returns stdout trimmed.
pub fn g(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&must(git(dir).args(args)).stdout).trim().to_string()
}

/// `git <args>` in `dir` that may fail; returns (success, stderr).
pub fn try_g(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = git(dir).args(args).output().expect("running git");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout)))
}

/// Writes `content` to `dir/file` and commits it with `msg`.
pub fn commit_file(dir: &Path, file: &str, content: &str, msg: &str) -> String {
    let p = dir.join(file);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, content).unwrap();
    g(dir, &["add", file]);
    g(dir, &["commit", "-q", "-m", msg]);
    g(dir, &["rev-parse", "HEAD"])
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn keygen(path: &Path) {
    must(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"]).arg(path));
}

/// A real OpenSSH server on 127.0.0.1:<port>, plus the deploy key it accepts and a
/// known_hosts pinning its host key. Killed on drop.
pub struct Sshd {
    pub dir: TempDir,
    pub port: u16,
    child: Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        std::fs::create_dir_all("/run/sshd").expect("privilege separation dir /run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("creds")).unwrap();
        keygen(&d.join("host_key"));
        keygen(&d.join("creds/deploy_key"));
        std::fs::copy(d.join("creds/deploy_key.pub"), d.join("authorized_keys")).unwrap();
        let user = String::from_utf8(must(Command::new("id").arg("-un")).stdout).unwrap().trim().to_string();
        assert_eq!(user, "root", "the sshd upstream is set up for the root user");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nAllowUsers root\nLogLevel ERROR\n\
                 PrintMotd no\nMaxStartups 100\nMaxSessions 100\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            );
            std::fs::write(d.join("sshd_config"), config).unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting /usr/sbin/sshd (Debian openssh-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                    last_err = format!("sshd exited with {status}: {err}");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let mut kh = String::new();
                    let pubkey = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
                    let mut parts = pubkey.split_whitespace();
                    kh.push_str(&format!("[127.0.0.1]:{port} {} {}\n", parts.next().unwrap(), parts.next().unwrap()));
                    std::fs::write(d.join("creds/known_hosts"), kh).unwrap();
                    return Sshd { dir, port, child };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start: {last_err}");
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("creds/deploy_key")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("creds/known_hosts")
    }

    /// A new bare upstream repo `<name>.git` with `commits` commits on `main`.
    pub fn upstream(&self, name: &str, commits: usize) -> Upstream {
        let path = self.dir.path().join("upstream").join(format!("{name}.git"));
        std::fs::create_dir_all(&path).unwrap();
        g(&path, &["init", "-q", "--bare", "-b", "main"]);
        let up = Upstream { path, url: String::new() };
        if commits > 0 {
            let work = self.dir.path().join(format!("seed-{name}"));
            std::fs::create_dir_all(&work).unwrap();
            g(&work, &["init", "-q", "-b", "main"]);
            for i in 0..commits {
                commit_file(&work, "README.md", &format!("line {i}\n"), &format!("seed {i}"));
            }
            g(&work, &["push", "-q", up.path.to_str().unwrap(), "main"]);
        }
        Upstream { url: format!("ssh://root@127.0.0.1:{}{}", self.port, up.path.display()), ..up }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Upstream {
    pub path: PathBuf,
    pub url: String,
}

impl Upstream {
    pub fn rev(&self, rev: &str) -> Option<String> {
        let out = git(&self.path).args(["rev-parse", "--verify", "-q", rev]).output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Every ref and its target, for "upstream unchanged" assertions.
    pub fn refs(&self) -> String {
        String::from_utf8_lossy(&git(&self.path).args(["show-ref"]).output().unwrap().stdout).into_owned()
    }

    /// Makes a commit directly on the upstream's `branch` (someone else pushing there).
    pub fn advance(&self, branch: &str, file: &str) -> String {
        let work = tempfile::tempdir().unwrap();
        g(work.path(), &["clone", "-q", "-b", branch, self.path.to_str().unwrap(), "w"]);
        let w = work.path().join("w");
        let sha = commit_file(&w, file, "from elsewhere\n", "upstream moved");
        g(&w, &["push", "-q", "origin", branch]);
        sha
    }
}

/// The gate under test: `git_gate::run` on 127.0.0.1:0 in its own runtime.
pub struct Gate {
    pub addr: SocketAddr,
    pub dir: TempDir,
    rt: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Gate {
    /// Serves one repo `name` → `url` with the sshd's creds and the `push` policy JSON.
    pub fn start(repos: &[(&str, &str, Option<&str>)], sshd: &Sshd) -> Gate {
        Self::start_with_config(&Self::config_json(repos, sshd))
    }

    fn config_json(repos: &[(&str, &str, Option<&str>)], sshd: &Sshd) -> String {
        let repos: Vec<String> = repos
            .iter()
            .map(|(name, url, push)| {
                let push = push.map(|p| format!(r#","push":{p}"#)).unwrap_or_default();
                format!(
                    r#"{{"name":"{name}","url":"{url}","identity_file":"{}","known_hosts_file":"{}"{push}}}"#,
                    sshd.identity().display(),
                    sshd.known_hosts().display()
                )
            })
            .collect();
        format!(
            r#"{{"version":1,"user":{{"name":"agent","email":"agent@bottle.invalid"}},"repos":[{}]}}"#,
            repos.join(",")
        )
    }

    pub fn start_with_config(json: &str) -> Gate {
        Self::start_inner(json, None)
    }

    /// Like [`Gate::start`], holding low-confidence pushes in the supervise queue `queue` for
    /// bottle `b1`, `timeout_secs` at most.
    pub fn start_held(repos: &[(&str, &str, Option<&str>)], sshd: &Sshd, queue: &Path, timeout_secs: u64) -> Gate {
        let json = Self::config_json(repos, sshd);
        Self::start_inner(&json, Some((queue, timeout_secs)))
    }

    fn start_inner(json: &str, hold: Option<(&Path, u64)>) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, json).unwrap();
        let args = git_gate::cli::ServeArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            config: config_path,
            data_dir: dir.path().join("data"),
            supervise_queue: hold.map(|(q, _)| q.to_path_buf()),
            bottle: hold.map(|_| "b1".to_string()),
            supervise_timeout: hold.map_or(300, |(_, t)| t),
        };
        let mut config = args.resolve().expect("valid gate config");
        config.exe = PathBuf::from(env!("CARGO_BIN_EXE_git-gate"));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(async move {
            git_gate::run(config, listener, async move {
                let _ = stopped.await;
            })
            .await
            .expect("gate run");
        });
        Gate { addr, dir, rt: Some(rt), stop: Some(stop) }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }

    /// Clones `name` through the gate into a fresh directory.
    pub fn clone(&self, name: &str) -> (TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        g(t.path(), &["clone", "-q", &self.url(name), "w"]);
        let w = t.path().join("w");
        (t, w)
    }

    /// The gate's mirror of `name`.
    pub fn mirror(&self, name: &str) -> PathBuf {
        self.dir.path().join("data/repos").join(format!("{name}.git"))
    }

    /// A raw HTTP/1.1 GET; returns the status code and body.
    pub fn get(&self, target: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, resp)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}
