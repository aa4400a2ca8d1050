//! `start --dry-run --format text`: the plan as a person reads it.

use std::fmt::Write as _;

use super::{AgentImage, BottlePlan, EnvVar, FileContent, Link, MountPlan, Sandbox};

/// The plan as text. Every value it shows is one the plan holds, so no secret can appear.
pub fn text(p: &BottlePlan) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "bottle {} (label {}, backend {})", p.slug, p.label, p.backend);
    let _ = writeln!(
        w,
        "  manifests: {}",
        p.manifests.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    if let Some(a) = &p.manifests.agent {
        let _ = writeln!(w, "  agent:     {}", a.display());
    }
    let _ = writeln!(w, "  state:     {}", p.state_dir.display());
    let _ = writeln!(w, "  queue:     {}", p.queue_dir.display());
    let _ = writeln!(w, "\nnetworks");
    let n = &p.network;
    match &n.link {
        Link::Internal { network, gateway, bundle_ip, agent_ip } => {
            let _ = writeln!(
                w,
                "  {} internal {} (gateway {gateway}, bundle {bundle_ip}, agent {agent_ip})",
                network.name,
                network.subnet.map(|s| s.to_string()).unwrap_or_default(),
            );
        }
        Link::Loopback { ip } => {
            let _ = writeln!(w, "  loopback {ip}: the bundle's ports, published here, are all the VM may reach");
        }
    }
    let _ = writeln!(w, "  {} egress (the bundle's way out; the agent never joins it)", n.egress.name);

    let b = &p.bundle;
    let _ = writeln!(w, "\nbundle {} ({}, user {}, read-only root)", b.container, b.image, b.user);
    let _ = writeln!(w, "  daemons: {}", b.daemons.join(", "));
    env(w, &b.env);
    mounts(w, &b.mounts);
    let _ = writeln!(w, "  tmpfs: {}", b.tmpfs.join(", "));
    for h in &b.extra_hosts {
        let _ = writeln!(w, "  host {h}");
    }
    if let Some(p) = &b.publish {
        let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
        let _ = writeln!(w, "  publish {} on {} ({})", ports.join(", "), p.ip, p.host_ports);
    }

    let a = &p.agent;
    let image = match &a.image {
        AgentImage::Reference { image } => image.clone(),
        AgentImage::Dockerfile { dockerfile, .. } => format!("built from {}", dockerfile.display()),
        AgentImage::Template { template } => {
            format!("built from the {} template's Dockerfile", crate::templates::name(*template))
        }
    };
    let user = a.user.as_deref().unwrap_or("from the image (1000:1000 if it is root)");
    match &a.sandbox {
        Sandbox::Container(c) => {
            let _ = writeln!(w, "\nagent {} ({image})", c.container);
            let _ = writeln!(
                w,
                "  user {user}, caps dropped: {}, {}, {} root{}",
                c.cap_drop.join(","),
                c.security_opt.join(","),
                if c.read_only_root { "read-only" } else { "writable" },
                c.runtime.as_deref().map(|r| format!(", runtime {r}")).unwrap_or_default()
            );
        }
        Sandbox::Vm(v) => {
            let _ = writeln!(w, "\nagent microVM {} ({image})", v.machine);
            let _ = writeln!(w, "  user {user}; may reach {} only", v.allow_cidr);
            let _ = writeln!(w, "  smolvm machine create {}", shell_words::join(&v.flags));
        }
    }
    let _ = writeln!(w, "  command: {}", shell_words::join(&a.command));
    let _ = writeln!(w, "  mode: {}", if a.interactive { "interactive (your terminal)" } else { "headless" });
    env(w, &a.env);
    mounts(w, &a.mounts);
    let _ = writeln!(
        w,
        "  trust store: the merged bundle over whichever of {} the image has",
        a.system_ca_bundles.join(", ")
    );
    if let Sandbox::Container(c) = &a.sandbox {
        let _ = writeln!(w, "  tmpfs: {}", c.tmpfs.join(", "));
        let _ = writeln!(w, "  firewall ({}): out only to {}", c.firewall.container, c.firewall.allow.join("; "));
    }

    let _ = writeln!(w, "\nfiles in the state directory");
    for f in &p.files {
        let what = match &f.content {
            FileContent::Text { text } => format!("{} bytes", text.len()),
            FileContent::CaCert => "bottle CA certificate (minted)".into(),
            FileContent::CaKey => "bottle CA key (minted)".into(),
            FileContent::CopyOf { source } => format!("copy of {}", source.display()),
            FileContent::SuperviseToken => "supervise token (minted)".into(),
            FileContent::McpConfig => "MCP config for supervise (at launch)".into(),
            FileContent::GitConfig { repos, .. } => {
                format!("git identity, {} repo(s) to the gate (at launch)", repos.len())
            }
            FileContent::CaBundle => "image roots + bottle CA".into(),
            FileContent::ProvisionedKey { repo } => format!("deploy key for {repo} (minted)"),
        };
        let _ = writeln!(w, "  {:<32} {:<7} {what}", f.path.display(), format!("{:?}", f.reader).to_lowercase());
    }
    if !p.secrets.is_empty() {
        let _ = writeln!(w, "\nsecrets (values are never shown)");
        for s in &p.secrets {
            let _ = writeln!(w, "  {} <- {} (to the {}: {})", s.name, s.source, s.to, s.purpose);
        }
    }
    if !p.keys.is_empty() {
        let _ = writeln!(w, "\ndeploy keys (minted at launch, deleted from the forge at teardown)");
        for k in &p.keys {
            let _ = writeln!(w, "  {}: \"{}\" on {} {}", k.repo, k.title, k.forge.api, k.forge.repo);
        }
    }
    let _ = writeln!(w, "\nsteps: {}", p.steps.join(" → "));
    o
}

fn env(w: &mut String, vars: &[EnvVar]) {
    for v in vars {
        match (&v.value, &v.source) {
            (Some(value), _) => {
                let _ = writeln!(w, "  env {}={value}", v.name);
            }
            (None, source) => {
                let _ = writeln!(w, "  env {} <- {}", v.name, source.as_deref().unwrap_or("launch"));
            }
        }
    }
}

fn mounts(w: &mut String, mounts: &[MountPlan]) {
    for m in mounts {
        let _ =
            writeln!(w, "  mount {} -> {} ({})", m.source.display(), m.target, if m.read_only { "ro" } else { "rw" });
    }
}
