//! Route schemes: a cleartext request never matches an `https` route (before, an absolute-form
//! `http://host:443/` matched a `port: 443` route and went out in clear text with the real token
//! injected), and an `http` route injects its credential only with `insecure_auth`.
//! Values shaped like credentials are assembled at run time so the repository itself holds none.

use crate::support::*;

/// An absolute-form `http://` request to a route that does not say `"scheme": "http"` is not
/// that route's: before, it matched by host and port and went out in clear text with the real
/// token injected.
#[tokio::test]
async fn cleartext_requests_never_match_an_https_route() {
    let w = bypass_world().await;
    let url = format!("http://plain.test:{}/x", w.plain.port());
    let (code, body) = curl(&w.proxy, &url, &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(w.plain.count(), 0, "{:?}", w.plain.seen());
    assert!(!w.proxy.audit_text().contains(TOKEN));
}

/// An `http` route injects its credential only with `insecure_auth`; either way the agent's own
/// `Authorization` is stripped. A TLS request to it is refused (it would be downgraded).
#[tokio::test]
async fn an_http_route_injects_only_with_insecure_auth() {
    let ca = Ca::new("upstream CA");
    let plain = plain_upstream().await;
    let p = plain.port();
    let routes = format!(
        r#"{{"version":1,"routes":[
        {{"host":"plain.test","port":{p},"scheme":"http","auth":{{"token_env":"EGRESS_TOKEN_0"}}}},
        {{"host":"other.test","port":{p},"scheme":"http","insecure_auth":true,"auth":{{"token_env":"EGRESS_TOKEN_0"}}}}
    ]}}"#
    );
    let proxy = start_proxy(&routes, &ca, &[("EGRESS_TOKEN_0", TOKEN)], &["--resolve=other.test=127.0.0.1"]).await;
    for host in ["plain.test", "other.test"] {
        let (code, body) =
            curl(&proxy, &format!("http://{host}:{p}/x"), &["-H", &format!("Authorization: {AGENT_AUTH}")]).await;
        assert_eq!((code, body.as_str()), (200, "upstream ok"), "{host}");
    }
    let seen = plain.seen();
    assert!(seen[0].headers.get("authorization").is_none(), "{:?}", seen[0].headers);
    assert_eq!(seen[1].headers["authorization"], format!("Bearer {TOKEN}"));
    let (code, body) = curl(&proxy, &format!("https://plain.test:{p}/x"), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("https is not allowed for plain.test"), "{body}");
    assert_eq!(plain.count(), 2);
}
