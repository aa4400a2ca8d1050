//! The five MCP tools as data: their argument types (which also give the JSON schemas the model
//! sees), the descriptions written for a model, and the validation that turns raw arguments
//! into what is filed in the queue. Pure functions, no I/O — the server only plumbs.
//!
//! [`proposed_route`] is shared with the operator's side: it turns a `request_egress` request's
//! arguments (as filed, or as the operator modified them) into the route appended to the
//! bottle's routes.json.

use std::path::Path;

use common::formats::Routes;
use common::formats::routes::{Match, PathMatch, PathMatchKind, Route};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const ASK_OPERATOR: &str = "ask_operator";
pub const REQUEST_EGRESS: &str = "request_egress";
pub const REQUEST_CAPABILITY: &str = "request_capability";
pub const LIST_EGRESS_ROUTES: &str = "list_egress_routes";
pub const CHECK_REQUEST: &str = "check_request";

/// Longest free-text argument (question, context, reason, capability) in characters.
pub const MAX_TEXT: usize = 8192;
/// Most methods or paths one egress request may name.
pub const MAX_LIST: usize = 32;

pub const ASK_OPERATOR_DESCRIPTION: &str = "Ask the human operator who runs this sandbox a question and wait for the answer. \
Use it when you are blocked on a decision only a human can make (ambiguous requirements, a risky or irreversible step). \
The answer arrives in `notes`. If the operator does not answer in time the result is {\"status\":\"pending\",\"id\":...}: \
continue with other work and call check_request with that id later.";

pub const REQUEST_EGRESS_DESCRIPTION: &str = "Ask the operator to let this sandbox reach a network host that is currently blocked \
(requests to hosts not on the allowlist fail with 403 'bot-bottle egress: blocked'). Name the exact host (e.g. 'api.github.com', \
or '*.example.com' for every subdomain), the port (default 443 for HTTPS), optionally the HTTP methods and URL path prefixes you need, \
and why. Status 'approved' or 'modified' means the route is live within a second (a 'modified' answer carries the route as granted in \
`arguments`); 'rejected' means do not retry the same request. 'pending' means no answer yet: call check_request with the id later.";

pub const REQUEST_CAPABILITY_DESCRIPTION: &str = "Ask the operator for a capability the sandbox does not give you (for example \
'push to the release branch', 'install system packages', 'a GPU'), with the reason. The operator's decision and notes are \
recorded and returned; 'pending' means no answer yet: call check_request with the id later.";

pub const LIST_EGRESS_ROUTES_DESCRIPTION: &str = "List the network routes this sandbox may use now: host, port, and any method/path \
restrictions. Check here before calling request_egress. Credentials are injected by the proxy and never shown.";

pub const CHECK_REQUEST_DESCRIPTION: &str = "Get the status of an earlier request by the id a tool returned with status 'pending'. \
Returns 'pending' until the operator answers, then 'approved', 'modified' or 'rejected' with the operator's notes.";

/// Arguments of `ask_operator`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskOperator {
    /// The question for the operator, answerable in a sentence or two.
    pub question: String,
    /// Optional background the operator needs: what you are doing and what you already tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Arguments of `request_egress`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestEgress {
    /// Host name to allow, lowercase DNS name like 'api.example.com', or '*.example.com' for every subdomain.
    pub host: String,
    /// TCP port, 1-65535. Omit for the default (443 for HTTPS, 80 for plain HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u64>,
    /// HTTP methods needed, e.g. ["GET"]. Omit to ask for every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// URL path prefixes needed, each starting with '/', e.g. ["/v1/"]. Omit to ask for every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Why you need this host: what you will fetch or send there.
    pub reason: String,
}

/// Arguments of `request_capability`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestCapability {
    /// The capability you need, in a few words.
    pub capability: String,
    /// Why you need it.
    pub reason: String,
}

/// Arguments of `list_egress_routes` (none).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEgressRoutes {}

/// Arguments of `check_request`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The id from an earlier result with status 'pending'.
    pub id: String,
}

/// What is wrong with a tool call's arguments, in words for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid arguments for {tool}: {message}")]
pub struct InvalidArguments {
    pub tool: &'static str,
    pub message: String,
}

