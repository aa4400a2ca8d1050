//! WebSocket DLP end to end: client payloads are scanned as one stream, so a held token split
//! across the fragments of a message or across two messages, and a PEM key spread over several
//! frames, close the connection before the frame that completes them reaches the upstream (the
//! echo upstream returns exactly what it received). Compression fails closed: the extension
//! offer is not forwarded, and a compressed (RSV1) frame is refused even when an upstream
//! answers with `permessage-deflate` unasked.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A masked client frame: `opcode` 0 continuation, 1 text; `rsv1` marks it compressed.
fn frame(opcode: u8, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x3c, 0xa1, 0x07, 0x5e];
    let mut f = vec![opcode | if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 }];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads a response head up to the blank line.
async fn head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed before the response head ended: {head:?}");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Sends `f` and expects the echo upstream to return exactly it (so it went out).
async fn sent_and_echoed<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, f: &[u8]) {
    s.write_all(f).await.unwrap();
    let mut echo = vec![0u8; f.len()];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(echo, f);
}

/// Sends `f` and expects the proxy to close the connection with nothing echoed (the frame never
/// reached the upstream). A relay that merely withheld the frame would hang here until the
/// bound runs out, and fail.
async fn refused<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, f: &[u8]) {
    s.write_all(f).await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "the proxy kept the connection open");
    assert!(rest.is_empty(), "the upstream received and echoed the frame: {rest:?}");
}

struct World {
    up: Upstream,
    proxy: Proxy,
}

async fn world() -> World {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"http/1.1"]).await;
    let routes = format!(
        r#"{{"version":1,"routes":[{{"host":"ws.test","port":{},"auth":{{"token_env":"EGRESS_TOKEN_0"}}}}]}}"#,
        up.port()
    );
    let proxy = start_proxy(&routes, &ca, &[("EGRESS_TOKEN_0", TOKEN)], &[]).await;
    World { up, proxy }
}

/// A WebSocket through `CONNECT ws.test` + TLS, upgraded (with `extra` request headers).
async fn open(w: &World, extra: &str) -> (tokio_rustls::client::TlsStream<TcpStream>, String) {
    let p = w.up.port();
    let s = connect(&w.proxy, &format!("ws.test:{p}")).await.unwrap();
    let mut t = tls(s, &w.proxy.ca_pem_path, "ws.test", b"http/1.1").await.unwrap();
    t.write_all(format!("GET /socket HTTP/1.1\r\nHost: ws.test:{p}\r\n{UPGRADE}{extra}\r\n").as_bytes()).await.unwrap();
    let h = head(&mut t).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    (t, h)
}

