//! Building the sidecar image (being built).

use crate::cli::ImageCmd;

pub fn run(_cmd: ImageCmd) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
