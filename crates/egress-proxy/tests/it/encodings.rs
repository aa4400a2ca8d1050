//! What DLP reads, and in which forms: a held token percent-encoded any way, double and triple
//! percent-encoding, hex with delimiters, base64 inside percent-encoding; and every part of the
//! request head (the method, header names, `Upgrade` and `Connection` values). Each proved from
//! the upstream's own record: nothing arrived.
//! Values shaped like credentials are assembled at run time so the repository itself holds none.

use base64::Engine as _;

use crate::support::*;

/// A held token percent-encoded in every way: every byte, upper/lower/mixed-case hex, only
/// some bytes, and twice over; in the path, the query, a header and a form body.
#[tokio::test]
async fn percent_encoded_held_token_any_case_any_mix_never_reaches_the_upstream() {
    let w = bypass_world().await;
    let url = format!("https://api.test:{}", w.up.port());
    let forms = [
        ("every byte, upper case", percent_all(TOKEN, |_| true)),
        ("every byte, lower case", percent_all(TOKEN, |_| false)),
        ("every byte, mixed case", percent_all(TOKEN, |i| i % 2 == 0)),
        (
            "some bytes",
            TOKEN
                .bytes()
                .enumerate()
                .map(|(i, b)| if i % 3 == 0 { format!("%{b:02x}") } else { (b as char).to_string() })
                .collect(),
        ),
        ("twice", percent_all(TOKEN, |_| true).replace('%', "%25")),
    ];
    for (what, form) in &forms {
        for (place, args, target) in [
            ("query", vec![], format!("{url}/q?k={form}")),
            ("path", vec!["--path-as-is".to_string()], format!("{url}/p/{form}")),
            ("header", vec!["-H".to_string(), format!("X-Data: {form}")], format!("{url}/h")),
            ("body", vec!["--data-binary".to_string(), format!("k={form}")], format!("{url}/b")),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_refused(&w, &format!("{what} in the {place}"), curl(&w.proxy, &target, &args).await);
        }
    }
}

/// Headers DLP never read: the values of `Upgrade` and `Connection` (taken out before the scan
/// and put back for a WebSocket upgrade), header names, and the method; over h1 and h2.
#[tokio::test]
async fn upgrade_connection_header_names_and_method_are_scanned() {
    let w = bypass_world().await;
    let url = format!("https://api.test:{}/u", w.up.port());
    let hex_name = format!("x-{}: 1", hex::encode(TOKEN));
    let raw_name = format!("{TOKEN}: 1");
    let upgrade = format!("Upgrade: {TOKEN}");
    let connection = format!("Connection: upgrade, {TOKEN}");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("upgrade value", vec!["--http1.1", "-H", "Connection: upgrade", "-H", &upgrade]),
        ("connection value", vec!["--http1.1", "-H", &connection, "-H", "Upgrade: websocket"]),
        ("hex header name h1", vec!["--http1.1", "-H", &hex_name]),
        ("hex header name h2", vec!["--http2", "-H", &hex_name]),
        ("raw header name h1", vec!["--http1.1", "-H", &raw_name]),
        ("method h1", vec!["--http1.1", "-X", TOKEN]),
        ("method h2", vec!["--http2", "-X", TOKEN]),
    ];
    for (what, args) in cases {
        assert_refused(&w, what, curl(&w.proxy, &url, &args).await);
    }
}

/// Encodings attackers use: double and triple percent-encoding, hex with delimiters, base64
/// inside percent-encoding; of the held token and of a credential-shaped value.
#[tokio::test]
async fn layered_and_delimited_encodings_are_decoded() {
    let w = bypass_world().await;
    let url = format!("https://api.test:{}", w.up.port());
    let pat = format!("{}_{}", "ghp", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVb");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let hex_with = |s: &str, sep: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(sep);
    let once = percent_all(TOKEN, |_| true);
    let forms = [
        ("token, percent twice", once.replace('%', "%25")),
        ("token, percent three times", once.replace('%', "%2525")),
        ("token, base64 inside percent", percent_all(&b64(TOKEN), |_| false)),
        ("token, hex with dashes", hex_with(TOKEN, "-")),
        ("token, hex with colons", hex_with(TOKEN, ":")),
        ("token, \\x hex", format!("\\x{}", hex_with(TOKEN, "\\x"))),
        ("token, spaced upper hex", hex_with(TOKEN, " ").to_uppercase()),
        ("pat, hex with dashes", hex_with(&pat, "-")),
        ("pat, hex with colons", hex_with(&pat, ":")),
        ("pat, \\x hex", format!("\\x{}", hex_with(&pat, "\\x"))),
        ("pat, base64 inside percent", percent_all(&b64(&pat), |i| i % 2 == 1)),
        ("pat, percent twice", percent_all(&pat, |_| true).replace('%', "%25")),
    ];
    for (what, form) in &forms {
        let body = format!("{{\"data\":\"{}\"}}", form.replace('\\', "\\\\"));
        let (code, out) = curl(&w.proxy, &format!("{url}/b"), &["--data-binary", &body]).await;
        assert_refused(&w, &format!("{what} in the body"), (code, out));
        if !form.contains(' ') && !form.contains('\\') {
            let (code, out) = curl(&w.proxy, &format!("{url}/q?d={form}"), &[]).await;
            assert_refused(&w, &format!("{what} in the query"), (code, out));
        }
    }
}
