//! `routes.json`: the bottle's egress allowlist (docs/interfaces.md, "routes.json").

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{FormatError, Problems, is_dns_name, is_env_name, parse_json, read_file};

/// The whole routes file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    pub version: u32,
    /// 0 off, 1 deny/redact/hold, 2 every request.
    #[serde(default = "default_log")]
    pub log: u8,
    pub routes: Vec<Route>,
}

fn default_log() -> u8 {
    1
}

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact host, `*.example.com` (one or more labels under it), or an IP literal.
    pub host: String,
    /// Default: 443 for CONNECT, 80 for plain http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// A request passes if any entry passes; absent or empty = every request to host:port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
    #[serde(default, skip_serializing_if = "Dlp::is_default")]
    pub dlp: Dlp,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_doh: bool,
    /// What the upstream speaks: `https` (reached by the agent through `CONNECT` and TLS) or
    /// `http` (absolute-form `http://`, or plain HTTP inside `CONNECT host:80`). A request in
    /// the other scheme does not match the route.
    #[serde(default, skip_serializing_if = "Scheme::is_https")]
    pub scheme: Scheme,
    /// On an `http` route, inject `auth`'s credential anyway (it crosses the network in clear
    /// text). Without it an `http` route injects nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_auth: bool,
}

/// A route's upstream scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

impl Scheme {
    fn is_https(&self) -> bool {
        *self == Scheme::Https
    }

    /// The port a route of this scheme uses when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
        }
    }
}

/// Token injection for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default = "default_auth_header")]
    pub header: String,
    /// `Bearer` unless given; empty means the header value is the bare token.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The env var (in the proxy's environment) that holds the token.
    pub token_env: String,
}

fn default_auth_header() -> String {
    "Authorization".into()
}

fn default_scheme() -> String {
    "Bearer".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Absent or empty = any path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    /// Absent = any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub kind: PathMatchKind,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatchKind {
    Prefix,
    Exact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// DLP settings of a route: `false` turns it off; an object configures it; absent = on with
/// `known_secrets` + `token_patterns`, action `block`, mode `strict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dlp {
    Off,
    On(DlpConfig),
}

impl Default for Dlp {
    fn default() -> Self {
        Dlp::On(DlpConfig::default())
    }
}

impl Dlp {
    fn is_default(&self) -> bool {
        *self == Dlp::default()
    }

    /// The active configuration, `None` when DLP is off.
    pub fn config(&self) -> Option<&DlpConfig> {
        match self {
            Dlp::Off => None,
            Dlp::On(c) => Some(c),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    #[serde(default = "default_outbound")]
    pub outbound: Vec<DlpDetector>,
    #[serde(default)]
    pub on_match: DlpAction,
    #[serde(default, skip_serializing_if = "DlpMode::is_strict")]
    pub mode: DlpMode,
}

impl Default for DlpConfig {
    fn default() -> Self {
        DlpConfig { outbound: default_outbound(), on_match: DlpAction::Block, mode: DlpMode::Strict }
    }
}

/// How strictly `token_patterns` reads what leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpMode {
    /// Anything shaped like a credential, whatever the rules' allowlists excuse (documentation
    /// examples, placeholders), plus payment data that passes its checksum (card numbers, IBANs,
    /// Bitcoin addresses and keys). For routes that should carry no credential at all.
    #[default]
    Strict,
    /// The rules as the git gate reads them: allowlisted examples and placeholders, and
    /// low-confidence findings, are excused. For the model provider's route, through which the
    /// repository's own content legitimately flows.
    Standard,
}

impl DlpMode {
    fn is_strict(&self) -> bool {
        *self == DlpMode::Strict
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DlpMode::Strict => "strict",
            DlpMode::Standard => "standard",
        }
    }
}

fn default_outbound() -> Vec<DlpDetector> {
    vec![DlpDetector::KnownSecrets, DlpDetector::TokenPatterns]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpDetector {
    KnownSecrets,
    TokenPatterns,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpAction {
    #[default]
    Block,
    Redact,
    Supervise,
}

impl Serialize for Dlp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dlp::Off => s.serialize_bool(false),
            Dlp::On(c) => c.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Dlp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Config(serde_json::Map<String, serde_json::Value>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected false, true or an object {\"outbound\": [...], \"on_match\": ..., \"mode\": ...}",
            )
        })? {
            Raw::Bool(false) => Ok(Dlp::Off),
            Raw::Bool(true) => Ok(Dlp::default()),
            Raw::Config(map) => {
                DlpConfig::deserialize(serde_json::Value::Object(map)).map(Dlp::On).map_err(serde::de::Error::custom)
            }
        }
    }
}

