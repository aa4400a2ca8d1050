//! Limits that keep the proxy alive under abuse: a slow request head is cut off, an idle
//! tunnel is closed, oversized heads are refused, and the proxy keeps serving afterwards.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slow_heads_idle_tunnels_and_huge_heads_are_cut_off() {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    let routes = format!(r#"{{"version":1,"routes":[{{"host":"api.test","port":{}}}]}}"#, up.port());
    let proxy =
        start_proxy(&routes, &ca, &[], &["--header-timeout=1s", "--idle-timeout=2s", "--max-header-bytes=8192"]).await;

    // Slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nX-Slow: ").await.unwrap();
    assert!(closed(&mut slow, Duration::from_secs(15)).await, "a slow head is cut off");

    // An allowed tunnel where the client never starts TLS.
    let mut quiet = connect(&proxy, &format!("api.test:{}", up.port())).await.unwrap();
    assert!(closed(&mut quiet, Duration::from_secs(15)).await, "a silent tunnel is closed");

    // A head larger than the limit.
    let mut big = TcpStream::connect(proxy.addr).await.unwrap();
    let huge = format!("GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let _ = big.write_all(huge.as_bytes()).await;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), big.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 431"), "{resp}");

    // Still serving.
    let (code, body) = curl(&proxy, "http://_egress.local/health", &[]).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    assert_eq!(up.count(), 0);
}

/// A keep-alive connection to the proxy asking `_egress.local` for its health.
async fn health_conn(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn healthy(send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>) {
    use http_body_util::BodyExt;
    send.ready().await.unwrap();
    let req = http::Request::get("http://_egress.local/health")
        .header("host", "_egress.local")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
}

/// Stopping (SIGTERM in the binary): the listener closes first, connections already open on
/// any serving thread are still answered, and the proxy is gone as soon as they close.
#[tokio::test]
async fn stopping_refuses_new_connections_and_drains_open_ones() {
    let ca = Ca::new("upstream CA");
    let mut proxy = start_proxy(r#"{"version":1,"routes":[]}"#, &ca, &[], &[]).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut c = health_conn(proxy.addr).await;
        healthy(&mut c).await;
        open.push(c);
    }
    proxy.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &mut open {
        healthy(c).await;
    }
    drop(open);
    // Well inside the 5 s grace period: the drain ends when the last connection does.
    tokio::time::timeout(Duration::from_secs(3), proxy.finished())
        .await
        .expect("the proxy stopped once its connections closed");
}
