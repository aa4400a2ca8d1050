//! DLP end to end: secrets in path, query, header, body, gzip body, split across chunks, base64
//! and hex of a held token, sensitive-prefix env values; block, redact and supervise.

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::formats::{QueueResponse, ResponseStatus};
use http::{Request, StatusCode};
use hyper::body::Frame;

use crate::support::*;

const ENV: &[(&str, &str)] = &[
    ("EGRESS_TOKEN_0", TOKEN),
    ("BOT_BOTTLE_SENSITIVE_PREFIXES", "MYCO_"),
    ("MYCO_DB_PASSWORD", "hunter2-but-much-longer-0042"),
    // A passphrase: a capital, then lower-case letters, as an ordinary word is written.
    ("MYCO_PASSPHRASE", "Correcthorsebatterystaple"),
];

fn routes(p: u16) -> String {
    format!(
        r#"{{"version":1,"routes":[
        {{"host":"api.test","port":{p},"auth":{{"token_env":"EGRESS_TOKEN_0"}}}},
        {{"host":"redact.test","port":{p},"dlp":{{"on_match":"redact"}}}},
        {{"host":"hold.test","port":{p},"dlp":{{"outbound":["known_secrets"],"on_match":"supervise"}}}},
        {{"host":"other.test","port":{p},"dlp":false}},
        {{"host":"std.test","port":{p},"dlp":{{"mode":"standard"}}}}
    ]}}"#
    )
}

