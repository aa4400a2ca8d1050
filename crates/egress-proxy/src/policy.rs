//! The egress policy as data in, decision out: [`decide`] is a pure function over the live
//! [`Routes`] and the [`RequestFacts`] the proxy plumbing gathered. It runs once for the CONNECT
//! (no request yet) and again for every request inside the tunnel, so a client that names a
//! different host in SNI, `Host` or `:authority` than in its CONNECT is denied.
//!
//! Denied whatever the routes say: SNI/`Host`/`:authority` differing from the target, IP
//! literals (and numeric host forms a resolver would read as an IP) unless a route names that
//! exact IP, DNS-over-HTTPS unless the route sets `allow_doh`, and paths with dot segments
//! (`/v1/../admin` would otherwise pass a `/v1/` prefix and reach `/admin`).

use std::fmt;
use std::net::IpAddr;

use common::formats::Routes;
use common::formats::is_dns_name;
use common::formats::routes::{HostPattern, Match, PathMatchKind, Route, Scheme};
use http::HeaderMap;

/// How a request reached the proxy, which says which routes' scheme it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The `CONNECT host:port` itself: no request yet, so a route of either scheme for that
    /// host and port lets the tunnel open.
    Connect,
    /// A request inside TLS in a tunnel: only `https` routes.
    Tls,
    /// A cleartext request, absolute-form `http://` or plain HTTP inside `CONNECT host:80`:
    /// only `http` routes.
    PlainHttp,
}

impl Via {
    /// The route scheme a request arriving this way needs (`None` for the CONNECT itself).
    fn scheme(self) -> Option<Scheme> {
        match self {
            Via::Connect => None,
            Via::Tls => Some(Scheme::Https),
            Via::PlainHttp => Some(Scheme::Http),
        }
    }
}

/// One request inside the connection (absent for the CONNECT itself).
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded), without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub via: Via,
    /// The CONNECT target or the absolute URI's host: lowercase, IPv6 without brackets.
    pub host: &'a str,
    pub port: u16,
    /// The TLS server name the client sent, if any.
    pub sni: Option<&'a str>,
    /// Every authority the request names: `Host` header, `:authority`, an absolute URI inside
    /// the tunnel. Each must name the target.
    pub authorities: &'a [&'a str],
    pub request: Option<RequestLine<'a>>,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by `routes[route]` (its auth and DLP settings apply).
    Allow {
        route: usize,
    },
    Deny(Deny),
}

/// Why a request was denied; `Display` is the reason in the 403 body and the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    BadHost(String),
    IpLiteral(String),
    NoRoute { host: String },
    Port { host: String, port: u16 },
    Scheme { host: String, port: u16, scheme: Scheme },
    SniMismatch { sni: String, host: String },
    AuthorityMismatch { authority: String, host: String, port: u16 },
    DotSegments,
    NoMatch { method: String, path: String },
    Doh,
}

impl fmt::Display for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deny::BadHost(h) => write!(f, "{h:?} is not a valid host name"),
            Deny::IpLiteral(h) => write!(f, "IP literal {h} is not named by any route"),
            Deny::NoRoute { host } => write!(f, "host {host} is not in the bottle's routes"),
            Deny::Port { host, port } => write!(f, "port {port} is not allowed for host {host}"),
            Deny::Scheme { host, port, scheme } => {
                let (scheme, other) = match scheme {
                    Scheme::Http => ("http", "https"),
                    Scheme::Https => ("https", "http"),
                };
                write!(f, "{scheme} is not allowed for {host}:{port} (its routes are {other})")
            }
            Deny::SniMismatch { sni, host } => {
                write!(f, "TLS server name {sni:?} differs from the CONNECT target {host}")
            }
            Deny::AuthorityMismatch { authority, host, port } => {
                write!(f, "request authority {authority:?} differs from the target {host}:{port}")
            }
            Deny::DotSegments => write!(f, "path contains '.' or '..' segments"),
            // The path stays out of the reason: it may carry what DLP would flag.
            Deny::NoMatch { method, .. } => write!(f, "{method} request does not pass the route's matches"),
            Deny::Doh => write!(f, "DNS-over-HTTPS is not allowed on this route"),
        }
    }
}

/// The route's port: as given, or its scheme's default.
fn route_port(route: &Route) -> u16 {
    route.port.unwrap_or(route.scheme.default_port())
}

