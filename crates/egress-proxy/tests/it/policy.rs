//! Allow/deny behaviour end to end: h1/h2 both sides, token injection, every denial reason,
//! SNI/Host/:authority mismatches, IP literals, non-TLS tunnels, DoH, WebSockets, magic host.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn routes(port: u16, plain_port: u16) -> String {
    format!(
        r#"{{"version":1,"log":1,"routes":[
        {{"host":"api.test","port":{port},"auth":{{"header":"Authorization","scheme":"Bearer","token_env":"EGRESS_TOKEN_0"}},
          "matches":[{{"paths":[{{"type":"prefix","value":"/v1/"}}],"methods":["GET","POST"]}}]}},
        {{"host":"other.test","port":{port},"matches":[{{"headers":[{{"name":"x-team","value":"core"}}]}}]}},
        {{"host":"*.wild.test","port":{port},"auth":{{"header":"X-Api-Key","scheme":"","token_env":"EGRESS_TOKEN_1"}}}},
        {{"host":"ws.test","port":{port},"matches":[{{"paths":[{{"type":"exact","value":"/socket"}}]}}]}},
        {{"host":"127.0.0.1","port":{port}}},
        {{"host":"doh.test","port":{port},"allow_doh":true}},
        {{"host":"plain.test","port":{plain_port},"scheme":"http"}}
    ]}}"#
    )
}

const ENV: &[(&str, &str)] = &[("EGRESS_TOKEN_0", TOKEN), ("EGRESS_TOKEN_1", concat!("key-1-", "abcdef0123456789"))];

struct World {
    up: Upstream,
    plain: Upstream,
    proxy: Proxy,
}

async fn world() -> World {
    world_alpn(&[b"h2", b"http/1.1"]).await
}

async fn world_alpn(alpn: &[&[u8]]) -> World {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, alpn).await;
    let plain = plain_upstream().await;
    let proxy = start_proxy(&routes(up.port(), plain.port()), &ca, ENV, &[]).await;
    World { up, plain, proxy }
}

fn assert_blocked(code: u16, body: &str, want: &str) {
    assert_eq!(code, 403, "{body}");
    assert!(body.starts_with("bot-bottle egress: blocked: "), "{body}");
    assert!(body.contains(want), "wanted {want:?} in {body:?}");
}

#[tokio::test]
async fn allowed_get_and_post_over_h1_and_h2_with_token_injected() {
    let w = world().await;
    let p = w.up.port();
    for flag in ["--http1.1", "--http2"] {
        let (code, body) = curl(
            &w.proxy,
            &format!("https://api.test:{p}/v1/items?x=1"),
            &[flag, "-H", &format!("Authorization: {AGENT_AUTH}"), "--proxy-user", "agent:pw"],
        )
        .await;
        assert_eq!((code, body.as_str()), (200, "upstream ok"), "{flag}");
        let (code, _) = curl(&w.proxy, &format!("https://api.test:{p}/v1/items"), &[flag, "-d", "hello=world"]).await;
        assert_eq!(code, 200);
    }
    let seen = w.up.seen();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        let auth: Vec<_> = s.headers.get_all("authorization").iter().collect();
        assert_eq!(auth.len(), 1, "{:?}", s.headers);
        assert_eq!(auth[0].to_str().unwrap(), format!("Bearer {TOKEN}"));
        assert!(s.headers.get("proxy-authorization").is_none());
        assert_eq!(s.version, http::Version::HTTP_2, "upstream offers h2, the proxy uses it");
    }
    assert_eq!(seen[0].uri.split_once(&format!(":{p}")).unwrap().1, "/v1/items?x=1");
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].body, "hello=world");

    // The Rust client, h1 and h2, and a route whose token goes in a custom header, bare.
    for h2 in [false, true] {
        let req = Request::builder()
            .uri(format!("https://a.wild.test:{p}/anything"))
            .header("host", format!("a.wild.test:{p}"))
            .header("x-api-key", "agent-fake")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let req = if h2 { strip_host(req) } else { req };
        let (st, body) = rust_request(&w.proxy, &format!("a.wild.test:{p}"), "a.wild.test", h2, req).await.unwrap();
        assert_eq!((st, body.as_str()), (StatusCode::OK, "upstream ok"));
    }
    let last = w.up.seen().pop().unwrap();
    assert_eq!(last.headers.get("x-api-key").unwrap(), "key-1-abcdef0123456789");
}

