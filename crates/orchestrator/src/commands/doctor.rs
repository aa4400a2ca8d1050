//! `bot-bottle doctor`: what this host has and lacks for running bottles, and how to get it.
//! Exit 1 when the Docker backend cannot work here.

use std::path::Path;

use crate::image::{BINARIES, DEFAULT_BASE_IMAGE, DockerImages, Images};
use crate::process::Cmd;

struct Check {
    what: &'static str,
    ok: bool,
    detail: String,
    /// Needed for the Docker backend (a failure makes `doctor` exit 1).
    required: bool,
}

fn tool_version(program: &str, arg: &str) -> Result<String, String> {
    match Cmd::new(program).arg(arg).output() {
        Ok(out) if out.status.success() || !out.stderr.is_empty() => {
            let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
            Ok(String::from_utf8_lossy(&text).lines().next().unwrap_or_default().to_string())
        }
        Ok(out) => Err(format!("exited with {}", out.status)),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

pub fn run() -> anyhow::Result<()> {
    let mut checks = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let docker = rt.block_on(DockerImages::connect());
    match &docker {
        Ok(d) => {
            let version = rt.block_on(d.0.version()).ok().and_then(|v| v.version).unwrap_or_default();
            checks.push(Check {
                what: "docker engine",
                ok: true,
                detail: format!("answers (version {version})"),
                required: true,
            });
            let base = rt.block_on(d.image_id(DEFAULT_BASE_IMAGE));
            checks.push(match base {
                Ok(Some(_)) => {
                    Check { what: "base image", ok: true, detail: DEFAULT_BASE_IMAGE.into(), required: true }
                }
                _ => Check {
                    what: "base image",
                    ok: false,
                    detail: format!("{DEFAULT_BASE_IMAGE} missing: run docker/make-base-image"),
                    required: true,
                },
            });
        }
        Err(e) => checks.push(Check {
            what: "docker engine",
            ok: false,
            detail: format!("{e:#}; install Debian's docker.io and start dockerd (scripts/dockerd-up does both)"),
            required: true,
        }),
    }
    let bin_dir = crate::image::default_bin_dir()?;
    let missing: Vec<&str> = BINARIES.into_iter().filter(|b| !bin_dir.join(b).exists()).collect();
    checks.push(Check {
        what: "daemon binaries",
        ok: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("in {}", bin_dir.display())
        } else {
            format!("{} missing in {}: cargo build --release --workspace --bins", missing.join(", "), bin_dir.display())
        },
        required: true,
    });
    for (what, program, arg, hint) in [
        ("git", "git", "--version", "apt-get install git"),
        ("ssh client", "ssh", "-V", "apt-get install openssh-client"),
    ] {
        checks.push(match tool_version(program, arg) {
            Ok(v) => Check { what, ok: true, detail: v, required: true },
            Err(e) => Check { what, ok: false, detail: format!("{e}: {hint}"), required: true },
        });
    }
    checks.push(match on_path("ssh-keygen") {
        Some(p) => Check { what: "ssh-keygen", ok: true, detail: p.display().to_string(), required: true },
        None => Check {
            what: "ssh-keygen",
            ok: false,
            detail: "not found: apt-get install openssh-client".into(),
            required: true,
        },
    });
    let kvm = Path::new("/dev/kvm").exists();
    checks.push(Check {
        what: "kvm (smolvm backend)",
        ok: kvm,
        detail: if kvm { "/dev/kvm present".into() } else { "no /dev/kvm: bottles use the docker backend".into() },
        required: false,
    });
    let smolvm = tool_version("smolvm", "--version").or_else(|_| tool_version("smol-vmm", "--version"));
    checks.push(match smolvm {
        Ok(v) => Check { what: "smolvm", ok: true, detail: v, required: false },
        Err(_) => Check {
            what: "smolvm",
            ok: false,
            detail: "not found: pip install smolmachines (optional; the docker backend works without it)".into(),
            required: false,
        },
    });
    let mut failed = false;
    for c in &checks {
        let mark = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "--  ",
        };
        failed |= !c.ok && c.required;
        eprintln!("{mark} {:<22} {}", c.what, c.detail);
    }
    if failed {
        anyhow::bail!("this host cannot run docker bottles yet (see FAIL lines above)");
    }
    Ok(())
}
