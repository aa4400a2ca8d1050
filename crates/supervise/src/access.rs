//! Who may talk to supervise: every request (every method, every path) passes [`Access::check`]
//! before the MCP service sees it, and a refused request files nothing.
//!
//! - **Host** (and an absolute request target's authority) must name this bundle: loopback (a
//!   port published on the host's loopback), one of the bundle's own addresses or its host
//!   name, or a host given with `--allowed-host` (`host` for any port, `host:port` for one).
//!   A DNS-rebinding page sends its own name and is refused.
//! - **Origin**, when present, must be an `http(s)` origin on such a host; `Origin: null` and
//!   anything unparsable are refused. MCP clients send none; browsers always do.
//! - With a token (`--auth-token-file`), `Authorization: Bearer <token>`, compared in constant
//!   time over SHA-256 digests (so neither content nor length leaks through timing). A token in
//!   the query string or any other header does not count.
//!
//! Names are compared in lowercase with one trailing dot dropped; IPv6 literals in brackets.

use std::net::IpAddr;

use common::Secret;
use http::{HeaderMap, Uri, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a request was refused (what the client is told; never a token value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("missing Host header")]
    NoHost,
    #[error("more than one {0} header")]
    Repeated(&'static str),
    #[error("Host {0:?} is not a host name or address")]
    BadHost(String),
    #[error("Host {0:?} is not this bundle (add it with --allowed-host)")]
    ForeignHost(String),
    #[error("Origin {0:?} is not allowed")]
    ForeignOrigin(String),
    #[error("missing Authorization: Bearer token")]
    NoToken,
    #[error("wrong bearer token")]
    BadToken,
}

impl Refused {
    /// 401 for a missing or wrong token (the client may retry with one), 403 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Refused::NoToken | Refused::BadToken => http::StatusCode::UNAUTHORIZED,
            Refused::NoHost | Refused::Repeated(_) | Refused::BadHost(_) => http::StatusCode::BAD_REQUEST,
            Refused::ForeignHost(_) | Refused::ForeignOrigin(_) => http::StatusCode::FORBIDDEN,
        }
    }
}

