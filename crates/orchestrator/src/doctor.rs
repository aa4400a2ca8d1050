//! `bot-bottle doctor` (being built).

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