fn strip_host(mut r: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    r.headers_mut().remove("host");
    r
}

#[tokio::test]
async fn h1_only_upstream_works_from_an_h2_client() {
    let w = world_alpn(&[b"http/1.1"]).await;
    let (code, body) = curl(&w.proxy, &format!("https://api.test:{}/v1/x", w.up.port()), &["--http2", "-d", "b"]).await;
    assert_eq!((code, body.as_str()), (200, "upstream ok"));
    let s = &w.up.seen()[0];
    assert_eq!(s.version, http::Version::HTTP_11);
    assert_eq!(s.headers.get("host").unwrap(), &format!("api.test:{}", w.up.port()));
    assert_eq!(s.body, "b");
}

#[tokio::test]
async fn denials_reach_nothing_upstream() {
    let w = world().await;
    let p = w.up.port();
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (format!("https://evil.test:{p}/"), vec![], "host evil.test is not in the bottle's routes"),
        (format!("https://api.test:{}/v1/", p + 1), vec![], "is not allowed for host api.test"),
        (format!("https://api.test:{p}/v2/"), vec![], "does not pass the route's matches"),
        (format!("https://api.test:{p}/v1/x"), vec!["-X", "DELETE"], "does not pass the route's matches"),
        (format!("https://other.test:{p}/"), vec!["-H", "x-team: other"], "does not pass the route's matches"),
        (format!("https://api.test:{p}/v1/%2e%2e/admin"), vec!["--path-as-is"], "'..' segments"),
        (format!("https://127.0.0.2:{p}/"), vec![], "IP literal 127.0.0.2"),
        (format!("https://api.test:{p}/v1/dns-query"), vec![], "DNS-over-HTTPS"),
        (format!("https://api.test:{p}/v1/q"), vec!["-H", "accept: application/dns-json"], "DNS-over-HTTPS"),
        (
            format!("https://a.wild.test:{p}/q"),
            vec!["-H", "content-type: application/dns-message", "-d", "x"],
            "DNS-over-HTTPS",
        ),
        ("http://evil.test/".to_string(), vec![], "host evil.test is not in the bottle's routes"),
    ];
    for (url, args, want) in &cases {
        let (code, body) = curl(&w.proxy, url, args).await;
        if url.contains("evil.test") || url.contains(&format!(":{}/", p + 1)) || url.contains("127.0.0.2") {
            // A denied CONNECT: curl reports the proxy's refusal as 403 with no TLS.
            assert_eq!(code, 403, "{url}: {body}");
        } else {
            assert_blocked(code, &format!("{body} [{url}]"), want);
        }
    }
    // The CONNECT refusal carries the contract body too.
    let refused = connect(&w.proxy, "evil.test:443").await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("bot-bottle egress: blocked: host evil.test is not in the bottle's routes"), "{refused}");
    assert_eq!(w.up.count(), 0, "{:?}", w.up.seen());
    assert_eq!(w.plain.count(), 0);
    let audit = w.proxy.audit_lines();
    assert!(audit.len() >= cases.len(), "{audit:?}");
    assert!(audit.iter().all(|l| l["event"] == "deny" && l["bottle"] == "test-bottle"));
    // DoH is fine where the route allows it.
    let (code, _) = curl(&w.proxy, &format!("https://doh.test:{p}/dns-query"), &[]).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn sni_host_and_authority_must_match_the_connect_target() {
    let w = world().await;
    let p = w.up.port();
    let target = format!("api.test:{p}");
    // SNI names another allowed host: the handshake is refused.
    let s = connect(&w.proxy, &target).await.unwrap();
    assert!(tls(s, &w.proxy.ca_pem_path, "a.wild.test", b"http/1.1").await.is_err());
    // Host header names another allowed host.
    let req = Request::builder()
        .uri("/v1/x")
        .header("host", format!("a.wild.test:{p}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (st, body) = rust_request(&w.proxy, &target, "api.test", false, req).await.unwrap();
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("differs from the target api.test"), "{body}");
    // :authority names another allowed host.
    let req = Request::builder().uri(format!("https://a.wild.test:{p}/v1/x")).body(Full::new(Bytes::new())).unwrap();
    let (st, body) = rust_request(&w.proxy, &target, "api.test", true, req).await.unwrap();
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    // Absolute-form inside the tunnel naming another host.
    let req = Request::builder()
        .uri(format!("https://a.wild.test:{p}/v1/x"))
        .header("host", format!("api.test:{p}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (st, _) = rust_request(&w.proxy, &target, "api.test", false, req).await.unwrap();
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Plain http: Host differing from the absolute URI.
    let (code, body) =
        curl(&w.proxy, &format!("http://plain.test:{}/", w.plain.port()), &["-H", "Host: evil.test"]).await;
    assert_blocked(code, &body, "differs from the target plain.test");
    assert_eq!(w.up.count(), 0);
    assert_eq!(w.plain.count(), 0);
    let audit = w.proxy.audit_text();
    assert!(audit.contains("TLS server name"), "{audit}");
}

#[tokio::test]
async fn ip_literal_allowed_only_when_named() {
    let w = world().await;
    let p = w.up.port();
    let (code, body) = curl(&w.proxy, &format!("https://127.0.0.1:{p}/ip"), &[]).await;
    assert_eq!((code, body.as_str()), (200, "upstream ok"), "leaf has an IP SAN; upstream verified by IP");
    assert_eq!(w.up.count(), 1);
}

#[tokio::test]
async fn non_tls_bytes_in_a_tunnel_are_dropped() {
    let w = world().await;
    let p = w.up.port();
    let mut s = connect(&w.proxy, &format!("api.test:{p}")).await.unwrap();
    s.write_all(format!("POST /v1/x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 30\r\n\r\n{TOKEN}xxx").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "tunnel closed without a reply: {n:?} {buf:?}");
    assert_eq!(w.up.count(), 0);
    let audit = w.proxy.audit_text();
    assert!(audit.contains("non-TLS bytes in a CONNECT tunnel"), "{audit}");
    assert!(!audit.contains(TOKEN));
}

#[tokio::test]
async fn plain_http_absolute_form_is_policed_and_injected_too() {
    let w = world().await;
    let (code, body) =
        curl(&w.proxy, &format!("http://plain.test:{}/hello", w.plain.port()), &["-H", "Authorization: x"]).await;
    assert_eq!((code, body.as_str()), (200, "upstream ok"));
    let s = &w.plain.seen()[0];
    assert_eq!(s.uri, "/hello");
    assert_eq!(s.headers.get("authorization").unwrap(), "x", "no auth on this route: the agent's header passes");
    assert!(s.headers.get("proxy-connection").is_none());
}

/// Hop-by-hop headers the agent sends, and the ones its `Connection` names, end at the proxy:
/// the upstream's record holds only the end-to-end ones.
#[tokio::test]
async fn hop_by_hop_headers_end_at_the_proxy() {
    let w = world_alpn(&[b"http/1.1"]).await;
    let p = w.up.port();
    let hop = [
        "Connection: x-private, keep-alive",
        "x-private: 1",
        "Keep-Alive: timeout=5",
        "TE: trailers",
        "Proxy-Connection: keep-alive",
        "x-kept: 1",
    ];
    let args: Vec<&str> = hop.iter().flat_map(|h| ["-H", h]).chain(["--http1.1"]).collect();
    let (code, body) = curl(&w.proxy, &format!("https://api.test:{p}/v1/items"), &args).await;
    assert_eq!((code, body.as_str()), (200, "upstream ok"));
    let s = &w.up.seen()[0];
    for gone in ["x-private", "keep-alive", "te", "proxy-connection"] {
        assert!(s.headers.get(gone).is_none(), "{gone} reached the upstream: {:?}", s.headers);
    }
    assert_eq!(s.headers.get("x-kept").unwrap(), "1", "{:?}", s.headers);
}

#[tokio::test]
async fn websocket_upgrades_follow_the_route() {
    let w = world().await;
    let p = w.up.port();
    for (path, allowed) in [("/socket", true), ("/other", false)] {
        let s = connect(&w.proxy, &format!("ws.test:{p}")).await.unwrap();
        let mut t = tls(s, &w.proxy.ca_pem_path, "ws.test", b"http/1.1").await.unwrap();
        t.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: ws.test:{p}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(t.read(&mut b).await.unwrap(), 1);
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        if allowed {
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            // A real masked text frame passes and is echoed by the upstream.
            let clean = ws_frame(b"ping-frame");
            t.write_all(&clean).await.unwrap();
            let mut echo = vec![0u8; clean.len()];
            t.read_exact(&mut echo).await.unwrap();
            assert_eq!(echo, clean);
            // A frame carrying a held token closes the connection; nothing of it goes out.
            t.write_all(&ws_frame(format!("leak {TOKEN}").as_bytes())).await.unwrap();
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t.read_to_end(&mut rest)).await;
            assert!(rest.is_empty(), "{rest:?}");
            let audit = w.proxy.audit_text();
            assert!(audit.contains("in websocket frame"), "{audit}");
            assert!(!audit.contains(TOKEN));
        } else {
            assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        }
    }
    let seen = w.up.seen();
    assert_eq!(seen.len(), 1, "only the allowed upgrade reached the upstream");
    assert_eq!(seen[0].headers.get("upgrade").unwrap(), "websocket");
}

#[tokio::test]
async fn magic_host_health_and_routes() {
    let w = world().await;
    let (code, body) = curl(&w.proxy, "http://_egress.local/health", &[]).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, body) = curl(&w.proxy, "http://_egress.local/routes", &[]).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["routes"][0]["host"], "api.test");
    assert_eq!(v["routes"][0]["auth"]["token_env"], "EGRESS_TOKEN_0");
    assert!(!body.contains(TOKEN));
}

