//! Does a microVM really boot here? Found by trying — `/dev/kvm` existing proves nothing (a
//! host can have the device and still refuse to run a guest) — bounded in time, and cached per
//! smolvm, kernel and device, so `doctor` and `start --backend auto` pay for it once.
//!
//! The trial machine lives in a state directory of its own, which is removed afterwards: it
//! never touches the operator's machines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::smolvm::SmolvmCli;
use super::{MachineSpec, VmExec, Vmm};
use crate::engine::ExecIo;

/// How long the trial boot may take.
pub const BOOT_BOUND: Duration = Duration::from_secs(90);

/// What a trial found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootProbe {
    /// What the result holds for: smolvm's path and version, the kernel, the device.
    pub key: String,
    pub boots: bool,
    /// Why not, in smolvm's words, or how long the boot took.
    pub detail: String,
}

/// The cached answer for this host, or a fresh trial (then cached).
pub async fn probe(vmm: &SmolvmCli, cache_dir: &Path) -> BootProbe {
    let version = match vmm.version().await {
        Ok(v) => v,
        Err(e) => return BootProbe { key: String::new(), boots: false, detail: format!("{e:#}") },
    };
    let key = format!(
        "{} {version}; kernel {}; /dev/kvm {}",
        vmm.bin().display(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        if Path::new("/dev/kvm").exists() { "present" } else { "absent" }
    );
    let cache = cache_dir.join("vm-boot.json");
    if let Some(p) = std::fs::read(&cache).ok().and_then(|b| serde_json::from_slice::<BootProbe>(&b).ok())
        && p.key == key
    {
        return p;
    }
    let result = trial(vmm).await;
    let p = BootProbe {
        key,
        boots: result.is_ok(),
        detail: match result {
            Ok(took) => format!("a trial machine booted and answered in {:.1} s", took.as_secs_f64()),
            Err(e) => format!("{e:#}"),
        },
    };
    let _ = std::fs::create_dir_all(cache_dir);
    let _ = common::atomic::write_json(&cache, &p);
    p
}

/// Creates, starts, execs into and deletes a machine with no image (smolvm's own guest), in a
/// throwaway state directory.
async fn trial(vmm: &SmolvmCli) -> anyhow::Result<Duration> {
    let dir = tempfile::Builder::new().prefix("bot-bottle-vm-probe").tempdir()?;
    let vmm = vmm.with_state_dir(PathBuf::from(dir.path()));
    let spec = MachineSpec { name: "bot-bottle-boot-probe".into(), ..Default::default() };
    vmm.create(&spec).await?;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(BOOT_BOUND, async {
        vmm.start(&spec.name, &[]).await?;
        let exec = VmExec { cmd: vec!["true".into()], user: None, workdir: None, io: ExecIo::Capture };
        let (code, out) = vmm.exec(&spec.name, &exec, &[]).await?;
        anyhow::ensure!(code == 0, "`true` in the trial machine exited {code}: {}", String::from_utf8_lossy(&out));
        anyhow::Ok(())
    })
    .await;
    let took = started.elapsed();
    let _ = vmm.stop(&spec.name).await;
    let _ = vmm.delete(&spec.name).await;
    match result {
        Err(_) => anyhow::bail!("a trial machine did not boot within {} s", BOOT_BOUND.as_secs()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(took),
    }
}