async fn world(extra: &[&str]) -> (Upstream, Proxy) {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    let proxy = start_proxy(&routes(up.port()), &ca, ENV, extra).await;
    (up, proxy)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn secrets_anywhere_are_blocked_before_the_upstream_sees_anything() {
    let (up, proxy) = world(&[]).await;
    let p = up.port();
    let gz = proxy.dir.path().join("body.gz");
    std::fs::write(&gz, gzip(format!("{{\"leak\":\"{TOKEN}\"}}").as_bytes())).unwrap();
    let gz_arg = format!("@{}", gz.display());
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("xy{TOKEN}z"));
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("x{TOKEN}"));
    let hexed = hex::encode(TOKEN);
    let header = format!("X-Leak: {TOKEN}");
    let body = format!("data={TOKEN}");
    let b64body = format!("blob={b64}");
    let url = format!("https://api.test:{p}");
    // Built at run time so the repository itself holds no credential-shaped text.
    let gh_body = format!("t={}_{}", "ghp", "0123456789abcdefghijABCDEFGHIJ012345");
    // The held token with its case changed, and its hex in upper case: the scan matches both
    // without a lower-cased copy of the input.
    let upper_body = format!("data={}", TOKEN.to_uppercase());
    let upper_hex = hex::encode_upper(TOKEN);
    // A wide rule's keyword in mixed case, far from the header it governs: the prescan's pass
    // finds where it could start.
    let curl_body = format!(
        "cUrL -s https://api.example.test/v1 \\\n{} -H \"Authorization: Bearer {}\"",
        "  --retry 3".repeat(12),
        ["Zq9Xw2Lm", "7Rt4Kp8Vb3"].concat()
    );
    // Rules that run only around a run as long as their token (`minRun`), their short keywords
    // found by the windowed search, and a card among other numbers (strict mode's payment scan).
    let vault_body = format!("vault login {}.{}", "s", "Zq9Xw2Lm7Rt4Kp8Vb3Nc6Yd1");
    let twilio_body = format!("{{\"twilio\":\"{}{}\"}}", "SK", "0123456789abcdef0a1b2c3d4e5f6789");
    let mailgun_body = format!("auth=(\"api\", \"{}-{}\")", "key", "9f8e7d6c5b4a39281706f5e4d3c2b1a0");
    let card_body =
        format!("{{\"qty\": 2, \"card\": \"{} {} {} {}\", \"zip\": 12345}}", "4111", "1111", "1111", "1111");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (format!("{url}/path/{TOKEN}"), vec![], "in url"),
        (format!("{url}/q?k={TOKEN}"), vec![], "in url"),
        (format!("{url}/q?k={hexed}"), vec![], "known-secret in url"),
        (format!("{url}/q?k={b64url}"), vec![], "in url"),
        (format!("{url}/h"), vec!["-H", &header], "in header x-leak"),
        (format!("{url}/b"), vec!["--data-binary", &body], "in body"),
        (format!("{url}/b"), vec!["--http1.1", "--data-binary", &body], "in body"),
        (format!("{url}/b"), vec!["--data-binary", &b64body], "known-secret in body"),
        (format!("{url}/g"), vec!["--data-binary", &gz_arg, "-H", "Content-Encoding: gzip"], "in body"),
        (format!("{url}/e"), vec!["-d", "pw=hunter2-but-much-longer-0042"], "in body"),
        // Written as words are, the passphrase once passed for one.
        (format!("{url}/w"), vec!["-d", "my passphrase is Correcthorsebatterystaple ok"], "in body"),
        (format!("{url}/w"), vec!["--data-binary", r#"{"text":"\nCorrecthorsebatterystaple"}"#], "in body"),
        // Not held by the proxy, but shaped like a credential (the shared token rules).
        (format!("{url}/t"), vec!["-d", &gh_body], "in body"),
        (format!("{url}/c"), vec!["--data-binary", &upper_body], "known-secret in body"),
        (format!("{url}/q?k={upper_hex}"), vec![], "known-secret in url"),
        (format!("https://std.test:{p}/c"), vec!["--data-binary", &curl_body], "curl-auth-header in body"),
        (format!("{url}/v"), vec!["--data-binary", &vault_body], "vault-service-token in body"),
        (format!("{url}/v"), vec!["--data-binary", &twilio_body], "twilio-api-key in body"),
        (format!("{url}/v"), vec!["--data-binary", &mailgun_body], "mailgun-private-api-token in body"),
        (format!("{url}/v"), vec!["--data-binary", &card_body], "payment-card-number in body"),
    ];
    for (u, args, want) in &cases {
        let (code, body) = curl(&proxy, u, args).await;
        assert_eq!(code, 403, "{u} {args:?}: {body}");
        assert!(body.starts_with("bot-bottle egress: blocked: dlp: "), "{body}");
        assert!(body.contains(want), "{want:?} not in {body:?}");
        assert!(!body.contains(TOKEN));
    }
    assert_eq!(up.count(), 0, "{:?}", up.seen());
    let audit = proxy.audit_text();
    assert_eq!(audit.lines().count(), cases.len(), "{audit}");
    assert!(!audit.contains(TOKEN) && !audit.contains(&hexed) && !audit.contains("hunter2"), "{audit}");
    assert!(!audit.contains("Correcthorse"), "{audit}");
    assert!(!audit.contains("ghp_0123456789abcdef"), "{audit}");
    // Clean requests still pass, and a route with DLP off forwards what it is given.
    assert_eq!(curl(&proxy, &format!("{url}/fine"), &["-d", "nothing secret"]).await.0, 200);
    assert_eq!(curl(&proxy, &format!("https://other.test:{p}/x"), &["-d", &body]).await.0, 200);
    assert_eq!(up.count(), 2);
}

