//! `bot-bottle doctor`: what this host has and lacks for running bottles, and how to get it.
//! Exit 1 when the Docker backend cannot work here.

use std::path::Path;
use std::process::ExitCode;

use crate::engine::Engine;
use crate::engine::docker::DockerEngine;
use crate::home::Home;
use crate::image::{BINARIES, DEFAULT_BASE_IMAGE, Images};
use crate::vmm::Vmm as _;
use crate::vmm::smolvm::SmolvmCli;

struct Check {
    what: &'static str,
    ok: bool,
    detail: String,
    /// Needed for the Docker backend (a failure makes `doctor` exit 1).
    required: bool,
}

pub async fn run(home: &Home) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    let docker = DockerEngine::connect().await;
    match &docker {
        Ok(d) => {
            let info = d.info().await.unwrap_or_default();
            checks.push(Check {
                what: "docker engine",
                ok: true,
                detail: format!("answers (version {})", info.version),
                required: true,
            });
            let runsc = info.runtimes.iter().any(|r| r == "runsc");
            checks.push(Check {
                what: "gVisor (runsc)",
                ok: runsc,
                detail: if runsc {
                    "the engine has it: agents run under runsc".into()
                } else {
                    format!(
                        "not offered by the engine (runtimes: {}); agents use runc — optional, install gVisor and \
                         register runsc with dockerd for an extra wall",
                        info.runtimes.join(", ")
                    )
                },
                required: false,
            });
            let base = d.image_id(DEFAULT_BASE_IMAGE).await;
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
    if let Ok(d) = &docker
        && missing.is_empty()
    {
        let tag = crate::image::tag(d, &bin_dir, DEFAULT_BASE_IMAGE, Some(&home.cache_dir())).await;
        checks.push(match tag {
            Ok(tag) => match d.image_id(&tag).await {
                Ok(Some(_)) => Check { what: "sidecar image", ok: true, detail: tag, required: false },
                _ => Check {
                    what: "sidecar image",
                    ok: false,
                    detail: format!("{tag} not built yet: `bot-bottle image build` (or the first start builds it)"),
                    required: false,
                },
            },
            Err(e) => Check { what: "sidecar image", ok: false, detail: format!("{e:#}"), required: false },
        });
    }
    let kvm = Path::new("/dev/kvm").exists();
    checks.push(Check {
        what: "kvm device",
        ok: kvm,
        detail: if kvm { "/dev/kvm present".into() } else { "no /dev/kvm: microVMs cannot run here".into() },
        required: false,
    });
    match SmolvmCli::find() {
        None => checks.push(Check {
            what: "smolvm",
            ok: false,
            detail: format!(
                "not found (${}, or smolvm / smol-vmm on PATH): pip install smolmachines (optional; the docker \
                 backend works without it)",
                crate::vmm::smolvm::BIN_ENV
            ),
            required: false,
        }),
        Some(vmm) => {
            let version = vmm.version().await;
            let found = version.is_ok();
            checks.push(Check {
                what: "smolvm",
                ok: found,
                detail: match version {
                    Ok(v) => format!("{v} ({})", vmm.bin().display()),
                    Err(e) => format!("{e:#}"),
                },
                required: false,
            });
            if found {
                let p = crate::vmm::boot::probe(&vmm, &home.cache_dir()).await;
                checks.push(Check {
                    what: "microVM boot",
                    ok: p.boots,
                    detail: if p.boots {
                        format!("{}: --backend auto uses smolvm", p.detail)
                    } else {
                        format!("a VM does not boot here ({}): use --backend docker (auto picks it)", p.detail)
                    },
                    required: false,
                });
            }
        }
    }
    checks.push(free_disk(home));
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
    Ok(ExitCode::SUCCESS)
}

/// Free space where bottles keep their state (and, usually, where Docker keeps images).
fn free_disk(home: &Home) -> Check {
    const NEED: u64 = 2 << 30;
    let mut dir = home.root().to_path_buf();
    while !dir.exists() {
        if !dir.pop() {
            break;
        }
    }
    match nix::sys::statvfs::statvfs(&dir) {
        Ok(s) => {
            let free = s.blocks_available() * s.fragment_size();
            Check {
                what: "free disk",
                ok: free >= NEED,
                detail: format!(
                    "{:.1} GiB free at {}{}",
                    free as f64 / (1u64 << 30) as f64,
                    dir.display(),
                    if free >= NEED { "" } else { ": images and bottles need a few GiB; free some space" }
                ),
                required: false,
            }
        }
        Err(e) => Check { what: "free disk", ok: false, detail: format!("{}: {e}", dir.display()), required: false },
    }
}