fn invalid(tool: &'static str, message: impl Into<String>) -> InvalidArguments {
    InvalidArguments { tool, message: message.into() }
}

/// Deserializes a tool's arguments (absent = `{}`), with serde's words for what is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(
    tool: &'static str,
    args: Option<Map<String, Value>>,
) -> Result<T, InvalidArguments> {
    serde_json::from_value(Value::Object(args.unwrap_or_default())).map_err(|e| invalid(tool, e.to_string()))
}

fn text(tool: &'static str, key: &str, value: &str, required: bool) -> Result<(), InvalidArguments> {
    if required && value.trim().is_empty() {
        return Err(invalid(tool, format!("`{key}` must not be empty")));
    }
    if value.chars().count() > MAX_TEXT {
        return Err(invalid(tool, format!("`{key}` is longer than {MAX_TEXT} characters")));
    }
    Ok(())
}

impl AskOperator {
    pub fn validate(self) -> Result<AskOperator, InvalidArguments> {
        text(ASK_OPERATOR, "question", &self.question, true)?;
        if let Some(c) = &self.context {
            text(ASK_OPERATOR, "context", c, false)?;
        }
        Ok(self)
    }
}

impl RequestCapability {
    pub fn validate(self) -> Result<RequestCapability, InvalidArguments> {
        text(REQUEST_CAPABILITY, "capability", &self.capability, true)?;
        text(REQUEST_CAPABILITY, "reason", &self.reason, true)?;
        Ok(self)
    }
}

impl RequestEgress {
    /// Checks and normalizes (host lowercased, methods upper-cased) the request, and proves
    /// that the route it asks for would be a valid routes.json entry.
    pub fn validate(mut self) -> Result<RequestEgress, InvalidArguments> {
        const T: &str = REQUEST_EGRESS;
        text(T, "reason", &self.reason, true)?;
        self.host = self.host.trim().to_ascii_lowercase();
        let bare = self.host.strip_prefix("*.").unwrap_or(&self.host);
        let is_ip = bare.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok();
        if is_ip {
            return Err(invalid(
                T,
                format!("host {:?} is an IP address; ask for the DNS name you connect to", self.host),
            ));
        }
        if !common::formats::is_dns_name(bare) || !bare.contains('.') {
            return Err(invalid(
                T,
                format!(
                    "host {:?} is not a DNS name like 'api.example.com' (or '*.example.com' for its subdomains)",
                    self.host
                ),
            ));
        }
        if let Some(port) = self.port
            && !(1..=65535).contains(&port)
        {
            return Err(invalid(T, format!("port {port} is not between 1 and 65535")));
        }
        if let Some(methods) = &mut self.methods {
            if methods.is_empty() {
                return Err(invalid(T, "`methods` is empty; omit it to ask for every method"));
            }
            if methods.len() > MAX_LIST {
                return Err(invalid(T, format!("`methods` names more than {MAX_LIST} methods")));
            }
            for m in methods.iter_mut() {
                *m = m.trim().to_ascii_uppercase();
                if m.is_empty() || m.len() > 32 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(invalid(T, format!("method {m:?} is not an HTTP method like GET or POST")));
                }
            }
        }
        if let Some(paths) = &self.paths {
            if paths.is_empty() {
                return Err(invalid(T, "`paths` is empty; omit it to ask for every path"));
            }
            if paths.len() > MAX_LIST {
                return Err(invalid(T, format!("`paths` names more than {MAX_LIST} paths")));
            }
            for p in paths {
                if !p.starts_with('/') || p.len() > 2048 || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid(T, format!("path {p:?} must start with '/' and contain no spaces")));
                }
            }
        }
        self.route().map_err(|e| invalid(T, e))?;
        Ok(self)
    }

    /// The routes.json entry this request asks for: host, port, and one `matches` entry with
    /// the path prefixes and methods (none when neither is given). No auth, default DLP.
    pub fn route(&self) -> Result<Route, String> {
        let port = match self.port {
            None => None,
            Some(p) => Some(u16::try_from(p).map_err(|_| format!("port {p} is not between 1 and 65535"))?),
        };
        let matches = if self.methods.is_none() && self.paths.is_none() {
            Vec::new()
        } else {
            vec![Match {
                paths: self
                    .paths
                    .iter()
                    .flatten()
                    .map(|p| PathMatch { kind: PathMatchKind::Prefix, value: p.clone() })
                    .collect(),
                methods: self.methods.clone(),
                headers: Vec::new(),
            }]
        };
        let route = Route {
            host: self.host.clone(),
            port,
            auth: None,
            matches,
            dlp: Default::default(),
            allow_doh: false,
            scheme: Default::default(),
            insecure_auth: false,
        };
        let probe = Routes { version: 1, log: 1, routes: vec![route.clone()] };
        probe.validate(Path::new("request_egress")).map_err(|e| e.to_string())?;
        Ok(route)
    }
}

