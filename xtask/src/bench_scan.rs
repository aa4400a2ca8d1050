//! Benchmark (being built).

pub fn run(_args: Vec<String>) -> anyhow::Result<()> {
    anyhow::bail!("this benchmark is not built yet")
}