/// How a route's host is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern<'a> {
    Exact(&'a str),
    /// `*.example.com`: holds `example.com`; matches one or more labels under it.
    Wildcard(&'a str),
    Ip(IpAddr),
}

impl Route {
    pub fn host_pattern(&self) -> HostPattern<'_> {
        if let Some(rest) = self.host.strip_prefix("*.") {
            HostPattern::Wildcard(rest)
        } else if let Ok(ip) = self.host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else {
            HostPattern::Exact(&self.host)
        }
    }
}

impl Routes {
    /// Reads and validates a routes file.
    pub fn load(path: &Path) -> Result<Routes, FormatError> {
        Self::parse(&read_file(path)?, path)
    }

    /// Parses and validates routes JSON; `file` names it in errors.
    pub fn parse(bytes: &[u8], file: &Path) -> Result<Routes, FormatError> {
        let routes: Routes = parse_json(bytes, file)?;
        routes.validate(file)
    }

    /// Checks every value, reporting all problems at once.
    pub fn validate(self, file: &Path) -> Result<Routes, FormatError> {
        let mut p = Problems::default();
        if self.version != 1 {
            p.push("version", format!("unsupported version {} (this build reads version 1)", self.version));
        }
        if self.log > 2 {
            p.push("log", format!("must be 0, 1 or 2, not {}", self.log));
        }
        for (i, r) in self.routes.iter().enumerate() {
            let k = format!("routes[{i}]");
            let host = r.host.to_ascii_lowercase();
            if host != r.host {
                p.push(format!("{k}.host"), format!("{:?} must be lowercase", r.host));
            }
            match r.host_pattern() {
                HostPattern::Wildcard(rest) => {
                    if !is_dns_name(rest) || !rest.contains('.') {
                        p.push(
                            format!("{k}.host"),
                            format!(
                                "{:?}: a wildcard must be '*.' followed by a domain with at least two labels",
                                r.host
                            ),
                        );
                    }
                }
                HostPattern::Exact(h) => {
                    if !is_dns_name(h) {
                        p.push(format!("{k}.host"), format!("{:?} is not a valid host name or IP address", r.host));
                    }
                }
                HostPattern::Ip(_) => {}
            }
            if r.port == Some(0) {
                p.push(format!("{k}.port"), "must be between 1 and 65535");
            }
            if r.insecure_auth && r.scheme != Scheme::Http {
                p.push(format!("{k}.insecure_auth"), "only means something on a route with \"scheme\": \"http\"");
            }
            if let Some(a) = &r.auth {
                if !is_env_name(&a.token_env) {
                    p.push(
                        format!("{k}.auth.token_env"),
                        format!("{:?} is not an environment variable name", a.token_env),
                    );
                }
                if !is_header_name(&a.header) {
                    p.push(format!("{k}.auth.header"), format!("{:?} is not a valid header name", a.header));
                }
                if a.scheme.contains(|c: char| c.is_whitespace() || c.is_control()) {
                    p.push(format!("{k}.auth.scheme"), format!("{:?} must be one token without spaces", a.scheme));
                }
            }
            for (j, m) in r.matches.iter().enumerate() {
                let mk = format!("{k}.matches[{j}]");
                for (n, path) in m.paths.iter().enumerate() {
                    if !path.value.starts_with('/') {
                        p.push(format!("{mk}.paths[{n}].value"), format!("{:?} must start with '/'", path.value));
                    }
                }
                if let Some(methods) = &m.methods {
                    if methods.is_empty() {
                        p.push(
                            format!("{mk}.methods"),
                            "an empty list allows nothing; omit the key to allow every method",
                        );
                    }
                    for (n, method) in methods.iter().enumerate() {
                        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                            p.push(
                                format!("{mk}.methods[{n}]"),
                                format!("{method:?} is not an upper-case HTTP method"),
                            );
                        }
                    }
                }
                for (n, h) in m.headers.iter().enumerate() {
                    if !is_header_name(&h.name) {
                        p.push(format!("{mk}.headers[{n}].name"), format!("{:?} is not a valid header name", h.name));
                    }
                }
            }
            if let Dlp::On(c) = &r.dlp
                && c.outbound.is_empty()
            {
                p.push(format!("{k}.dlp.outbound"), "empty; use \"dlp\": false to turn DLP off for this route");
            }
        }
        p.into_result(file, self)
    }

    /// Every env var named by a route's `auth.token_env`, deduplicated, in order.
    pub fn token_envs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.routes {
            if let Some(a) = &r.auth
                && !out.contains(&a.token_env.as_str())
            {
                out.push(&a.token_env);
            }
        }
        out
    }
}

