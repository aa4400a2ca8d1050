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
/// (The connection's task ends when the proxy closes it.)
async fn health_conn(
    addr: std::net::SocketAddr,
) -> (hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    (send, tokio::spawn(async move { conn.await.unwrap() }))
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

/// An HTTP/1.1 connection through a CONNECT tunnel to `target`, TLS with SNI api.test.
async fn tunnel_conn<B>(
    proxy: &Proxy,
    target: &str,
) -> (
    hyper::client::conn::http1::SendRequest<B>,
    hyper::client::conn::http1::Connection<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, B>,
)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tls(connect(proxy, target).await.unwrap(), &proxy.ca_pem_path, "api.test", b"http/1.1").await.unwrap();
    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap()
}

/// Reads a response head, byte by byte, up to its blank line.
async fn read_head(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Stopping (SIGTERM in the binary): the listener closes first; a request in flight, here an
/// upload still being sent, is finished and forwarded; idle keep-alive connections, plain and
/// tunnelled, are closed at once instead of holding the stop for the whole grace period.
#[tokio::test]
async fn stopping_finishes_requests_in_flight_and_closes_idle_connections() {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    let target = format!("api.test:{}", up.port());
    let routes = format!(r#"{{"version":1,"routes":[{{"host":"api.test","port":{}}}]}}"#, up.port());
    let mut proxy = start_proxy(&routes, &ca, &[], &[]).await;

    // Idle: a plain keep-alive connection that has had its answer...
    let (mut plain, plain_conn) = health_conn(proxy.addr).await;
    healthy(&mut plain).await;
    // ...and a tunnel whose TLS connection has had one.
    let (mut tunnel, conn) = tunnel_conn(&proxy, &target).await;
    let tunnel_task = tokio::spawn(conn);
    let get = http::Request::get("/idle").header("host", &target).body(http_body_util::Empty::<bytes::Bytes>::new());
    let resp = tunnel.send_request(get.unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    // In flight: an upload whose head the proxy has read (it asked for the body: 100 Continue)
    // and whose first half has been sent.
    let mut upload =
        tls(connect(&proxy, &target).await.unwrap(), &proxy.ca_pem_path, "api.test", b"http/1.1").await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: {target}\r\nContent-Length: 23\r\nExpect: 100-continue\r\n\r\n");
    upload.write_all(head.as_bytes()).await.unwrap();
    assert!(read_head(&mut upload).await.starts_with("HTTP/1.1 100"));
    upload.write_all(b"first half, ").await.unwrap();

    proxy.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The idle ones are closed promptly.
    tokio::time::timeout(Duration::from_secs(2), tunnel_task).await.expect("idle tunnel closed").unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(2), plain_conn).await.expect("idle plain connection closed").unwrap();
    // The upload finishes after the stop and reaches the upstream whole.
    upload.write_all(b"second half").await.unwrap();
    let answer = read_head(&mut upload).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.seen();
    let got = seen.iter().find(|s| s.uri.ends_with("/upload")).expect("the upload reached the upstream");
    assert_eq!(got.body, "first half, second half");
    // Nothing left open: the proxy is gone well inside the 5 s grace period.
    tokio::time::timeout(Duration::from_secs(3), proxy.finished())
        .await
        .expect("the proxy stopped once its connections closed");
}
