//! The operator's side of the supervise queue (being built).

use crate::cli::SuperviseArgs;
use crate::home::Home;

/// Runs `bot-bottle supervise ...`.
pub fn run(_home: &Home, _args: SuperviseArgs) -> anyhow::Result<()> {
    anyhow::bail!("bot-bottle supervise is not built yet")
}