/// `strict` (the default) blocks what is shaped like a credential whatever the rules'
/// allowlists excuse, and payment data; `standard` (the model provider's route) excuses
/// documentation examples, placeholders and card numbers. Every finding says which mode decided.
#[tokio::test]
async fn strict_routes_block_credential_shapes_standard_routes_excuse_examples() {
    let (up, proxy) = world(&[]).await;
    let p = up.port();
    let example = ["AKIA", "IOSFODNN7", "EXAMPLE"].concat();
    let card = ["4111", "1111", "1111", "1111"].concat();
    let iban = ["GB82", "WEST", "1234", "5698", "7654", "32"].concat();
    let pat = format!("{}_{}", "ghp", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVb");
    let cases = [
        (format!("{{\"aws_key\":\"{example}\"}}"), "aws-access-token in body (strict)"),
        (format!("{{\"card_number\":\"{card}\"}}"), "payment-card-number in body (strict)"),
        // A number beside it once made the card one longer number that is no card.
        (format!("qty=2 {card} 12"), "payment-card-number in body (strict)"),
        (format!("iban={iban}"), "iban in body (strict)"),
    ];
    for (body, want) in &cases {
        let (code, resp) = curl(&proxy, &format!("https://api.test:{p}/s"), &["--data-binary", body]).await;
        assert_eq!(code, 403, "{body}: {resp}");
        assert!(resp.contains(want), "{want:?} not in {resp:?}");
        let (code, resp) = curl(&proxy, &format!("https://std.test:{p}/s"), &["--data-binary", body]).await;
        assert_eq!((code, resp.as_str()), (200, "upstream ok"), "standard excuses {body}");
    }
    // A live-shaped token is blocked by both, and reported as standard's.
    for host in ["api.test", "std.test"] {
        let (code, resp) = curl(&proxy, &format!("https://{host}:{p}/t"), &["-d", &format!("t={pat}")]).await;
        assert_eq!(code, 403, "{host}: {resp}");
        assert!(resp.contains("github-pat in body (standard)"), "{resp}");
    }
    // A card number that fails Luhn is nothing.
    let (code, _) = curl(&proxy, &format!("https://api.test:{p}/n"), &["-d", "order=4111111111111112"]).await;
    assert_eq!(code, 200);
    assert_eq!(up.count(), cases.len() + 1);
    let audit = proxy.audit_text();
    assert!(!audit.contains(&example) && !audit.contains(&card) && !audit.contains(&pat), "{audit}");
}

#[tokio::test]
async fn secret_split_across_chunks_is_seen_whole() {
    let (up, proxy) = world(&[]).await;
    let p = up.port();
    for h2 in [false, true] {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let (a, b) = TOKEN.split_at(11);
        tx.send(Bytes::from(format!("prefix {a}"))).unwrap();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Bytes::from(format!("{b} suffix"))).unwrap();
        });
        let req = Request::builder()
            .method("POST")
            .uri(if h2 { format!("https://api.test:{p}/up") } else { "/up".into() })
            .header("content-type", "text/plain");
        let req = if h2 { req } else { req.header("host", format!("api.test:{p}")) };
        let req = req.body(ChanBody(rx)).unwrap();
        let (st, body) = rust_request(&proxy, &format!("api.test:{p}"), "api.test", h2, req).await.unwrap();
        sender.await.unwrap();
        assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("known-secret in body"), "{body}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn oversized_bodies_are_refused_whole() {
    let (up, proxy) = world(&["--max-body-bytes=4096"]).await;
    let big = "a".repeat(10_000);
    let (code, body) = curl(&proxy, &format!("https://api.test:{}/big", up.port()), &["--data-binary", &big]).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.starts_with("bot-bottle egress: blocked: request body is larger than 4096 bytes"), "{body}");
    let bomb = proxy.dir.path().join("bomb.gz");
    std::fs::write(&bomb, gzip(&vec![b'x'; 1 << 20])).unwrap();
    let (code, body) = curl(
        &proxy,
        &format!("https://api.test:{}/bomb", up.port()),
        &["--data-binary", &format!("@{}", bomb.display()), "-H", "Content-Encoding: gzip"],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("decoded body is larger than 4096 bytes"), "{body}");
    let (code, body) =
        curl(&proxy, &format!("https://api.test:{}/z", up.port()), &["-d", "x", "-H", "Content-Encoding: zstd"]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cannot be scanned"), "{body}");
    assert_eq!(up.count(), 0);
}

