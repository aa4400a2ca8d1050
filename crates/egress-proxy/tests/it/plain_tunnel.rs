//! Plain HTTP inside `CONNECT host:80`: the proxy parses it as HTTP and every request in the
//! tunnel goes through the same decision, credential stripping, token injection and DLP as any
//! other; bytes that are not HTTP are dropped, never relayed.
//!
//! Port 80 is what makes the proxy parse plain HTTP in a tunnel, and a route has no way to map it
//! elsewhere, so the recording upstream really listens on port 80 — on an address of its own in
//! 127.0.0.0/8 (Linux routes the whole block to loopback), so parallel tests and other services
//! on 127.0.0.1:80 do not collide. Binding port 80 needs root (CI runs as root) or a lowered
//! `net.ipv4.ip_unprivileged_port_start`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A recording plain-HTTP upstream on port 80 of its own loopback address.
struct Port80 {
    ip: Ipv4Addr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted (a dropped tunnel must not even open one).
    connections: Arc<AtomicUsize>,
}

impl Port80 {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(seen: Arc<Mutex<Vec<Seen>>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    note(&seen, req).await?;
    Ok(Response::new(Full::new(Bytes::from_static(b"port 80 ok"))))
}

/// Binds `127.80.X.Y:80` for the first free X.Y after one derived from the process id.
async fn port80_upstream() -> Port80 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % 250) as u16 * 250;
    let mut listener = None;
    for _ in 0..64 {
        let n = base.wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst)) % (250 * 250);
        let ip = Ipv4Addr::new(127, 80, 1 + (n / 250) as u8, 1 + (n % 250) as u8);
        match TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 80)).await {
            Ok(l) => {
                listener = Some((ip, l));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!(
                "binding {ip}:80 for the CONNECT :80 tests: {e} (needs root or \
                 net.ipv4.ip_unprivileged_port_start <= 80)"
            ),
        }
    }
    let (ip, listener) = listener.expect("no free 127.80.x.y:80 address after 64 tries");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { break };
            c2.fetch_add(1, Ordering::SeqCst);
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(seen.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Port80 { ip, seen, connections }
}

/// `plain80.test` (token injected: the route says `insecure_auth`) and `other80.test` are both
/// `http` routes (port 80) and both resolve to the upstream, so only the tunnel's own checks
/// stand between a request naming the other host and the upstream. `tls80.test` is an `https`
/// route (443).
async fn world() -> (Port80, Proxy) {
    let up = port80_upstream().await;
    let routes = r#"{"version":1,"routes":[
        {"host":"plain80.test","scheme":"http","insecure_auth":true,
         "auth":{"header":"Authorization","scheme":"Bearer","token_env":"EGRESS_TOKEN_0"}},
        {"host":"other80.test","scheme":"http"},
        {"host":"tls80.test"}
    ]}"#;
    let extra = [
        format!("--resolve=plain80.test={}", up.ip),
        format!("--resolve=other80.test={}", up.ip),
        format!("--resolve=tls80.test={}", up.ip),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let proxy = start_proxy(routes, &Ca::new("upstream CA"), &[("EGRESS_TOKEN_0", TOKEN)], &extra).await;
    (up, proxy)
}

/// Everything the proxy sends back on `s` until it closes (or goes quiet for 5 s).
async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns (status line, body).
async fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "tunnel closed mid-response: {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (head.lines().next().unwrap().to_string(), String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn curl_through_connect_80_reaches_the_upstream_with_the_token_injected() {
    let (up, proxy) = world().await;
    // `-p` makes curl CONNECT plain80.test:80 and speak plain HTTP inside the tunnel.
    let (code, body) = curl(
        &proxy,
        "http://plain80.test/hello?x=1",
        &["-p", "-H", &format!("Authorization: {AGENT_AUTH}"), "--proxy-user", "agent:pw"],
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "port 80 ok"));
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/hello?x=1");
    assert_eq!(seen[0].headers.get("authorization").unwrap(), &format!("Bearer {TOKEN}"));
    assert_eq!(seen[0].headers.get("host").unwrap(), "plain80.test");
    assert!(seen[0].headers.get("proxy-authorization").is_none());
    assert!(!proxy.audit_text().contains(TOKEN));
}

