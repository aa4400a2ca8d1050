//! Host facts for the plan, gathered by reading only: the engine's networks (and what
//! `host-gateway` means), the host's routes, the engine's runtimes, the sidecar image's tag for
//! the binaries at hand, and which host variables are set.

use std::net::Ipv4Addr;

use crate::engine::Engine;
use crate::plan::{Backend, HostFacts, Subnet};

use super::Sidecar;

/// Gathers [`HostFacts`]. `home` is the bot-bottle home; `nonce` the slug's random part. The
/// loopback facts are only read for a smolvm launch (a Docker one has no use for them).
pub async fn gather(
    engine: &dyn Engine,
    home: &std::path::Path,
    sidecar: &Sidecar,
    nonce: String,
    backend: Backend,
) -> anyhow::Result<HostFacts> {
    let smolvm = backend == Backend::Smolvm;
    let (networks, info) = tokio::try_join!(engine.networks(), engine.info())?;
    let mut used: Vec<Subnet> = networks.iter().flat_map(|n| n.subnets.iter().copied()).collect();
    used.extend(host_routes());
    let host_gateway = networks.iter().find(|n| n.object.name == "bridge").and_then(|n| n.gateways.first().copied());
    let sidecar_image =
        crate::image::tag(engine, &sidecar.bin_dir, &sidecar.base_image, Some(&sidecar.cache_dir)).await?;
    let env_present =
        std::env::vars_os().filter_map(|(k, v)| (!v.is_empty()).then(|| k.into_string().ok()).flatten()).collect();
    Ok(HostFacts {
        home: home.to_path_buf(),
        nonce,
        now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        owner: super::owner::current(),
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        used_subnets: used,
        host_gateway,
        sidecar_image,
        runsc: info.runtimes.iter().any(|r| r == "runsc"),
        used_loopback: if smolvm { used_loopback(home) } else { Vec::new() },
        loopback_aliases: if smolvm { loopback_aliases().await } else { None },
        env_present,
        oauth_vars: crate::templates::oauth_vars(std::env::vars_os()),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into()),
    })
}

/// Loopback addresses the home's bottles hold: each bottle's `plan.json` records its link.
/// Read under the home's loopback lock (see `commands::start`), so two launches never pick the
/// same one.
pub fn used_loopback(home: &std::path::Path) -> Vec<Ipv4Addr> {
    let Ok(dirs) = std::fs::read_dir(home.join("state")) else { return Vec::new() };
    dirs.filter_map(Result::ok)
        .filter_map(|d| std::fs::read(d.path().join("plan.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| v["network"]["link"]["kind"] == "loopback")
        .filter_map(|v| v["network"]["link"]["ip"].as_str()?.parse().ok())
        .collect()
}

/// macOS answers only on configured loopback aliases: read `lo0`'s. Elsewhere every 127/8
/// address is loopback (`None`).
async fn loopback_aliases() -> Option<Vec<Ipv4Addr>> {
    if !cfg!(target_os = "macos") {
        return None;
    }
    let mut c = common::proc::Cmd::new("ifconfig", std::path::Path::new("/"), std::time::Duration::from_secs(5));
    c.arg("lo0");
    let text = c.output().await.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    Some(crate::plan::net::parse_ifconfig_aliases(&text))
}

/// IPv4 routes of the host (`/proc/net/route`), the default route left out.
fn host_routes() -> Vec<Subnet> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else { return Vec::new() };
    parse_routes(&text)
}

fn parse_routes(text: &str) -> Vec<Subnet> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc/net/route prints the address's bytes as a native-endian number.
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then(|| Subnet::new(Ipv4Addr::from(dest.to_ne_bytes()), prefix))
        })
        .collect()
}

/// Six random hex digits.
pub fn nonce() -> anyhow::Result<String> {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("reading randomness: {e}"))?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(parse_routes(text), vec!["10.0.0.0/24".parse().unwrap(), "172.17.0.0/16".parse().unwrap()]);
    }
}
