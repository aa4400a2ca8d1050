//! Responses: an upstream that echoes the injected token (as httpbin's `/headers` does) never
//! hands it to the agent.
//! Values shaped like credentials are assembled at run time so the repository itself holds none.

use crate::support::*;

/// The upstream echoes the token it was given (as httpbin's `/headers` does): in a header, in a
/// plain, a gzip-encoded and a chunked body, percent-encoded in a redirect. The agent's copy
/// holds none of it, over h1 and h2, also on a route with DLP off; each redaction is audited.
#[tokio::test]
async fn responses_never_show_the_agent_a_held_token() {
    let w = bypass_world().await;
    let p = w.up.port();
    let mut n = 0;
    for host in ["api.test", "other.test"] {
        for flag in ["--http1.1", "--http2"] {
            for path in ["/echo", "/echo/gzip", "/echo/stream", "/echo/location"] {
                let (code, out) =
                    curl(&w.proxy, &format!("https://{host}:{p}{path}"), &[flag, "--compressed", "-D", "-"]).await;
                n += 1;
                let what = format!("{host}{path} {flag}");
                assert!(code == 200 || code == 302, "{what}: {code} {out}");
                assert!(!out.contains(TOKEN), "{what}: {out}");
                assert!(!out.contains(&percent_all(TOKEN, |_| true)), "{what}: {out}");
                assert!(out.contains("[REDACTED]"), "{what}: {out}");
            }
        }
    }
    // The upstreams did get the token: it is the agent that must not see it.
    assert_eq!(w.up.count(), n);
    assert!(w.up.seen().iter().all(|s| s.headers["authorization"] == format!("Bearer {TOKEN}")));
    let audit = w.proxy.audit_lines();
    let redactions = audit.iter().filter(|l| l["event"] == "redact").count();
    assert_eq!(redactions, n, "{audit:?}");
    assert!(audit.iter().all(|l| l["reason"].as_str().unwrap().contains("response")), "{audit:?}");
    assert!(!w.proxy.audit_text().contains(TOKEN));
}

/// A WebSocket upstream that sends the agent the token it was given: the frame never reaches the
/// agent, the connection closes, and the refusal is audited.
#[tokio::test]
async fn a_websocket_frame_carrying_a_held_token_never_reaches_the_agent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = bypass_world().await;
    let target = format!("api.test:{}", w.up.port());
    let s = connect(&w.proxy, &target).await.unwrap();
    let mut tls = tls(s, &w.proxy.ca_pem_path, "api.test", b"http/1.1").await.unwrap();
    tls.write_all(
        format!(
            "GET /echo/ws HTTP/1.1\r\nHost: {target}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(r.is_ok(), "the proxy kept the connection open: {got}");
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    assert!(!got.contains(TOKEN), "{got}");
    assert_eq!(w.up.seen()[0].headers["authorization"], format!("Bearer {TOKEN}"));
    let audit = w.proxy.audit_text();
    assert!(audit.contains("websocket frame from the upstream"), "{audit}");
}
