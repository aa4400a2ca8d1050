//! Address planning: the bottle's internal agent↔bundle subnet (Docker), chosen clear of every
//! subnet the engine and the host already use, or its loopback address (smolvm).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let mask = Self::mask(prefix);
        Subnet { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) }
    }

    fn first(&self) -> u32 {
        u32::from(self.addr)
    }

    fn last(&self) -> u32 {
        self.first() | !Self::mask(self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first()..=self.last()).contains(&u32::from(ip))
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// The `n`th address in the subnet (`.1` is the gateway).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.first() + n)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR subnet"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{s:?}: bad prefix"))?;
        Ok(Subnet::new(addr, prefix))
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Where bottle subnets are carved from: private space Docker's default pools do not use.
pub const POOL: Subnet = Subnet { addr: Ipv4Addr::new(10, 243, 0, 0), prefix: 16 };
/// One bottle's internal network: network, gateway (the host), bundle, agent, spare.
pub const BOTTLE_PREFIX: u8 = 28;

/// The first free `/28` of [`POOL`], starting the search at a point derived from `seed` so that
/// bottles launched at the same moment rarely race for the same one (the engine refuses an
/// overlapping subnet, and launch then plans again).
pub fn choose(used: &[Subnet], seed: &str) -> Option<Subnet> {
    let slots = 1u32 << (BOTTLE_PREFIX - POOL.prefix);
    let start = seed.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % slots;
    (0..slots)
        .map(|i| (start + i) % slots)
        .map(|i| Subnet::new(POOL.host(i << (32 - BOTTLE_PREFIX)), BOTTLE_PREFIX))
        .find(|candidate| !used.iter().any(|u| u.overlaps(candidate)))
}

/// Where a smolvm bottle's loopback address comes from. On Linux all of 127.0.0.0/8 reaches
/// the loopback interface, so no alias is needed; this /16 keeps clear of 127.0.0.1 and of the
/// 127.0.x.y addresses resolvers and test servers use.
pub const LOOPBACK_POOL: Subnet = Subnet { addr: Ipv4Addr::new(127, 77, 0, 0), prefix: 16 };

/// A free address of [`LOOPBACK_POOL`] (not its first or last), the search starting at a point
/// derived from `seed`. The caller holds the home's loopback lock from here until the choice is
/// recorded in the bottle's state.
pub fn choose_loopback(used: &[Ipv4Addr], seed: &str) -> Option<Ipv4Addr> {
    let slots = (LOOPBACK_POOL.last() - LOOPBACK_POOL.first()) - 1;
    let start = seed.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % slots;
    (0..slots).map(|i| LOOPBACK_POOL.host(1 + (start + i) % slots)).find(|ip| !used.contains(ip))
}

/// Where a loopback address needs an alias (macOS), a configured alias of [`LOOPBACK_POOL`] no
/// other bottle holds.
pub fn choose_alias(aliases: &[Ipv4Addr], used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    aliases.iter().copied().find(|ip| LOOPBACK_POOL.contains(*ip) && *ip != LOOPBACK_POOL.addr && !used.contains(ip))
}

/// What to run once so a smolvm bottle has a loopback address of its own (macOS).
pub fn alias_hint(used: &[Ipv4Addr]) -> String {
    let next = (1..).map(|n| LOOPBACK_POOL.host(n)).find(|ip| !used.contains(ip)).expect("the pool is not full");
    format!(
        "no free loopback alias for a smolvm bottle: run `sudo ifconfig lo0 alias {next} up` once (after each \
         reboot), one alias per bottle running at the same time"
    )
}

/// The IPv4 addresses of [`LOOPBACK_POOL`] in `ifconfig lo0` output (`inet 127.77.0.2 netmask …`).
pub fn parse_ifconfig_aliases(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("inet ")?.split_whitespace().next()?.parse().ok())
        .filter(|ip| LOOPBACK_POOL.contains(*ip))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn aliases_are_read_from_ifconfig_and_chosen_when_free() {
        let text = "lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> mtu 16384\n\toptions=1203<RXCSUM,TXCSUM>\n\t\
                    inet 127.0.0.1 netmask 0xff000000\n\tinet6 ::1 prefixlen 128\n\t\
                    inet 127.77.0.2 netmask 0xff000000\n\tinet 127.77.0.3 netmask 0xff000000\n";
        let aliases = parse_ifconfig_aliases(text);
        assert_eq!(aliases, [Ipv4Addr::new(127, 77, 0, 2), Ipv4Addr::new(127, 77, 0, 3)]);
        assert_eq!(choose_alias(&aliases, &[]), Some(Ipv4Addr::new(127, 77, 0, 2)));
        assert_eq!(choose_alias(&aliases, &[Ipv4Addr::new(127, 77, 0, 2)]), Some(Ipv4Addr::new(127, 77, 0, 3)));
        assert_eq!(choose_alias(&aliases, &aliases), None);
        let hint = alias_hint(&aliases);
        assert!(hint.contains("sudo ifconfig lo0 alias 127.77.0.1 up"), "{hint}");
        let hint = alias_hint(&[Ipv4Addr::new(127, 77, 0, 1)]);
        assert!(hint.contains("alias 127.77.0.2 up"), "{hint}");
    }

    use super::*;

    #[test]
    fn loopback_addresses_are_free_and_in_the_pool() {
        let a = choose_loopback(&[], "demo-abc123").unwrap();
        assert!(LOOPBACK_POOL.overlaps(&Subnet::new(a, 32)) && a != LOOPBACK_POOL.addr);
        assert_ne!(a, Ipv4Addr::new(127, 77, 255, 255));
        let b = choose_loopback(&[a], "demo-abc123").unwrap();
        assert_ne!(a, b);
        assert_ne!(choose_loopback(&[], "one-aaaaaa"), choose_loopback(&[], "two-bbbbbb"));
        let all: Vec<Ipv4Addr> = (1..65535).map(|n| LOOPBACK_POOL.host(n)).collect();
        assert_eq!(choose_loopback(&all, "x"), None, "a full pool is an error, not a reuse");
    }

    #[test]
    fn subnets_parse_overlap_and_host() {
        let a: Subnet = "10.243.0.16/28".parse().unwrap();
        assert_eq!(a.host(2), Ipv4Addr::new(10, 243, 0, 18));
        assert!(a.overlaps(&"10.0.0.0/8".parse().unwrap()));
        assert!(!a.overlaps(&"10.243.0.32/28".parse().unwrap()));
        assert_eq!("10.243.0.17/28".parse::<Subnet>().unwrap(), a, "host bits are masked");
        assert!("10.0.0.0/33".parse::<Subnet>().is_err());
        assert!("nonsense".parse::<Subnet>().is_err());
    }

    #[test]
    fn choose_skips_used_space() {
        let first = choose(&[], "x").unwrap();
        assert_eq!(first.prefix, 28);
        assert!(POOL.overlaps(&first));
        let again = choose(&[first], "x").unwrap();
        assert_ne!(again, first);
        assert!(choose(&["10.0.0.0/8".parse().unwrap()], "x").is_none(), "the whole pool is taken");
        // Different seeds start in different places.
        assert_ne!(choose(&[], "bottle-a1b2c3").unwrap(), choose(&[], "bottle-d4e5f6").unwrap());
    }
}