/// Bodies over the inline limit are scanned off the serving thread: the verdict is the same,
/// clean ones arrive byte for byte, and a decode failure there is still a refusal.
#[tokio::test]
async fn large_bodies_are_scanned_like_small_ones() {
    let (up, proxy) = world(&[]).await;
    let url = format!("https://api.test:{}", up.port());
    let dir = proxy.dir.path();
    let filler: String = (0..600_000u32).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    let (head, tail) = filler.split_at(300_000);
    std::fs::write(dir.join("leak.txt"), format!("{head} {TOKEN} {tail}")).unwrap();
    let (code, body) =
        curl(&proxy, &format!("{url}/leak"), &["--data-binary", &format!("@{}/leak.txt", dir.display())]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("known-secret in body"), "{body}");
    // Compressed to more than the inline limit, with the token at the very end.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noisy: Vec<u8> = (0..400_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    let mut plain = noisy.clone();
    plain.extend_from_slice(format!(" {TOKEN}").as_bytes());
    let zipped = gzip(&plain);
    assert!(zipped.len() > 64 * 1024);
    std::fs::write(dir.join("leak.gz"), &zipped).unwrap();
    let gz_args = ["--data-binary", &format!("@{}/leak.gz", dir.display()), "-H", "Content-Encoding: gzip"];
    let (code, body) = curl(&proxy, &format!("{url}/gz"), &gz_args).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("known-secret in body"), "{body}");
    // Not gzip at all, though it says so: refused on the blocking pool too.
    std::fs::write(dir.join("bad.gz"), &noisy).unwrap();
    let bad_args = ["--data-binary", &format!("@{}/bad.gz", dir.display()), "-H", "Content-Encoding: gzip"];
    let (code, body) = curl(&proxy, &format!("{url}/bad"), &bad_args).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("gzip"), "{body}");
    assert_eq!(up.count(), 0);
    std::fs::write(dir.join("clean.txt"), &filler).unwrap();
    let (code, body) =
        curl(&proxy, &format!("{url}/clean"), &["--data-binary", &format!("@{}/clean.txt", dir.display())]).await;
    assert_eq!((code, body.as_str()), (200, "upstream ok"));
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, filler.as_bytes());
}

#[tokio::test]
async fn redact_mode_forwards_with_secrets_replaced() {
    let (up, proxy) = world(&[]).await;
    let p = up.port();
    let gz = proxy.dir.path().join("r.gz");
    std::fs::write(&gz, gzip(format!("zipped {TOKEN} end").as_bytes())).unwrap();
    let header = format!("X-Leak: a {TOKEN} b");
    let body = format!("before {TOKEN} after");
    let (code, resp) =
        curl(&proxy, &format!("https://redact.test:{p}/r?k={TOKEN}&z=1"), &["-H", &header, "--data-binary", &body])
            .await;
    assert_eq!((code, resp.as_str()), (200, "upstream ok"));
    let (code, _) = curl(
        &proxy,
        &format!("https://redact.test:{p}/g"),
        &["--data-binary", &format!("@{}", gz.display()), "-H", "Content-Encoding: gzip"],
    )
    .await;
    assert_eq!(code, 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].uri.ends_with("/r?k=%5BREDACTED%5D&z=1"), "{}", seen[0].uri);
    assert_eq!(seen[0].headers.get("x-leak").unwrap(), "a [REDACTED] b");
    assert_eq!(seen[0].body, "before [REDACTED] after");
    assert_eq!(seen[1].body, "zipped [REDACTED] end", "decoded, redacted, sent identity");
    assert!(seen[1].headers.get("content-encoding").is_none());
    let audit = proxy.audit_lines();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|l| l["event"] == "redact"));
    assert!(!proxy.audit_text().contains(TOKEN));
}