/// A host and optional port, normalised (lowercase, no trailing dot, no IPv6 brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: Option<u16>,
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port` strictly: no user info, no path, a port
/// of digits only, and a host that is a DNS name or an IP address.
pub fn parse_authority(s: &str) -> Option<Authority> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':')?)?),
        };
        (inner.to_ascii_lowercase(), port)
    } else {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !name {
            return None;
        }
        (host, port)
    };
    Some(Authority { host, port })
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// The addresses of this machine's interfaces (the bundle's IPs), read when needed so an
/// interface added after start counts too.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// This machine's host name (in a container: the name Docker gave it).
pub fn host_name() -> Option<String> {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty())
}

/// The checks every request passes.
pub struct Access {
    /// `--allowed-host` entries.
    extra: Vec<Authority>,
    /// The bundle's own names (its host name).
    names: Vec<String>,
    /// The bundle's own addresses (called per check that needs them).
    addresses: Box<dyn Fn() -> Vec<IpAddr> + Send + Sync>,
    token: Option<[u8; 32]>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("extra", &self.extra)
            .field("names", &self.names)
            .field("token", &self.token.map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl Access {
    /// `extra` are valid `--allowed-host` values (see [`parse_authority`]; invalid ones are
    /// skipped: the config step refuses them first).
    pub fn new(
        extra: &[String],
        names: Vec<String>,
        addresses: Box<dyn Fn() -> Vec<IpAddr> + Send + Sync>,
        token: Option<&Secret>,
    ) -> Access {
        Access {
            extra: extra.iter().filter_map(|h| parse_authority(h)).collect(),
            names: names.iter().filter_map(|n| parse_authority(n)).map(|a| a.host).collect(),
            addresses,
            token: token.map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        }
    }

    /// The bundle's real surroundings: its host name and interface addresses.
    pub fn for_this_host(extra: &[String], token: Option<&Secret>) -> Access {
        Access::new(extra, host_name().into_iter().collect(), Box::new(local_addresses), token)
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `a` (with `default_port` when it names none) is this bundle or an allowed host.
    fn host_allowed(&self, a: &Authority, default_port: u16) -> bool {
        let port = a.port.unwrap_or(default_port);
        if self.extra.iter().any(|e| e.host == a.host && e.port.is_none_or(|p| p == port)) {
            return true;
        }
        match a.host.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                ip.is_loopback() || (!ip.is_unspecified() && (self.addresses)().iter().any(|l| l.to_canonical() == ip))
            }
            Err(_) => a.host == "localhost" || self.names.contains(&a.host),
        }
    }

    /// Checks one request's Host, request target, Origin and token.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refused> {
        let one = |name: header::HeaderName, label: &'static str| -> Result<Option<String>, Refused> {
            let mut all = headers.get_all(&name).iter();
            let first = all.next();
            if all.next().is_some() {
                return Err(Refused::Repeated(label));
            }
            first.map(|v| v.to_str().map(str::to_string).map_err(|_| Refused::BadHost(format!("{v:?}")))).transpose()
        };
        // Host, and the authority of an absolute-form target (HTTP/2 :authority too).
        let host = one(header::HOST, "Host")?;
        let target = uri.authority().map(|a| a.as_str().to_string());
        if host.is_none() && target.is_none() {
            return Err(Refused::NoHost);
        }
        for h in host.iter().chain(target.iter()) {
            let a = parse_authority(h).ok_or_else(|| Refused::BadHost(h.clone()))?;
            if !self.host_allowed(&a, 80) {
                return Err(Refused::ForeignHost(h.clone()));
            }
        }
        if let Some(origin) = one(header::ORIGIN, "Origin")? {
            let parsed = origin
                .strip_prefix("http://")
                .map(|r| (r, 80))
                .or_else(|| origin.strip_prefix("https://").map(|r| (r, 443)))
                .and_then(|(rest, port)| parse_authority(rest).map(|a| (a, port)));
            match parsed {
                Some((a, port)) if self.host_allowed(&a, port) => {}
                _ => return Err(Refused::ForeignOrigin(origin)),
            }
        }
        if let Some(want) = &self.token {
            let value = one(header::AUTHORIZATION, "Authorization")?.ok_or(Refused::NoToken)?;
            let (scheme, given) = value.split_once(' ').ok_or(Refused::BadToken)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(Refused::BadToken);
            }
            let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
            if !bool::from(given.ct_eq(want)) {
                return Err(Refused::BadToken);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn access(token: bool) -> Access {
        let secret = Secret::new(TOKEN.to_string());
        Access::new(
            &["bundle.internal".into(), "gate.example:9100".into(), "[fd00::5]".into()],
            vec!["abc123def456".into()],
            Box::new(|| vec!["10.77.0.2".parse().unwrap(), "fd00::2".parse().unwrap()]),
            token.then_some(&secret),
        )
    }

    fn req(host: Option<&str>, extra: &[(&str, &str)]) -> (Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, host.parse().unwrap());
        }
        for (k, v) in extra {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        ("/mcp".parse().unwrap(), h)
    }

    fn check(a: &Access, host: Option<&str>, extra: &[(&str, &str)]) -> Result<(), Refused> {
        let (uri, h) = req(host, extra);
        a.check(&uri, &h)
    }

    #[test]
    fn authorities_parse_strictly() {
        let a = |s: &str| parse_authority(s).map(|a| (a.host, a.port));
        assert_eq!(a("Bundle.Internal.:9100"), Some(("bundle.internal".into(), Some(9100))));
        assert_eq!(a("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(a("[FD00::2]"), Some(("fd00::2".into(), None)));
        for bad in ["", "a b", "user@host", "host:", "host:99999", "host:+80", "[::1", "[nope]:1", "h/x", "a..b", ":80"]
        {
            assert_eq!(a(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hosts_loopback_own_names_and_addresses_and_extra() {
        let a = access(false);
        for ok in [
            "127.0.0.1:9100",
            "127.9.8.7:41234",
            "[::1]:9100",
            "localhost",
            "LOCALHOST.:9100",
            "10.77.0.2:9100",
            "[fd00::2]:9100",
            "abc123def456:9100",
            "bundle.internal:1234",
            "Bundle.Internal.",
            "gate.example:9100",
            "[fd00::5]:1",
        ] {
            assert_eq!(check(&a, Some(ok), &[]), Ok(()), "{ok}");
        }
        for foreign in [
            "evil.example.com",
            "10.77.0.3:9100",
            "gate.example:9101",
            "gate.example",
            "evil.localhost",
            "0.0.0.0:9100",
        ] {
            assert_eq!(check(&a, Some(foreign), &[]), Err(Refused::ForeignHost(foreign.into())), "{foreign}");
        }
        assert_eq!(check(&a, Some("user@localhost"), &[]), Err(Refused::BadHost("user@localhost".into())));
        assert_eq!(check(&a, None, &[]), Err(Refused::NoHost));
        assert_eq!(check(&a, Some("localhost"), &[("host", "evil.example")]), Err(Refused::Repeated("Host")));
        // An absolute-form target names its host too.
        let h = req(Some("localhost"), &[]).1;
        let uri: Uri = "http://evil.example/mcp".parse().unwrap();
        assert_eq!(a.check(&uri, &h), Err(Refused::ForeignHost("evil.example".into())));
    }

    #[test]
    fn origins_when_present() {
        let a = access(false);
        assert_eq!(check(&a, Some("localhost"), &[("origin", "http://localhost:9100")]), Ok(()));
        assert_eq!(check(&a, Some("localhost"), &[("origin", "https://bundle.internal")]), Ok(()));
        for bad in
            ["null", "http://evil.example", "https://evil.example:443", "file://", "http://localhost.evil.example"]
        {
            assert_eq!(
                check(&a, Some("localhost"), &[("origin", bad)]),
                Err(Refused::ForeignOrigin(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            check(&a, Some("localhost"), &[("origin", "http://localhost"), ("origin", "http://evil.example")]),
            Err(Refused::Repeated("Origin"))
        );
    }

    #[test]
    fn tokens_in_the_authorization_header_only() {
        let a = access(true);
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(check(&a, Some("localhost"), &[("authorization", &bearer)]), Ok(()));
        assert_eq!(check(&a, Some("localhost"), &[("authorization", &format!("bearer {TOKEN}"))]), Ok(()));
        assert_eq!(check(&a, Some("localhost"), &[]), Err(Refused::NoToken));
        let shorter = &TOKEN[..31];
        let longer = format!("{TOKEN}0");
        for wrong in [format!("Bearer {shorter}"), format!("Bearer {longer}"), format!("Basic {TOKEN}"), TOKEN.into()] {
            assert_eq!(check(&a, Some("localhost"), &[("authorization", &wrong)]), Err(Refused::BadToken), "{wrong}");
        }
        let (_, h) = req(Some("localhost"), &[]);
        let uri: Uri = format!("/mcp?access_token={TOKEN}").parse().unwrap();
        assert_eq!(a.check(&uri, &h), Err(Refused::NoToken), "a token in the query does not count");
        assert_eq!(
            check(&a, Some("localhost"), &[("authorization", &bearer), ("authorization", &bearer)]),
            Err(Refused::Repeated("Authorization"))
        );
        // Host and Origin are checked before the token.
        assert_eq!(
            check(&a, Some("evil.example"), &[("authorization", &bearer)]),
            Err(Refused::ForeignHost("evil.example".into()))
        );
        assert_eq!(Refused::NoToken.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(Refused::ForeignHost(String::new()).status(), http::StatusCode::FORBIDDEN);
    }
}
