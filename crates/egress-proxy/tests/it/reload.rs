//! Live reload: atomic rename, in-place rewrite, and a broken file keeping the last good routes.

use std::io::Write;

use crate::support::*;

fn routes(hosts: &[&str], port: u16) -> String {
    let rs: Vec<String> = hosts.iter().map(|h| format!(r#"{{"host":"{h}","port":{port}}}"#)).collect();
    format!(r#"{{"version":1,"routes":[{}]}}"#, rs.join(","))
}

async fn status(proxy: &Proxy, host: &str, port: u16) -> u16 {
    curl(proxy, &format!("https://{host}:{port}/r"), &[]).await.0
}

/// Polls (bounded) until `host` gets `want`.
async fn until(proxy: &Proxy, host: &str, port: u16, want: u16) {
    for _ in 0..40 {
        if status(proxy, host, port).await == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{host} never answered {want}");
}

#[tokio::test]
async fn rename_rewrite_and_broken_file() {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    let p = up.port();
    let proxy = start_proxy(&routes(&["api.test"], p), &ca, &[], &[]).await;
    assert_eq!(status(&proxy, "api.test", p).await, 200);
    assert_eq!(status(&proxy, "other.test", p).await, 403);

    // Atomic replace (temp file + rename), as the orchestrator writes it.
    common::atomic::write(&proxy.routes, routes(&["other.test"], p).as_bytes()).unwrap();
    until(&proxy, "other.test", p, 200).await;
    assert_eq!(status(&proxy, "api.test", p).await, 403);

    // In-place rewrite of the same inode.
    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&proxy.routes).unwrap();
    f.write_all(routes(&["api.test", "a.wild.test"], p).as_bytes()).unwrap();
    drop(f);
    until(&proxy, "a.wild.test", p, 200).await;
    assert_eq!(status(&proxy, "api.test", p).await, 200);

    // A broken file (syntax error, then a missing token) keeps the last good routes.
    std::fs::write(&proxy.routes, b"{\"version\":1,\"routes\":[{\"host\":").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(status(&proxy, "api.test", p).await, 200);
    assert_eq!(status(&proxy, "a.wild.test", p).await, 200);
    std::fs::write(
        &proxy.routes,
        format!(
            r#"{{"version":1,"routes":[{{"host":"other.test","port":{p},"auth":{{"token_env":"NOT_SET_ANYWHERE"}}}}]}}"#
        ),
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(status(&proxy, "other.test", p).await, 403, "routes naming a missing token are rejected");
    assert_eq!(status(&proxy, "api.test", p).await, 200);
    // And a good file after a broken one is picked up.
    common::atomic::write(&proxy.routes, routes(&["b.wild.test"], p).as_bytes()).unwrap();
    until(&proxy, "b.wild.test", p, 200).await;
    assert_eq!(status(&proxy, "api.test", p).await, 403);
}