#[tokio::test]
async fn log_level_two_records_allows() {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    let routes = format!(r#"{{"version":1,"log":2,"routes":[{{"host":"api.test","port":{}}}]}}"#, up.port());
    let proxy = start_proxy(&routes, &ca, &[], &[]).await;
    let (code, _) = curl(&proxy, &format!("https://api.test:{}/a?q=1", up.port()), &[]).await;
    assert_eq!(code, 200);
    let lines = proxy.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "allow");
    assert_eq!(lines[0]["path"], "/a");
    assert_eq!(lines[0]["method"], "GET");
}

#[tokio::test]
async fn dns_answers_pointing_inside_are_refused() {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    // `localhost` is not given to --resolve: the system resolver answers 127.0.0.1 / ::1.
    let routes = format!(r#"{{"version":1,"routes":[{{"host":"localhost","port":{}}}]}}"#, up.port());
    let proxy = start_proxy(&routes, &ca, &[], &[]).await;
    let (code, body) = curl(&proxy, &format!("https://localhost:{}/", up.port()), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("resolves to") && body.contains("an internal address"), "{body}");
    assert_eq!(up.count(), 0);
    assert_eq!(proxy.audit_lines()[0]["event"], "deny");
}

/// A masked client text frame.
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | u8::try_from(payload.len()).unwrap()];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// `..;` is a dot segment to Tomcat and Spring (`/v1/..;/admin` is `/admin` there), so it may not
/// pass a `/v1/` prefix; nor may its encoded forms.
#[tokio::test]
async fn dot_semicolon_segments_do_not_pass_a_prefix() {
    let w = bypass_world().await;
    let p = w.up.port();
    for path in ["/v1/..;/admin", "/v1/.;/x", "/v1/..;jsessionid=1/admin", "/v1/%2e%2e;/admin", "/v1/..%3b/admin"] {
        let (code, body) = curl(&w.proxy, &format!("https://b.wild.test:{p}{path}"), &["--path-as-is"]).await;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(body.contains("'.' or '..' segments"), "{path}: {body}");
    }
    assert_eq!(w.up.count(), 0, "{:?}", w.up.seen());
    let (code, _) = curl(&w.proxy, &format!("https://b.wild.test:{p}/v1/a;b/..c;d"), &["--path-as-is"]).await;
    assert_eq!(code, 200, "parameters on ordinary segments are fine");
}