#[tokio::test]
async fn a_request_naming_another_host_inside_the_tunnel_is_denied() {
    let (up, proxy) = world().await;
    let cases = [
        "GET /a HTTP/1.1\r\nHost: other80.test\r\n\r\n",
        // Absolute form naming another host, with a Host header that matches the tunnel.
        "GET http://other80.test/a HTTP/1.1\r\nHost: plain80.test\r\n\r\n",
        // The right name on another port.
        "GET /a HTTP/1.1\r\nHost: plain80.test:8080\r\n\r\n",
    ];
    for req in cases {
        let mut s = connect(&proxy, "plain80.test:80").await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut s).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{req:?}: {status} {body}");
        assert!(body.starts_with("bot-bottle egress: blocked: "), "{body}");
        assert!(body.contains("differs from the target plain80.test"), "{req:?}: {body}");
    }
    // Keep-alive: an allowed request, then one naming the other host on the same tunnel.
    let mut s = connect(&proxy, "plain80.test:80").await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: plain80.test\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "port 80 ok"));
    s.write_all(b"GET /second HTTP/1.1\r\nHost: other80.test\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status} {body}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "only the first request on the tunnel went out: {seen:?}");
    assert_eq!(seen[0].uri, "/first");
    assert_eq!(seen[0].headers.get("authorization").unwrap(), &format!("Bearer {TOKEN}"));
    let denies = proxy.audit_lines().iter().filter(|l| l["event"] == "deny").count();
    assert_eq!(denies, cases.len() + 1);
}

#[tokio::test]
async fn h2_prior_knowledge_in_the_tunnel_is_policed_per_request() {
    let (up, proxy) = world().await;
    let s = connect(&proxy, "plain80.test:80").await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let mut statuses = Vec::new();
    for authority in ["plain80.test", "other80.test", "plain80.test"] {
        let req = Request::builder()
            .uri(format!("http://{authority}/h2"))
            .header("authorization", AGENT_AUTH)
            .body(Full::new(Bytes::new()))
            .unwrap();
        statuses.push(send.send_request(req).await.unwrap().status());
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::FORBIDDEN, StatusCode::OK]);
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.headers.get("authorization").unwrap() == format!("Bearer {TOKEN}").as_str()));
}

#[tokio::test]
async fn a_secret_in_the_body_is_blocked_also_split_across_chunks() {
    let (up, proxy) = world().await;
    let (a, b) = TOKEN.split_at(9);
    let bodies = [
        format!("POST /up HTTP/1.1\r\nHost: plain80.test\r\nContent-Length: {}\r\n\r\nleak={TOKEN}", 5 + TOKEN.len()),
        format!(
            "POST /up HTTP/1.1\r\nHost: plain80.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\nleak={a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            5 + a.len(),
            b.len()
        ),
    ];
    for req in &bodies {
        let mut s = connect(&proxy, "plain80.test:80").await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut s).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{status} {body}");
        assert!(body.contains("dlp: known-secret in body"), "{body}");
        assert!(!body.contains(TOKEN));
    }
    // A secret in the URL of a tunneled request too; then a clean POST still goes through.
    let mut s = connect(&proxy, "plain80.test:80").await.unwrap();
    s.write_all(format!("GET /q?k={TOKEN} HTTP/1.1\r\nHost: plain80.test\r\n\r\n").as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut s).await;
    assert!(status.starts_with("HTTP/1.1 403") && body.contains("in url"), "{status} {body}");
    s.write_all(b"POST /ok HTTP/1.1\r\nHost: plain80.test\r\nContent-Length: 5\r\n\r\nclean").await.unwrap();
    let (status, _) = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, "clean");
    let audit = proxy.audit_text();
    assert_eq!(audit.lines().count(), 3, "{audit}");
    assert!(!audit.contains(TOKEN), "{audit}");
}

#[tokio::test]
async fn non_http_bytes_in_a_connect_80_tunnel_are_dropped() {
    let (up, proxy) = world().await;
    let garbage: [&[u8]; 4] = [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x00\x01\x02\x03 binary \xff\xfe\r\n\r\n",
        b"HELLO plain80.test\r\n\r\n",
        // Looks like HTTP but is not parseable: a smuggled second request must not follow it.
        b"GET / HTTP/1.1\r\nHost: plain80.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ];
    for g in garbage {
        let mut s = connect(&proxy, "plain80.test:80").await.unwrap();
        s.write_all(g).await.unwrap();
        let reply = read_all(&mut s).await;
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{:?}: {reply:?}", String::from_utf8_lossy(g));
    }
    assert_eq!(up.connections(), 0, "nothing reached the upstream, not even a connection");
    // CONNECT :80 needs a route that allows port 80: tls80.test allows 443 only.
    let refused = connect(&proxy, "tls80.test:80").await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("port 80 is not allowed for host tls80.test"), "{refused}");
    // The proxy still serves a good request afterwards.
    let mut s = connect(&proxy, "plain80.test:80").await.unwrap();
    s.write_all(b"GET /after HTTP/1.1\r\nHost: plain80.test\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.0, "HTTP/1.1 200 OK");
    assert_eq!(up.connections(), 1);
}
