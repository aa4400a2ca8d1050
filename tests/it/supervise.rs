//! supervise in the real sidecar image: bundle-init starts it as the non-root user with the
//! bottle's queue dir bind-mounted read-write and the egress directory read-only; the official
//! Python MCP SDK talks to it at the bundle IP (not loopback: the Host the agent uses), and the
//! operator answers with `bot-bottle supervise answer` on the host.

#[path = "../../crates/supervise/tests/it/client.rs"]
mod client;

use std::process::Command;
use std::time::Duration;

use client::{Mode, PyClient};
use serde_json::{Value, json};
use tests::{Container, bin_dir, chown_for_bundle, docker_available, sidecar_image};

fn bot_bottle(home: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("bot-bottle")).args(args).env("BOT_BOTTLE_HOME", home).output().unwrap();
    assert!(out.status.success(), "bot-bottle {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Waits (bounded) until `bot-bottle supervise list --json` shows a pending request; its id.
fn pending_id(home: &std::path::Path) -> String {
    for _ in 0..400 {
        let list: Value = serde_json::from_str(&bot_bottle(home, &["supervise", "list", "--json"])).unwrap();
        if let Some(id) = list.as_array().unwrap().first().and_then(|i| i["id"].as_str()) {
            return id.to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no request reached the bind-mounted queue");
}

#[test]
fn supervise_in_the_image_files_into_the_mounted_queue_and_hears_the_operator() {
    if !docker_available() {
        return;
    }
    let image = sidecar_image();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let queue = home.join("queue/b1");
    let egress = home.join("state/b1/egress");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::create_dir_all(&egress).unwrap();
    std::fs::write(egress.join("routes.json"), r#"{"version":1,"routes":[{"host":"api.example.com"}]}"#).unwrap();
    chown_for_bundle(&queue);
    let c = Container::run(&[
        "-e",
        "BUNDLE_DAEMONS=supervise",
        "-e",
        "BOT_BOTTLE_BOTTLE=b1",
        "-e",
        "SUPERVISE_WAIT_TIMEOUT=60",
        "-e",
        "SUPERVISE_ROUTES=/etc/bot-bottle/egress/routes.json",
        "-v",
        &format!("{}:/run/bot-bottle/queue:rw", queue.display()),
        "-v",
        &format!("{}:/etc/bot-bottle/egress:ro", egress.display()),
        &image,
    ]);
    c.wait_for_log("[supervise] listening on 0.0.0.0:9100");
    let url = format!("http://{}:9100/mcp", c.ip());
    let mut mcp = PyClient::connect(&url, Mode::Current);
    assert_eq!(mcp.connected["server_name"], "bot-bottle-supervise");
    assert_eq!(mcp.list_tools().len(), 5);

    mcp.start_call("ask_operator", json!({"question": "from inside the image?"}));
    let id = pending_id(home);
    let filed: Value =
        serde_json::from_slice(&std::fs::read(queue.join(format!("{id}.request.json"))).unwrap()).unwrap();
    assert_eq!(filed["bottle"], "b1");
    bot_bottle(home, &["supervise", "answer", &id, "--approve", "--notes", "yes"]);
    let r = mcp.result();
    assert_eq!(
        (r["structured"]["status"].as_str(), r["structured"]["notes"].as_str()),
        (Some("approved"), Some("yes")),
        "{r}"
    );

    // An approved route lands in the host's routes.json; the read-only directory mount shows it live.
    mcp.start_call("request_egress", json!({"host": "pypi.org", "reason": "pip"}));
    let id = pending_id(home);
    bot_bottle(home, &["supervise", "answer", &id, "--approve"]);
    assert_eq!(mcp.result()["structured"]["status"], "approved");
    let routes = mcp.call_ok("list_egress_routes", json!({}));
    let hosts: Vec<&str> = routes["routes"].as_array().unwrap().iter().map(|r| r["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["api.example.com", "pypi.org"]);
    drop(mcp);

    c.signal("TERM");
    let code = c.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", c.logs());
}