/// True when `host` is something a resolver would turn into an address without DNS: an IP
/// literal in any form `inet_aton` accepts (`127.1`, `0x7f.1`, `2130706433`). A DNS name's last
/// label is never all-numeric or hex-prefixed.
fn is_numeric_host(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x")
}

/// Whether a route's host pattern covers `host` (already lowercase, no brackets).
pub fn host_matches(route: &Route, host: &str, ip: Option<IpAddr>) -> bool {
    match route.host_pattern() {
        HostPattern::Exact(h) => ip.is_none() && h == host,
        HostPattern::Wildcard(suffix) => {
            ip.is_none() && host.strip_suffix(suffix).and_then(|p| p.strip_suffix('.')).is_some_and(|p| !p.is_empty())
        }
        HostPattern::Ip(want) => ip == Some(want),
    }
}

/// Whether authority `a` names `host` (lowercase, unbracketed) and, if it has a port, `port`:
/// [`split_authority`] without the allocation.
fn authority_is(a: &str, host: &str, port: u16) -> bool {
    let a = a.rsplit_once('@').map_or(a, |(_, h)| h);
    let (h, p) = if let Some(rest) = a.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else { return false };
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()) {
                Some(p) => (h, Some(p)),
                None => return false,
            },
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => return false,
            },
            _ => (a, None),
        }
    };
    // `lowercase(h) == host`, as with split_authority.
    h.len() == host.len()
        && h.bytes().zip(host.bytes()).all(|(x, y)| x.to_ascii_lowercase() == y)
        && p.is_none_or(|p| p == port)
}

/// Splits `host[:port]` / `[v6]:port`; host lowercased and unbracketed.
pub fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    let a = a.rsplit_once('@').map_or(a, |(_, h)| h);
    if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((h.to_ascii_lowercase(), port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_ascii_lowercase(), Some(p.parse().ok()?))),
        Some(_) => Some((a.to_ascii_lowercase(), None)), // bare IPv6
        None => Some((a.to_ascii_lowercase(), None)),
    }
}

/// True when a path has `.`/`..` segments, literal or percent-encoded, or a backslash:
/// `%2e` (any case) counts as `.`, `%2f`, `%5c` and `\` as `/`. A segment's `;` parameters
/// (`;`, `%3b`) do not count: Tomcat and Spring read `/v1/..;/admin` as `/admin`. One pass, no
/// allocation.
fn has_dot_segments(path: &str) -> bool {
    let b = path.as_bytes();
    // The current segment before any `;`: its length in decoded characters, whether all were
    // dots, and whether its parameters have begun.
    let (mut len, mut all_dots, mut params) = (0usize, true, false);
    let mut i = 0;
    while i < b.len() {
        let (c, step) = match b[i] {
            b'%' if i + 2 < b.len() => match (b[i + 1], b[i + 2].to_ascii_lowercase()) {
                (b'2', b'e') => (b'.', 3),
                (b'2', b'f') | (b'5', b'c') => (b'/', 3),
                (b'3', b'b') => (b';', 3),
                _ => (b'%', 1),
            },
            b'\\' => (b'/', 1),
            c => (c, 1),
        };
        i += step;
        if c == b'/' {
            if all_dots && (1..=2).contains(&len) {
                return true;
            }
            (len, all_dots, params) = (0, true, false);
        } else if c == b';' {
            params = true;
        } else if !params {
            len += 1;
            all_dots &= c == b'.';
        }
    }
    all_dots && (1..=2).contains(&len)
}

/// Whether `needle` (lowercase ASCII) occurs in `hay`, ASCII case-insensitively.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn is_doh(req: &RequestLine<'_>) -> bool {
    let dns_type = |name: http::header::HeaderName| {
        req.headers.get_all(name).iter().any(|v| {
            contains_ignore_case(v.as_bytes(), b"application/dns-message")
                || contains_ignore_case(v.as_bytes(), b"application/dns-json")
        })
    };
    let path = req.path.as_bytes();
    let tail = b"/dns-query";
    dns_type(http::header::CONTENT_TYPE)
        || dns_type(http::header::ACCEPT)
        || (path.len() >= tail.len() && path[path.len() - tail.len()..].eq_ignore_ascii_case(tail))
}

