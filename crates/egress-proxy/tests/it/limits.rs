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