fn ws_denies(proxy: &Proxy) -> Vec<String> {
    proxy
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "deny")
        .map(|l| l["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_token_split_across_fragments_or_messages_never_completes_upstream() {
    let w = world().await;
    let (a, b) = TOKEN.split_at(12);
    for fragmented in [true, false] {
        let (mut t, _) = open(&w, "").await;
        sent_and_echoed(&mut t, &frame(1, true, false, b"hello")).await;
        // The first part alone is no secret: it goes out.
        sent_and_echoed(&mut t, &frame(1, !fragmented, false, format!("my token is {a}").as_bytes())).await;
        // The frame that completes it does not.
        refused(&mut t, &frame(if fragmented { 0 } else { 1 }, true, false, format!("{b} ok").as_bytes())).await;
    }
    let denies = ws_denies(&w.proxy);
    assert_eq!(denies.len(), 2, "{denies:?}");
    assert!(denies.iter().all(|r| r.contains("dlp: known-secret in websocket frame")), "{denies:?}");
    assert!(!w.proxy.audit_text().contains(TOKEN));
    assert!(!w.proxy.audit_text().contains(a));
}

#[tokio::test]
async fn a_pem_key_spread_over_frames_is_caught_before_its_end_leaves() {
    let w = world().await;
    // Built at run time so the repository holds no key-shaped text.
    let kind = ["PRIVATE", "KEY"].join(" ");
    let body: Vec<String> = (0..26u8).map(|i| std::iter::repeat_n(char::from(b'A' + i), 64).collect()).collect();
    let key = format!("-----BEGIN RSA {kind}-----\n{}\n-----END RSA {kind}-----\n", body.join("\n"));
    let (first, rest) = key.split_at(1000);
    let (middle, last) = rest.split_at(rest.len() - 12);
    let (mut t, _) = open(&w, "").await;
    sent_and_echoed(&mut t, &frame(1, true, false, format!("here is my config:\n{first}").as_bytes())).await;
    sent_and_echoed(&mut t, &frame(1, true, false, middle.as_bytes())).await;
    refused(&mut t, &frame(1, true, false, last.as_bytes())).await;
    let denies = ws_denies(&w.proxy);
    assert_eq!(denies, ["dlp: private-key in websocket frame; connection closed"]);
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn the_deflate_offer_is_not_forwarded_and_compressed_frames_are_refused() {
    let w = world().await;
    let (mut t, h) = open(&w, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n").await;
    assert!(!h.to_ascii_lowercase().contains("sec-websocket-extensions"), "{h}");
    let seen = w.up.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("sec-websocket-extensions").is_none(), "{:?}", seen[0].headers);
    sent_and_echoed(&mut t, &frame(1, true, false, b"plain text")).await;
    // Deflated, the token is not visible in the frame's bytes: it must not go out unscanned.
    refused(&mut t, &frame(1, true, true, &deflate(format!("leak {TOKEN}").as_bytes()))).await;
    let denies = ws_denies(&w.proxy);
    assert_eq!(denies.len(), 1, "{denies:?}");
    assert!(denies[0].contains("RSV"), "{denies:?}");
}

/// A plain upstream that answers every upgrade with `permessage-deflate` although none was
/// offered, then records the bytes it receives.
async fn deflate_insisting_upstream() -> (u16, Arc<Mutex<String>>, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let head_seen = Arc::new(Mutex::new(String::new()));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (h2, g2) = (head_seen.clone(), got.clone());
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else { return };
        *h2.lock().unwrap() = head(&mut s).await;
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            g2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (port, head_seen, got)
}

#[tokio::test]
async fn an_upstream_forcing_deflate_is_refused_before_any_frame() {
    let (port, up_head, got) = deflate_insisting_upstream().await;
    let routes = format!(r#"{{"version":1,"routes":[{{"host":"deflate.test","port":{port},"scheme":"http"}}]}}"#);
    let proxy = start_proxy(
        &routes,
        &Ca::new("upstream CA"),
        &[("EGRESS_TOKEN_0", TOKEN)],
        &["--resolve=deflate.test=127.0.0.1"],
    )
    .await;
    // ws:// through the proxy (absolute-form plain http), offering deflate.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!(
            "GET http://deflate.test:{port}/chat HTTP/1.1\r\nHost: deflate.test:{port}\r\n{UPGRADE}\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let h = head(&mut s).await;
    // The upstream answered 101 with an extension nobody offered it: the client gets 502, no
    // WebSocket, so no frame (compressed or not) can pass.
    assert!(h.starts_with("HTTP/1.1 502"), "{h}");
    assert!(!h.to_ascii_lowercase().contains("permessage-deflate"), "{h}");
    assert!(!up_head.lock().unwrap().to_ascii_lowercase().contains("sec-websocket-extensions"));
    let compressed = frame(1, true, true, &deflate(format!("token {TOKEN}").as_bytes()));
    let _ = s.write_all(&compressed).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(got.lock().unwrap().is_empty(), "no frame reached the upstream");
    let denies = ws_denies(&proxy);
    assert_eq!(denies.len(), 1, "{denies:?}");
    assert!(denies[0].contains("extension that was not offered"), "{denies:?}");
}