/// The route a `request_egress` request asks for, from its arguments as filed or as the operator
/// modified them; validated exactly as the tool validates the agent's arguments.
pub fn proposed_route(arguments: &Value) -> Result<Route, InvalidArguments> {
    let args = match arguments {
        Value::Object(m) => m.clone(),
        _ => return Err(invalid(REQUEST_EGRESS, "arguments must be a JSON object")),
    };
    let req: RequestEgress = parse(REQUEST_EGRESS, Some(args))?;
    let req = req.validate()?;
    req.route().map_err(|e| invalid(REQUEST_EGRESS, e))
}

/// Validates the arguments the operator gives with a modified answer: for the agent's own tools
/// they must still be valid arguments of that tool; other tools' arguments must be an object.
pub fn validate_modified(tool: &str, arguments: &Value) -> Result<Value, InvalidArguments> {
    let Value::Object(map) = arguments else {
        return Err(InvalidArguments { tool: "modified answer", message: "arguments must be a JSON object".into() });
    };
    let map = Some(map.clone());
    let v = match tool {
        ASK_OPERATOR => to_value(parse::<AskOperator>(ASK_OPERATOR, map)?.validate()?),
        REQUEST_EGRESS => to_value(parse::<RequestEgress>(REQUEST_EGRESS, map)?.validate()?),
        REQUEST_CAPABILITY => to_value(parse::<RequestCapability>(REQUEST_CAPABILITY, map)?.validate()?),
        _ => arguments.clone(),
    };
    Ok(v)
}

