//! The secret values a launch reads — route tokens and the agent's `${VAR}` / `?` env values —
//! gathered once, held as [`Secret`]s, and handed only to the engine as container environment.

use anyhow::{Context, bail};
use common::Secret;

use crate::manifest::{EnvSource, Resolved};
use crate::plan::BottlePlan;

/// Every secret value of one launch.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Token slots for the bundle (`EGRESS_TOKEN_<n>`).
    pub bundle: Vec<(String, Secret)>,
    /// The agent's env values from the manifests (literal ones too: they are not shown in plans).
    pub agent: Vec<(String, Secret)>,
    /// This bottle's supervise token, when supervise runs.
    pub supervise_token: Option<Secret>,
    /// Forge API tokens by host variable (they stay in this process).
    pub forge: Vec<(String, Secret)>,
}

impl Secrets {
    /// The forge token read from host variable `var`, if this launch read it.
    pub fn forge_token(&self, var: &str) -> Option<&Secret> {
        self.forge.iter().find(|(k, _)| k == var).map(|(_, v)| v)
    }
}

/// Asks the operator for a value without echo: `(variable, prompt text)`.
pub type Ask<'a> = &'a dyn Fn(&str, Option<&str>) -> anyhow::Result<Secret>;

impl Secrets {
    /// Reads the host variables and asks for `?` values. `host` is the host environment.
    pub fn gather(
        plan: &BottlePlan,
        resolved: &Resolved,
        host: &dyn Fn(&str) -> Option<String>,
        ask: Ask<'_>,
    ) -> anyhow::Result<Secrets> {
        let mut s = Secrets::default();
        for secret in plan.secrets.iter().filter(|s| s.to == "bundle") {
            let var = secret.source.strip_prefix("host:").context("a bundle secret comes from the host")?;
            let Some(value) = host(var).filter(|v| !v.is_empty()) else {
                bail!("the host variable {var} ({}) is not set", secret.purpose);
            };
            s.bundle.push((secret.name.clone(), Secret::new(value)));
        }
        for secret in plan.secrets.iter().filter(|s| s.to == "bot-bottle") {
            let var = secret.source.strip_prefix("host:").context("a forge token comes from the host")?;
            let Some(value) = host(var).filter(|v| !v.is_empty()) else {
                bail!("the host variable {var} ({}) is not set", secret.purpose);
            };
            if !s.forge.iter().any(|(k, _)| k == var) {
                s.forge.push((var.to_string(), Secret::new(value)));
            }
        }
        for (name, src) in &resolved.env {
            let value = match &src.value {
                EnvSource::Literal { value } => Secret::new(value.clone()),
                EnvSource::Host { var } => match host(var) {
                    Some(v) => Secret::new(v),
                    None => bail!("{}: the host variable {var} is not set", src.at),
                },
                EnvSource::Prompt { text } => ask(name, text.as_deref()).with_context(|| format!("{}", src.at))?,
            };
            s.agent.push((name.clone(), value));
        }
        if plan.bundle.daemons.iter().any(|d| d == "supervise") {
            s.supervise_token = Some(super::random_token()?);
        }
        Ok(s)
    }
}

/// Asks on the controlling terminal without echo; an error when there is none.
pub fn ask_terminal(name: &str, text: Option<&str>) -> anyhow::Result<Secret> {
    let prompt = format!("{} for {name}: ", text.unwrap_or("value"));
    let value = rpassword::prompt_password(prompt)
        .with_context(|| format!("{name} asks for a value at launch, but there is no terminal to ask on"))?;
    Ok(Secret::new(value))
}