fn match_passes(m: &Match, req: &RequestLine<'_>) -> bool {
    let path_ok = m.paths.is_empty()
        || m.paths.iter().any(|p| match p.kind {
            PathMatchKind::Prefix => req.path.starts_with(&p.value),
            PathMatchKind::Exact => req.path == p.value,
        });
    let method_ok = m.methods.as_ref().is_none_or(|ms| ms.iter().any(|x| x == req.method));
    let headers_ok = m
        .headers
        .iter()
        .all(|h| req.headers.get_all(h.name.as_str()).iter().any(|v| v.as_bytes() == h.value.as_bytes()));
    path_ok && method_ok && headers_ok
}

/// The decision for one CONNECT or one request. Pure: same inputs, same answer.
pub fn decide(routes: &Routes, facts: &RequestFacts<'_>) -> Decision {
    let host = facts.host;
    let ip: Option<IpAddr> = host.parse().ok();
    if ip.is_none() {
        if !is_dns_name(host) {
            return Decision::Deny(Deny::BadHost(host.to_string()));
        }
        if is_numeric_host(host) {
            return Decision::Deny(Deny::IpLiteral(host.to_string()));
        }
    }
    if let Some(sni) = facts.sni
        && !sni.eq_ignore_ascii_case(host)
    {
        return Decision::Deny(Deny::SniMismatch { sni: sni.to_string(), host: host.to_string() });
    }
    for a in facts.authorities {
        if !authority_is(a, host, facts.port) {
            return Decision::Deny(Deny::AuthorityMismatch {
                authority: (*a).to_string(),
                host: host.to_string(),
                port: facts.port,
            });
        }
    }
    if !routes.routes.iter().any(|r| host_matches(r, host, ip)) {
        return Decision::Deny(match ip {
            Some(_) => Deny::IpLiteral(host.to_string()),
            None => Deny::NoRoute { host: host.to_string() },
        });
    }
    // Routes for this host and port, in file order.
    let mut candidates = routes
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| host_matches(r, host, ip) && route_port(r) == facts.port)
        .peekable();
    if candidates.peek().is_none() {
        return Decision::Deny(Deny::Port { host: host.to_string(), port: facts.port });
    }
    // Only routes of the scheme the request came in: a cleartext request never matches an
    // https route (it would carry the route's token in clear text). The CONNECT itself may
    // open for a route of either scheme.
    let wanted = facts.via.scheme();
    let mut candidates = candidates.filter(|(_, r)| wanted.is_none_or(|s| r.scheme == s)).peekable();
    let Some(&(first, _)) = candidates.peek() else {
        let scheme = wanted.unwrap_or_default();
        return Decision::Deny(Deny::Scheme { host: host.to_string(), port: facts.port, scheme });
    };
    let Some(req) = facts.request else {
        // The CONNECT itself: host and port are all there is to check yet.
        return Decision::Allow { route: first };
    };
    if has_dot_segments(req.path) {
        return Decision::Deny(Deny::DotSegments);
    }
    let Some((idx, route)) =
        candidates.find(|(_, r)| r.matches.is_empty() || r.matches.iter().any(|m| match_passes(m, &req)))
    else {
        return Decision::Deny(Deny::NoMatch { method: req.method.to_string(), path: req.path.to_string() });
    };
    if !route.allow_doh && is_doh(&req) {
        return Decision::Deny(Deny::Doh);
    }
    Decision::Allow { route: idx }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every string over a small alphabet that matters to the dot-segment and authority
    /// parsers, up to `max` symbols.
    fn corpus(alphabet: &[&str], max: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last.iter().flat_map(|p| alphabet.iter().map(move |a| format!("{p}{a}"))).collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn dot_segments_match_the_replace_and_split_definition() {
        let reference = |path: &str| {
            let lower = path
                .to_ascii_lowercase()
                .replace("%2e", ".")
                .replace("%2f", "/")
                .replace("%5c", "/")
                .replace("%3b", ";")
                .replace('\\', "/");
            lower.split('/').map(|seg| seg.split(';').next().unwrap_or("")).any(|seg| seg == "." || seg == "..")
        };
        let alphabet =
            ["/", ".", "a", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", "%", "%2", "2e", "e", ";", "%3b", "%3B"];
        for p in corpus(&alphabet, 4) {
            assert_eq!(has_dot_segments(&p), reference(&p), "{p:?}");
        }
    }

    #[test]
    fn authority_check_matches_split_authority() {
        let reference = |a: &str, host: &str, port: u16| match split_authority(a) {
            Some((h, p)) => h == host && p.is_none_or(|p| p == port),
            None => false,
        };
        let alphabet = ["a", "A", ":", "443", "[", "]", "::1", "@", "x"];
        for a in corpus(&alphabet, 4) {
            for (host, port) in [("a", 443), ("aa", 443), ("::1", 443), ("a", 80), ("x", 443)] {
                assert_eq!(authority_is(&a, host, port), reference(&a, host, port), "{a:?} vs {host}:{port}");
            }
        }
    }

    fn routes(json: &str) -> Routes {
        Routes::parse(json.as_bytes(), Path::new("routes.json")).unwrap()
    }

    const R: &str = r#"{"version":1,"routes":[
        {"host":"api.example.com","matches":[{"paths":[{"type":"prefix","value":"/v1/"}],"methods":["GET","POST"],
          "headers":[{"name":"x-team","value":"core"}]}]},
        {"host":"*.wild.com","port":8443},
        {"host":"plain.com"},
        {"host":"10.0.0.1","port":443},
        {"host":"::1","port":443},
        {"host":"exact.com","matches":[{"paths":[{"type":"exact","value":"/only"}]}]},
        {"host":"doh.com","allow_doh":true},
        {"host":"multi.com","matches":[{"methods":["GET"]},{"paths":[{"type":"prefix","value":"/up"}],"methods":["PUT"]}]},
        {"host":"clear.com","scheme":"http"},
        {"host":"both.com","port":8080},
        {"host":"both.com","port":8080,"scheme":"http"}
    ]}"#;

    /// (method, path, headers)
    type Line = (&'static str, &'static str, Vec<(&'static str, &'static str)>);

    struct F {
        via: Via,
        host: &'static str,
        port: u16,
        sni: Option<&'static str>,
        auth: Vec<&'static str>,
        req: Option<Line>,
    }

    fn connect(host: &'static str, port: u16) -> F {
        F { via: Via::Connect, host, port, sni: None, auth: vec![], req: None }
    }

    fn req(host: &'static str, port: u16, method: &'static str, path: &'static str) -> F {
        F { via: Via::Tls, host, port, sni: None, auth: vec![], req: Some((method, path, vec![])) }
    }

    fn run(r: &Routes, f: &F) -> Decision {
        let mut headers = HeaderMap::new();
        if let Some((_, _, hs)) = &f.req {
            for (k, v) in hs {
                headers.append(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
            }
        }
        let request = f.req.as_ref().map(|(m, p, _)| RequestLine { method: m, path: p, headers: &headers });
        decide(r, &RequestFacts { via: f.via, host: f.host, port: f.port, sni: f.sni, authorities: &f.auth, request })
    }

    fn allowed(r: &Routes, f: &F) -> Option<usize> {
        match run(r, f) {
            Decision::Allow { route } => Some(route),
            Decision::Deny(_) => None,
        }
    }

    #[test]
    fn connect_stage_checks_host_and_port() {
        let r = routes(R);
        assert_eq!(allowed(&r, &connect("api.example.com", 443)), Some(0));
        assert_eq!(
            run(&r, &connect("api.example.com", 8443)),
            Decision::Deny(Deny::Port { host: "api.example.com".into(), port: 8443 })
        );
        assert_eq!(run(&r, &connect("evil.com", 443)), Decision::Deny(Deny::NoRoute { host: "evil.com".into() }));
        assert_eq!(allowed(&r, &connect("a.wild.com", 8443)), Some(1));
        assert_eq!(allowed(&r, &connect("a.b.wild.com", 8443)), Some(1));
        assert_eq!(allowed(&r, &connect("wild.com", 8443)), None, "wildcard needs at least one label");
        assert_eq!(allowed(&r, &connect("xwild.com", 8443)), None);
        assert_eq!(allowed(&r, &connect("a.wild.com", 443)), None);
        assert_eq!(allowed(&r, &connect("api.example.com.evil.com", 443)), None);
    }

    #[test]
    fn requests_only_match_routes_of_their_scheme() {
        let r = routes(R);
        let plain = |host: &'static str, port: u16| F { via: Via::PlainHttp, ..req(host, port, "GET", "/") };
        // An http route defaults to port 80 and takes cleartext requests only.
        assert_eq!(allowed(&r, &connect("clear.com", 80)), Some(8), "the CONNECT opens for either scheme");
        assert_eq!(allowed(&r, &plain("clear.com", 80)), Some(8));
        assert_eq!(
            run(&r, &req("clear.com", 80, "GET", "/")),
            Decision::Deny(Deny::Scheme { host: "clear.com".into(), port: 80, scheme: Scheme::Https })
        );
        assert_eq!(allowed(&r, &plain("clear.com", 443)), None);
        // An https route (the default) never takes a cleartext request, on any port.
        assert_eq!(allowed(&r, &req("plain.com", 443, "GET", "/")), Some(2));
        assert_eq!(
            run(&r, &plain("plain.com", 443)),
            Decision::Deny(Deny::Scheme { host: "plain.com".into(), port: 443, scheme: Scheme::Http })
        );
        assert!(matches!(run(&r, &plain("plain.com", 80)), Decision::Deny(Deny::Port { .. })));
        // Two routes for one host and port: each request gets the one of its scheme.
        assert_eq!(allowed(&r, &connect("both.com", 8080)), Some(9));
        assert_eq!(allowed(&r, &req("both.com", 8080, "GET", "/")), Some(9));
        assert_eq!(allowed(&r, &plain("both.com", 8080)), Some(10));
        assert_eq!(
            Deny::Scheme { host: "plain.com".into(), port: 443, scheme: Scheme::Http }.to_string(),
            "http is not allowed for plain.com:443 (its routes are https)"
        );
    }

    #[test]
    fn ip_literals_only_when_named() {
        let r = routes(R);
        assert_eq!(allowed(&r, &connect("10.0.0.1", 443)), Some(3));
        assert_eq!(allowed(&r, &connect("::1", 443)), Some(4));
        assert_eq!(run(&r, &connect("10.0.0.2", 443)), Decision::Deny(Deny::IpLiteral("10.0.0.2".into())));
        for h in ["127.1", "2130706433", "0x7f.0.0.1", "10.0.1"] {
            assert!(matches!(run(&r, &connect(h, 443)), Decision::Deny(Deny::IpLiteral(_))), "{h}");
        }
        assert!(matches!(run(&r, &connect("bad host", 443)), Decision::Deny(Deny::BadHost(_))));
        assert!(matches!(run(&r, &connect("", 443)), Decision::Deny(Deny::BadHost(_))));
        assert!(matches!(run(&r, &connect("api.example.com.", 443)), Decision::Deny(Deny::BadHost(_))));
    }

    #[test]
    fn sni_and_authority_must_name_the_target() {
        let r = routes(R);
        let mut f = req("a.wild.com", 8443, "GET", "/");
        f.sni = Some("A.wild.com");
        assert_eq!(allowed(&r, &f), Some(1), "case-insensitive");
        f.sni = Some("b.wild.com");
        assert!(matches!(run(&r, &f), Decision::Deny(Deny::SniMismatch { .. })));
        f.sni = None;
        for ok in ["a.wild.com", "a.wild.com:8443", "A.WILD.COM"] {
            f.auth = vec![ok];
            assert_eq!(allowed(&r, &f), Some(1), "{ok}");
        }
        for bad in ["b.wild.com", "a.wild.com:443", "a.wild.com:x", "evil.com", "a.wild.com@evil.com"] {
            f.auth = vec!["a.wild.com", bad];
            assert!(matches!(run(&r, &f), Decision::Deny(Deny::AuthorityMismatch { .. })), "{bad}");
        }
        let mut v6 = connect("::1", 443);
        v6.auth = vec!["[::1]:443"];
        assert_eq!(allowed(&r, &v6), Some(4));
        v6.auth = vec!["[::2]"];
        assert!(matches!(run(&r, &v6), Decision::Deny(Deny::AuthorityMismatch { .. })));
    }

    #[test]
    fn matches_paths_methods_headers() {
        let r = routes(R);
        let mut f = req("api.example.com", 443, "GET", "/v1/x");
        assert!(matches!(run(&r, &f), Decision::Deny(Deny::NoMatch { .. })), "header x-team missing");
        f.req = Some(("GET", "/v1/x", vec![("x-team", "core")]));
        assert_eq!(allowed(&r, &f), Some(0));
        f.req = Some(("POST", "/v1/", vec![("x-team", "core")]));
        assert_eq!(allowed(&r, &f), Some(0));
        f.req = Some(("DELETE", "/v1/x", vec![("x-team", "core")]));
        assert_eq!(allowed(&r, &f), None, "method");
        f.req = Some(("GET", "/v2/x", vec![("x-team", "core")]));
        assert_eq!(allowed(&r, &f), None, "path");
        f.req = Some(("GET", "/v1", vec![("x-team", "core")]));
        assert_eq!(allowed(&r, &f), None, "prefix is literal");
        f.req = Some(("GET", "/v1/x", vec![("x-team", "other")]));
        assert_eq!(allowed(&r, &f), None, "header value");
        assert_eq!(allowed(&r, &req("exact.com", 443, "GET", "/only")), Some(5));
        assert_eq!(allowed(&r, &req("exact.com", 443, "GET", "/only/")), None);
        assert_eq!(allowed(&r, &req("multi.com", 443, "GET", "/a")), Some(7));
        assert_eq!(allowed(&r, &req("multi.com", 443, "PUT", "/up/1")), Some(7));
        assert_eq!(allowed(&r, &req("multi.com", 443, "PUT", "/a")), None);
    }

    #[test]
    fn dot_segments_denied() {
        let r = routes(R);
        for p in [
            "/v1/../admin",
            "/v1/./x",
            "/v1/%2e%2e/admin",
            "/v1/%2E./x",
            "/v1/..%2fadmin",
            "/v1\\..\\x",
            "/v1/..;/admin",
            "/v1/.;x=1/a",
            "/v1/..%3B/admin",
            "/v1/%2e%2e;jsessionid=0/admin",
        ] {
            let f = F { req: Some(("GET", p, vec![("x-team", "core")])), ..req("api.example.com", 443, "GET", p) };
            assert_eq!(run(&r, &f), Decision::Deny(Deny::DotSegments), "{p}");
        }
        assert_eq!(allowed(&r, &req("plain.com", 443, "GET", "/a..b/.x/")), Some(2), "dots inside names are fine");
        assert_eq!(allowed(&r, &req("plain.com", 443, "GET", "/a;..//b;.")), Some(2), "dots in parameters are fine");
        assert_eq!(allowed(&r, &req("a.wild.com", 8443, "GET", "/a..b/.x/")), Some(1));
    }

    #[test]
    fn doh_denied_unless_allowed() {
        let r = routes(R);
        for f in [
            req("a.wild.com", 8443, "GET", "/dns-query"),
            req("a.wild.com", 8443, "GET", "/x/DNS-QUERY"),
            F {
                req: Some(("POST", "/q", vec![("content-type", "application/dns-message")])),
                ..connect("a.wild.com", 8443)
            },
            F {
                req: Some(("GET", "/resolve", vec![("accept", "application/dns-json")])),
                ..connect("a.wild.com", 8443)
            },
        ] {
            assert_eq!(run(&r, &f), Decision::Deny(Deny::Doh));
        }
        assert_eq!(allowed(&r, &req("doh.com", 443, "GET", "/dns-query")), Some(6));
    }

    #[test]
    fn empty_routes_deny_everything() {
        let r = routes(r#"{"version":1,"routes":[]}"#);
        assert!(matches!(run(&r, &connect("a.com", 443)), Decision::Deny(Deny::NoRoute { .. })));
        assert!(matches!(run(&r, &connect("1.2.3.4", 443)), Decision::Deny(Deny::IpLiteral(_))));
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(Deny::NoRoute { host: "x.com".into() }.to_string(), "host x.com is not in the bottle's routes");
        assert_eq!(Deny::Doh.to_string(), "DNS-over-HTTPS is not allowed on this route");
    }

    #[test]
    fn split_authority_forms() {
        assert_eq!(split_authority("A.com:80"), Some(("a.com".into(), Some(80))));
        assert_eq!(split_authority("a.com"), Some(("a.com".into(), None)));
        assert_eq!(split_authority("[::1]:443"), Some(("::1".into(), Some(443))));
        assert_eq!(split_authority("::1"), Some(("::1".into(), None)));
        assert_eq!(split_authority("a.com:x"), None);
        assert_eq!(split_authority("[::1]x"), None);
    }
}
