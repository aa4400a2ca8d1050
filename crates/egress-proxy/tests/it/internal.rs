//! A DNS answer pointing inside — RFC 1918 (the Docker bridges, the host gateway, other
//! bottles), 100.64.0.0/10 (a metadata service lives there), link-local metadata, IPv6 ULA
//! (`fd00:ec2::254`), NAT64 and IPv4-mapped forms of those — is never followed.
//!
//! Proved in a network namespace the test creates (`unshare --net --mount`; needs root, which
//! CI has): there loopback carries those addresses as its own, a recording upstream answers on
//! all of them, and `/etc/hosts` (bind-mounted over, inside the namespace only) gives the answers
//! the system resolver returns to the proxy. No `--resolve` pin is involved, and no packet
//! leaves the namespace. A name answered with a public address (TEST-NET-2, also local there)
//! is followed: the control that shows the setup would let a request through.

use std::process::Command;

use crate::support::*;

/// Set in the re-executed test process that runs inside the namespace.
const INSIDE: &str = "EGRESS_IT_INSIDE_NETNS";

/// (name, the address its DNS answer gives, an address to put on loopback for it).
const ANSWERS: &[(&str, &str, &str)] = &[
    ("rfc1918-10.test", "10.0.0.7", "10.0.0.7/32"),
    ("rfc1918-172.test", "172.17.0.1", "172.17.0.1/32"),
    ("rfc1918-192.test", "192.168.65.254", "192.168.65.254/32"),
    ("cgnat.test", "100.100.100.200", "100.100.100.200/32"),
    ("metadata.test", "169.254.169.254", "169.254.169.254/32"),
    ("ula.test", "fd00:ec2::254", "fd00:ec2::254/128"),
    ("nat64.test", "64:ff9b::a00:7", "64:ff9b::a00:7/128"),
    ("mapped.test", "::ffff:10.0.0.7", "10.0.0.7/32"),
];
const PUBLIC: (&str, &str, &str) = ("public.test", "198.51.100.7", "198.51.100.7/32");

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn dns_answers_pointing_at_internal_addresses_are_refused() {
    if std::env::var_os(INSIDE).is_none() {
        // Re-run just this test inside a new network and mount namespace.
        let out = Command::new("unshare")
            .args(["--net", "--mount", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(["internal::dns_answers_pointing_at_internal_addresses_are_refused", "--exact", "--nocapture"])
            .env(INSIDE, "1")
            .output()
            .expect("running unshare (util-linux)");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "inside the namespace:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "the test did not run inside the namespace:\n{stdout}\n{stderr}");
        return;
    }
    run("ip", &["link", "set", "lo", "up"]);
    let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for (name, answer, local) in ANSWERS.iter().chain([&PUBLIC]) {
        // Some addresses serve two names; adding one twice fails harmlessly.
        let family = if local.contains(':') { "-6" } else { "-4" };
        let _ = Command::new("ip").args([family, "addr", "add", local, "dev", "lo"]).status();
        hosts.push_str(&format!("{answer} {name}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts");
    std::fs::write(&file, hosts).unwrap();
    run("mount", &["--bind", file.to_str().unwrap(), "/etc/hosts"]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ca = Ca::new("upstream CA");
        let names: Vec<&str> = ANSWERS.iter().chain([&PUBLIC]).map(|a| a.0).collect();
        let up = tls_upstream_on(&ca, &names, &[b"http/1.1"], "[::]:0").await;
        let routes: Vec<String> = names.iter().map(|n| format!(r#"{{"host":"{n}","port":{}}}"#, up.port())).collect();
        let proxy = start_proxy(&format!(r#"{{"version":1,"routes":[{}]}}"#, routes.join(",")), &ca, &[], &[]).await;
        for (name, answer, _) in ANSWERS {
            let (code, body) = curl(&proxy, &format!("https://{name}:{}/x", up.port()), &[]).await;
            assert_eq!(code, 403, "{name} -> {answer}: {body}");
            assert!(body.contains("internal address"), "{name}: {body}");
            assert_eq!(up.count(), 0, "{name} -> {answer} reached the upstream: {:?}", up.seen());
        }
        let (code, body) = curl(&proxy, &format!("https://{}:{}/x", PUBLIC.0, up.port()), &[]).await;
        assert_eq!((code, body.as_str()), (200, "upstream ok"), "the control request");
        assert_eq!(up.count(), 1);
        let denials = proxy.audit_lines().iter().filter(|l| l["event"] == "deny").count();
        assert_eq!(denials, ANSWERS.len());
    });
}
