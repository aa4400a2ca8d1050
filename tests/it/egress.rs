//! In-image tests: egress-proxy inside the real sidecar image, routes directory bind-mounted
//! read-only. A host-side rewrite of routes.json (atomic rename, as the orchestrator does it)
//! takes effect live, and an allowed request goes all the way through the bumped TLS to a real
//! HTTPS upstream on the host (`openssl s_server`, trusted via EGRESS_UPSTREAM_CA, reached as
//! `up.test` through `--add-host up.test:host-gateway` and, as the orchestrator does for a
//! bottle's `hosts`, an `EGRESS_RESOLVE` pin to the same address: a name answered with an
//! internal address is followed only when the operator pinned it).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::{Container, chown_for_bundle, docker_available, host_gateway, make_ca, make_leaf, sidecar_image};

/// Runs curl through the proxy; returns (http_code, http_connect, body).
fn curl(proxy: SocketAddr, ca: &Path, url: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code} %{http_connect}", "-x", &format!("http://{proxy}")])
        .arg("--cacert")
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = s.rsplit_once('\n').unwrap_or(("", &s));
    let (code, connect) = codes.split_once(' ').unwrap_or((codes, ""));
    (code.to_string(), connect.to_string(), body.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn routes_rewritten_on_the_host_take_effect_in_the_image() {
    if !docker_available() {
        return;
    }
    let image = sidecar_image();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let ca = root.join("ca");
    std::fs::create_dir(&ca).unwrap();
    make_ca(&ca, "ca");
    chown_for_bundle(&ca);
    let egress = root.join("egress");
    std::fs::create_dir(&egress).unwrap();

    // A real HTTPS upstream on the host, with a cert for up.test from its own CA.
    let up = root.join("up");
    std::fs::create_dir(&up).unwrap();
    make_ca(&up, "upca");
    let (leaf_crt, leaf_key) = make_leaf(&up, "upca", &["up.test"]);
    std::fs::copy(up.join("upca.crt"), egress.join("upstream-ca.pem")).unwrap();
    let port = free_port();
    let _server = Server(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &format!("0.0.0.0:{port}")])
            .arg("-cert")
            .arg(&leaf_crt)
            .arg("-key")
            .arg(&leaf_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let routes = egress.join("routes.json");
    std::fs::write(&routes, r#"{"version":1,"routes":[{"host":"example.invalid"}]}"#).unwrap();
    let mount = |host: &Path, target: &str| format!("{}:{target}:ro", host.display());
    let c = Container::run(&[
        "-e",
        "BUNDLE_DAEMONS=egress",
        "-e",
        "BOT_BOTTLE_BOTTLE=it-egress",
        "--add-host",
        "up.test:host-gateway",
        "-e",
        &format!("EGRESS_RESOLVE=up.test={}", host_gateway()),
        "-e",
        "EGRESS_UPSTREAM_CA=/etc/bot-bottle/egress/upstream-ca.pem",
        "-e",
        &format!("EGRESS_TOKEN_0={}", ["tok-in-image", "0123456789abcdef"].join("-")),
        "-v",
        &mount(&ca, "/etc/bot-bottle/ca"),
        "-v",
        &mount(&egress, "/etc/bot-bottle/egress"),
        "-p",
        "127.0.0.1::9099",
        &image,
    ]);
    c.wait_for_log("[egress] listening on 0.0.0.0:9099");
    let proxy = c.host_port(9099);
    let bottle_ca = ca.join("ca.crt");
    let url = format!("https://up.test:{port}/");

    let (_, connect, _) = curl(proxy, &bottle_ca, &url);
    assert_eq!(connect, "403", "up.test is not routed yet:\n{}", c.logs());

    // The orchestrator's way: write a temp file and rename it over routes.json.
    let new = format!(
        r#"{{"version":1,"routes":[{{"host":"up.test","port":{port},"auth":{{"token_env":"EGRESS_TOKEN_0"}}}}]}}"#
    );
    common::atomic::write(&routes, new.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (code, body) = loop {
        let (code, connect, body) = curl(proxy, &bottle_ca, &url);
        if connect == "200" {
            break (code, body);
        }
        assert!(Instant::now() < deadline, "routes rewrite never took effect:\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, "200", "through the bumped TLS to the host upstream: {body}\n{}", c.logs());
    // `openssl s_server -www` answers with its status page.
    assert!(body.contains("Ciphers supported in s_server binary"), "{body}");
    let (_, listed, routes_json) = curl(proxy, &bottle_ca, "http://_egress.local/routes");
    assert!(routes_json.contains("up.test") && !routes_json.contains("tok-in-image"), "{listed} {routes_json}");

    // A broken rewrite keeps the last good routes.
    std::fs::write(&routes, b"{ not json").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (code, _, _) = curl(proxy, &bottle_ca, &url);
    assert_eq!(code, "200", "{}", c.logs());
    assert!(c.logs().contains("ROUTES RELOAD REJECTED"), "{}", c.logs());

    c.signal("TERM");
    assert_eq!(c.wait_exit(Duration::from_secs(30)), 0, "{}", c.logs());
}