/// RFC 9110 token characters.
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "version": 1,
      "log": 1,
      "routes": [
        {
          "host": "api.example.com",
          "port": 443,
          "auth": {"header": "Authorization", "scheme": "Bearer", "token_env": "EGRESS_TOKEN_0"},
          "matches": [
            {"paths": [{"type": "prefix", "value": "/v1/"}], "methods": ["GET", "POST"],
             "headers": [{"name": "x-team", "value": "core"}]}
          ],
          "scheme": "https",
          "dlp": {"outbound": ["known_secrets", "token_patterns"], "on_match": "block", "mode": "strict"},
          "allow_doh": false
        }
      ]
    }"#;

    fn parse(s: &str) -> Result<Routes, FormatError> {
        Routes::parse(s.as_bytes(), Path::new("routes.json"))
    }

    #[test]
    fn contract_example_parses_and_round_trips() {
        let r = parse(FULL).unwrap();
        assert_eq!(r.routes[0].auth.as_ref().unwrap().token_env, "EGRESS_TOKEN_0");
        assert_eq!(r.routes[0].matches[0].paths[0].kind, PathMatchKind::Prefix);
        let again = parse(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(r, again);
    }

    #[test]
    fn defaults() {
        let r = parse(r#"{"version":1,"routes":[{"host":"example.com","auth":{"token_env":"T"}}]}"#).unwrap();
        assert_eq!(r.log, 1);
        let route = &r.routes[0];
        assert_eq!(route.port, None);
        assert_eq!(route.dlp, Dlp::On(DlpConfig::default()));
        assert_eq!(route.dlp.config().unwrap().mode, DlpMode::Strict);
        assert_eq!((route.scheme, route.insecure_auth), (Scheme::Https, false));
        let a = route.auth.as_ref().unwrap();
        assert_eq!((a.header.as_str(), a.scheme.as_str()), ("Authorization", "Bearer"));
        assert!(!route.allow_doh);
    }

    #[test]
    fn dlp_forms() {
        let off = parse(r#"{"version":1,"routes":[{"host":"a.com","dlp":false}]}"#).unwrap();
        assert_eq!(off.routes[0].dlp, Dlp::Off);
        assert_eq!(serde_json::to_value(&off).unwrap()["routes"][0]["dlp"], serde_json::json!(false));
        let redact = parse(r#"{"version":1,"routes":[{"host":"a.com","dlp":{"on_match":"redact"}}]}"#).unwrap();
        assert_eq!(redact.routes[0].dlp.config().unwrap().on_match, DlpAction::Redact);
        assert_eq!(redact.routes[0].dlp.config().unwrap().outbound.len(), 2);
        let standard = parse(r#"{"version":1,"routes":[{"host":"a.com","dlp":{"mode":"standard"}}]}"#).unwrap();
        assert_eq!(standard.routes[0].dlp.config().unwrap().mode, DlpMode::Standard);
        assert_eq!(serde_json::to_value(&standard).unwrap()["routes"][0]["dlp"]["mode"], "standard");
    }

    #[test]
    fn schemes() {
        let r = parse(
            r#"{"version":1,"routes":[{"host":"a.com","scheme":"http","insecure_auth":true,"auth":{"token_env":"T"}},
                {"host":"b.com","scheme":"http"},{"host":"c.com"}]}"#,
        )
        .unwrap();
        assert_eq!((r.routes[0].scheme, r.routes[0].insecure_auth), (Scheme::Http, true));
        assert_eq!((r.routes[1].scheme, r.routes[1].insecure_auth), (Scheme::Http, false));
        assert_eq!(r.routes[2].scheme, Scheme::Https);
        assert_eq!((Scheme::Https.default_port(), Scheme::Http.default_port()), (443, 80));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["routes"][0]["scheme"], "http");
        assert!(json["routes"][2].get("scheme").is_none(), "the default is left out");
        assert_eq!(parse(&json.to_string()).unwrap(), r);
    }

    #[test]
    fn host_patterns() {
        let r = parse(
            r#"{"version":1,"routes":[{"host":"*.example.com"},{"host":"10.0.0.1"},{"host":"[::1]"},{"host":"a.b"}]}"#,
        )
        .unwrap();
        assert_eq!(r.routes[0].host_pattern(), HostPattern::Wildcard("example.com"));
        assert!(matches!(r.routes[1].host_pattern(), HostPattern::Ip(_)));
        assert!(matches!(r.routes[2].host_pattern(), HostPattern::Ip(_)));
        assert_eq!(r.routes[3].host_pattern(), HostPattern::Exact("a.b"));
    }

    /// Table: bad document → (expected key path, expected fragment of the message).
    #[test]
    fn bad_input_names_key_and_problem() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"version":1,"routes":[],"bogus":1}"#, "bogus", "unknown field `bogus`"),
            (r#"{"version":1,"routes":[{"host":"a.com","prot":1}]}"#, "routes[0].prot", "unknown field `prot`"),
            (r#"{"version":2,"routes":[]}"#, "version", "unsupported version 2"),
            (r#"{"version":1,"log":7,"routes":[]}"#, "log", "0, 1 or 2"),
            (r#"{"version":1,"routes":[{"host":"a.com","port":0}]}"#, "routes[0].port", "between 1 and 65535"),
            (r#"{"version":1,"routes":[{"host":"a.com","port":70000}]}"#, "routes[0].port", "invalid value"),
            (r#"{"version":1,"routes":[{"host":"bad host"}]}"#, "routes[0].host", "not a valid host"),
            (r#"{"version":1,"routes":[{"host":"*.com"}]}"#, "routes[0].host", "wildcard"),
            (r#"{"version":1,"routes":[{"host":"A.com"}]}"#, "routes[0].host", "lowercase"),
            (
                r#"{"version":1,"routes":[{"host":"a.com","auth":{"token_env":"1X"}}]}"#,
                "routes[0].auth.token_env",
                "environment variable",
            ),
            (r#"{"version":1,"routes":[{"host":"a.com","auth":{}}]}"#, "routes[0].auth", "missing field `token_env`"),
            (
                r#"{"version":1,"routes":[{"host":"a.com","matches":[{"paths":[{"type":"prefix","value":"v1"}]}]}]}"#,
                "routes[0].matches[0].paths[0].value",
                "start with '/'",
            ),
            (
                r#"{"version":1,"routes":[{"host":"a.com","matches":[{"paths":[{"type":"regex","value":"/"}]}]}]}"#,
                "routes[0].matches[0].paths[0].type",
                "unknown variant `regex`",
            ),
            (
                r#"{"version":1,"routes":[{"host":"a.com","matches":[{"methods":["get"]}]}]}"#,
                "routes[0].matches[0].methods[0]",
                "upper-case",
            ),
            (
                r#"{"version":1,"routes":[{"host":"a.com","matches":[{"methods":[]}]}]}"#,
                "routes[0].matches[0].methods",
                "allows nothing",
            ),
            (
                r#"{"version":1,"routes":[{"host":"a.com","dlp":{"on_match":"explode"}}]}"#,
                "routes[0].dlp",
                "unknown variant `explode`",
            ),
            (
                r#"{"version":1,"routes":[{"host":"a.com","dlp":"yes"}]}"#,
                "routes[0].dlp",
                "expected false, true or an object",
            ),
            (r#"{"version":1,"routes":[{"host":"a.com","dlp":{"outbound":[]}}]}"#, "routes[0].dlp.outbound", "empty"),
            (
                r#"{"version":1,"routes":[{"host":"a.com","dlp":{"mode":"lenient"}}]}"#,
                "routes[0].dlp",
                "unknown variant `lenient`",
            ),
            (
                r#"{"version":1,"routes":[{"host":"a.com","dlp":{"strict":true}}]}"#,
                "routes[0].dlp",
                "unknown field `strict`",
            ),
            (
                r#"{"version":1,"routes":[{"host":"a.com","scheme":"ftp"}]}"#,
                "routes[0].scheme",
                "unknown variant `ftp`",
            ),
            (r#"{"version":1,"routes":[{"host":"a.com","insecure_auth":true}]}"#, "routes[0].insecure_auth", "scheme"),
            (r#"{"version":1,"routes":[{"host":"a.com"}"#, "routes", "EOF"),
        ];
        for (doc, key, fragment) in cases {
            let err = parse(doc).unwrap_err();
            let p = &err.problems[0];
            assert_eq!(&p.key, key, "{doc}: {err}");
            assert!(p.message.contains(fragment), "{doc}: {err}");
            assert!(err.to_string().starts_with("routes.json"), "{err}");
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = parse(r#"{"version":3,"routes":[{"host":"a b","port":0}]}"#).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = parse("{\n\"version\": 1,\n\"routes\": [,]\n}").unwrap_err();
        assert_eq!(err.problems[0].line, Some(3), "{err}");
        assert!(err.to_string().starts_with("routes.json:3"), "{err}");
    }
}