pub(crate) fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A route as `list_egress_routes` shows it: never auth (no token names or values), never DLP
/// internals — just where the agent may go.
pub fn public_routes(routes: &Routes) -> Value {
    let list: Vec<Value> = routes
        .routes
        .iter()
        .map(|r| {
            let mut o = Map::new();
            o.insert("host".into(), Value::String(r.host.clone()));
            o.insert("port".into(), r.port.map_or(Value::String("default (443 https, 80 http)".into()), |p| p.into()));
            if !r.matches.is_empty() {
                o.insert("matches".into(), serde_json::to_value(&r.matches).unwrap_or(Value::Null));
            }
            if r.auth.is_some() {
                o.insert("credentials".into(), Value::String("injected by the proxy".into()));
            }
            Value::Object(o)
        })
        .collect();
    serde_json::json!({ "routes": list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Option<Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    fn egress(v: Value) -> Result<RequestEgress, InvalidArguments> {
        parse::<RequestEgress>(REQUEST_EGRESS, obj(v))?.validate()
    }

    #[test]
    fn egress_normalizes_and_builds_route() {
        let r = egress(json!({"host": "API.Example.com", "port": 8443, "methods": ["get", "POST"], "paths": ["/v1/"], "reason": "docs"}))
            .unwrap();
        assert_eq!(r.host, "api.example.com");
        assert_eq!(r.methods.as_deref(), Some(&["GET".to_string(), "POST".to_string()][..]));
        let route = r.route().unwrap();
        assert_eq!(route.port, Some(8443));
        assert_eq!(route.matches[0].paths[0].value, "/v1/");
        assert!(route.auth.is_none());
        let bare = egress(json!({"host": "*.pypi.org", "reason": "pip"})).unwrap().route().unwrap();
        assert!(bare.matches.is_empty() && bare.port.is_none());
        // What the operator side gets back from a filed request is the same route.
        assert_eq!(proposed_route(&to_value(r)).unwrap(), route);
    }

    /// Table: bad arguments → a fragment of the message the model sees.
    #[test]
    fn egress_errors_say_what_is_wrong() {
        let cases = [
            (json!({"host": "not a host", "reason": "x"}), "not a DNS name"),
            (json!({"host": "localhost", "reason": "x"}), "not a DNS name"),
            (json!({"host": "10.0.0.1", "reason": "x"}), "IP address"),
            (json!({"host": "a.com", "port": 0, "reason": "x"}), "port 0 is not between 1 and 65535"),
            (json!({"host": "a.com", "port": 70000, "reason": "x"}), "port 70000"),
            (json!({"host": "a.com", "port": "443", "reason": "x"}), "invalid type"),
            (json!({"host": "a.com", "methods": ["GE T"], "reason": "x"}), "not an HTTP method"),
            (json!({"host": "a.com", "methods": [], "reason": "x"}), "`methods` is empty"),
            (json!({"host": "a.com", "paths": ["v1"], "reason": "x"}), "must start with '/'"),
            (json!({"host": "a.com", "reason": " "}), "`reason` must not be empty"),
            (json!({"host": "a.com"}), "missing field `reason`"),
            (json!({"host": "a.com", "reason": "x", "token": "t"}), "unknown field `token`"),
            (json!({"host": "*.com", "reason": "x"}), "not a DNS name"),
        ];
        for (args, frag) in cases {
            let err = egress(args.clone()).unwrap_err();
            assert!(err.to_string().contains(frag), "{args}: {err}");
            assert!(err.to_string().starts_with("invalid arguments for request_egress"), "{err}");
        }
    }

    #[test]
    fn other_tools_validate() {
        assert!(parse::<AskOperator>(ASK_OPERATOR, obj(json!({"question": "ok?"}))).unwrap().validate().is_ok());
        let e = parse::<AskOperator>(ASK_OPERATOR, obj(json!({"question": ""}))).unwrap().validate().unwrap_err();
        assert!(e.message.contains("`question` must not be empty"));
        let e = parse::<AskOperator>(ASK_OPERATOR, obj(json!({"question": "x".repeat(MAX_TEXT + 1)})))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.message.contains("longer than"));
        let e = parse::<RequestCapability>(REQUEST_CAPABILITY, obj(json!({"capability": "gpu"}))).unwrap_err();
        assert!(e.message.contains("missing field `reason`"));
        let e = parse::<CheckRequest>(CHECK_REQUEST, None).unwrap_err();
        assert!(e.message.contains("missing field `id`"));
        assert!(parse::<ListEgressRoutes>(LIST_EGRESS_ROUTES, None).is_ok());
        assert!(parse::<ListEgressRoutes>(LIST_EGRESS_ROUTES, obj(json!({"x": 1}))).is_err());
    }

    #[test]
    fn modified_arguments_are_validated_per_tool() {
        assert!(validate_modified(REQUEST_EGRESS, &json!({"host": "a.com", "port": 0, "reason": "r"})).is_err());
        assert!(validate_modified(REQUEST_EGRESS, &json!([1])).is_err());
        let v = validate_modified(REQUEST_EGRESS, &json!({"host": "A.com", "reason": "r"})).unwrap();
        assert_eq!(v["host"], "a.com");
        assert_eq!(validate_modified("egress_dlp", &json!({"any": 1})).unwrap(), json!({"any": 1}));
    }

    #[test]
    fn public_routes_never_show_auth() {
        let routes = Routes::parse(
            br#"{"version":1,"routes":[{"host":"api.example.com","port":443,"auth":{"token_env":"EGRESS_TOKEN_0"},
                "matches":[{"paths":[{"type":"prefix","value":"/v1/"}]}]},{"host":"*.pypi.org"}]}"#,
            Path::new("routes.json"),
        )
        .unwrap();
        let v = public_routes(&routes);
        let text = v.to_string();
        assert!(!text.contains("EGRESS_TOKEN_0") && !text.contains("auth"), "{text}");
        assert_eq!(v["routes"][0]["host"], "api.example.com");
        assert_eq!(v["routes"][0]["matches"][0]["paths"][0]["value"], "/v1/");
        assert_eq!(v["routes"][1]["host"], "*.pypi.org");
    }
}