/// Answers the first queue request that appears with `status`.
async fn answer_when_filed(queue: common::queue::Queue, status: ResponseStatus) -> serde_json::Value {
    for _ in 0..200 {
        let (items, _) = queue.list().unwrap();
        if let Some((req, None)) = items.into_iter().next() {
            queue.answer(&req.id, &QueueResponse { status, notes: "test".into(), arguments: None }).unwrap();
            return serde_json::to_value(&req).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no request was filed");
}

#[tokio::test]
async fn supervise_mode_holds_until_the_operator_answers() {
    let (up, proxy) = world(&[]).await;
    let p = up.port();
    let body = format!("secret={TOKEN}");
    for (status, code) in [(ResponseStatus::Rejected, 403), (ResponseStatus::Approved, 200)] {
        for f in std::fs::read_dir(&proxy.queue).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let answerer = tokio::spawn(answer_when_filed(common::queue::Queue::new(&proxy.queue), status));
        let (got, resp) = curl(&proxy, &format!("https://hold.test:{p}/send"), &["--data-binary", &body]).await;
        let filed = answerer.await.unwrap();
        assert_eq!(got, code, "{resp}");
        assert_eq!(filed["tool"], "egress_dlp");
        assert_eq!(filed["bottle"], "test-bottle");
        assert_eq!(filed["arguments"]["host"], "hold.test");
        assert_eq!(filed["arguments"]["findings"][0]["location"], "body");
        assert!(!filed.to_string().contains(TOKEN), "{filed}");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "only the approved request went out");
    assert_eq!(seen[0].body, body);
    let events: Vec<String> = proxy.audit_lines().iter().map(|l| l["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["hold", "deny", "hold"], "approved allow lines only at log 2");
}

#[tokio::test]
async fn supervise_without_a_queue_denies() {
    let ca = Ca::new("upstream CA");
    let up = tls_upstream(&ca, NAMES, &[b"h2", b"http/1.1"]).await;
    let routes = format!(
        r#"{{"version":1,"routes":[{{"host":"hold.test","port":{},"dlp":{{"on_match":"supervise"}}}}]}}"#,
        up.port()
    );
    // A second --supervise-queue= with an empty value is not allowed, so build a world without one.
    let proxy = start_proxy_no_queue(&routes, &ca).await;
    let (code, body) =
        curl(&proxy, &format!("https://hold.test:{}/s", up.port()), &["-d", &format!("k={TOKEN}")]).await;
    assert_eq!(code, 403);
    assert!(body.contains("no queue configured"), "{body}");
    assert_eq!(up.count(), 0);
}

async fn start_proxy_no_queue(routes: &str, ca: &Ca) -> Proxy {
    start_proxy_with(routes, ca, &[("EGRESS_TOKEN_0", TOKEN)], &[], false).await
}

/// A request body fed chunk by chunk from a channel (each chunk its own frame on the wire).
struct ChanBody(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn held_bodies_share_a_bounded_budget() {
    let (up, proxy) = world(&["--max-body-bytes=4096", "--max-buffered-bytes=8192", "--header-timeout=1s"]).await;
    let p = up.port();
    // One request held for the operator keeps its 4 KiB reserved...
    let held_body = format!("secret={TOKEN}{}", "x".repeat(3800));
    let proxy_addr = proxy.addr;
    let ca = proxy.ca_pem_path.clone();
    let held = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "-x"])
            .arg(format!("http://{proxy_addr}"))
            .arg("--cacert")
            .arg(ca)
            .args(["--data-binary", &held_body])
            .arg(format!("https://hold.test:{p}/held"))
            .output()
            .unwrap()
    });
    for _ in 0..100 {
        if std::fs::read_dir(&proxy.queue).unwrap().next().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...so an encoded body (raw + decoded room) cannot be held too: 503, nothing sent.
    let gz = proxy.dir.path().join("small.gz");
    std::fs::write(&gz, gzip(b"harmless")).unwrap();
    let (code, body) = curl(
        &proxy,
        &format!("https://api.test:{p}/second"),
        &["--data-binary", &format!("@{}", gz.display()), "-H", "Content-Encoding: gzip"],
    )
    .await;
    assert_eq!(code, 503, "{body}");
    // A body-less request is never held back by the budget.
    assert_eq!(curl(&proxy, &format!("https://api.test:{p}/get"), &[]).await.0, 200);
    // Reject the held one; then the budget is free again.
    let (items, _) = common::queue::Queue::new(&proxy.queue).list().unwrap();
    common::queue::Queue::new(&proxy.queue)
        .answer(
            &items[0].0.id,
            &QueueResponse { status: ResponseStatus::Rejected, notes: String::new(), arguments: None },
        )
        .unwrap();
    let out = held.await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    let (code, _) = curl(
        &proxy,
        &format!("https://api.test:{p}/third"),
        &["--data-binary", &format!("@{}", gz.display()), "-H", "Content-Encoding: gzip"],
    )
    .await;
    assert_eq!(code, 200);
    let paths: Vec<String> = up.seen().iter().map(|s| s.uri.rsplit('/').next().unwrap().to_string()).collect();
    assert_eq!(paths, ["get", "third"]);
}
