//! Encoded text inside scanned bytes: base64 (standard and URL-safe), hex and percent-encoding.
//! A secret committed as `tls.key: LS0tLS1CRUdJTi…` (a Kubernetes Secret) or sent as
//! `c2VjcmV0PV…` is only visible once decoded, so the rules scan each decoded segment too, and
//! what they find there again (to [`MAX_DEPTH`] layers), reporting it at the encoded segment's
//! place in the original input.
//!
//! A segment is decoded only when the result is text (printable ASCII and whitespace): long
//! identifiers also look like base64 but decode to noise, and are skipped.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use regex::bytes::Regex;

/// Layers of encoding looked through (base64 of percent-encoded base64 is 3).
pub(crate) const MAX_DEPTH: usize = 3;
/// Shortest encoded segment worth decoding (shorter ones hide no credential).
const MIN_LEN: usize = 16;

/// Runs of the base64 alphabets (hex runs are among them).
static RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u)[A-Za-z0-9+/_-]{16,}={0,2}").unwrap_or_else(|e| panic!("base64 pattern: {e}")));
static PERCENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)(?:[A-Za-z0-9+/=_.~-]|%[0-9A-Fa-f]{2})*%[0-9A-Fa-f]{2}(?:[A-Za-z0-9+/=_.~-]|%[0-9A-Fa-f]{2})*")
        .unwrap_or_else(|e| panic!("percent pattern: {e}"))
});

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
static STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
static URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// One encoded segment of the input and its decoded text.
pub(crate) struct Segment {
    pub start: usize,
    pub end: usize,
    pub text: Vec<u8>,
}

fn is_text(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|&c| (0x20..0x7f).contains(&c) || matches!(c, b'\t' | b'\n' | b'\r'))
}

fn base64(s: &[u8]) -> Option<Vec<u8>> {
    let body = s.strip_suffix(b"==").or_else(|| s.strip_suffix(b"=")).unwrap_or(s);
    // A length of 4n+1 cannot be base64; the last character belongs to something else.
    let body = if body.len() % 4 == 1 { &body[..body.len() - 1] } else { body };
    let url = body.iter().any(|&c| c == b'-' || c == b'_');
    let std = body.iter().any(|&c| c == b'+' || c == b'/');
    if url && std {
        return None;
    }
    let engine = if url { &URL_SAFE } else { &STANDARD };
    engine.decode(body).ok()
}

fn hex(s: &[u8]) -> Option<Vec<u8>> {
    let s = &s[..s.len() & !1];
    s.chunks_exact(2).map(|p| std::str::from_utf8(p).ok().and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

fn percent(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let decoded = (s[i] == b'%' && i + 2 < s.len() + 1)
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

/// The encoded segments of `data` that decode to text: percent-encoded runs, hex runs of 32 or
/// more digits, and base64 runs of 16 or more characters with both cases.
pub(crate) fn segments(data: &[u8]) -> Vec<Segment> {
    let mut out = Vec::new();
    if data.contains(&b'%') {
        for m in PERCENT.find_iter(data) {
            let text = percent(m.as_bytes());
            if m.len() >= MIN_LEN / 2 && is_text(&text) {
                out.push(Segment { start: m.start(), end: m.end(), text });
            }
        }
    }
    for m in RUN.find_iter(data) {
        let s = m.as_bytes();
        let text = if s.len() >= 2 * MIN_LEN && s.iter().all(u8::is_ascii_hexdigit) {
            hex(s)
        } else if s.iter().any(u8::is_ascii_uppercase) && s.iter().any(u8::is_ascii_lowercase) {
            // Plain words and identifiers in one case are not worth a decode; nor is a long run
            // (an embedded image, say) whose first bytes already decode to something not text.
            let head = &s[..s.len().min(256)];
            if s.len() > head.len() && !base64(head).is_some_and(|t| is_text(&t)) {
                continue;
            }
            base64(s)
        } else {
            None
        };
        if let Some(text) = text.filter(|t| t.len() >= 6 && is_text(t)) {
            out.push(Segment { start: m.start(), end: m.end(), text });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;

    fn decoded(data: &str) -> Vec<String> {
        segments(data.as_bytes()).into_iter().map(|s| String::from_utf8(s.text).unwrap()).collect()
    }

    #[test]
    fn finds_text_in_each_encoding() {
        let b64 = general_purpose::STANDARD.encode("password=hunter2-hunter2");
        assert_eq!(decoded(&format!("x: {b64}\n")), ["password=hunter2-hunter2"]);
        let url = general_purpose::URL_SAFE_NO_PAD.encode("k=\u{7f}?>>>???>>>".replace('\u{7f}', "~"));
        assert_eq!(decoded(&format!("t={url}")), ["k=~?>>>???>>>"]);
        let plain = ["aws_secret=abcd", "efgh12345678"].concat();
        let hexed: String = plain.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decoded(&hexed), [plain]);
        assert_eq!(decoded("q=secret%3Dabc%2Bdef%2Fghi"), ["q=secret=abc+def/ghi"]);
    }

    #[test]
    fn noise_and_identifiers_are_not_decoded() {
        assert!(decoded("let some_long_identifier_name = other_long_identifier_value;").is_empty());
        assert!(decoded("ThisIsACamelCaseIdentifierName").is_empty(), "decodes to bytes that are not text");
        assert!(decoded("0123456789abcdef0123456789abcdef").is_empty(), "hex of binary");
        let image: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert!(decoded(&general_purpose::STANDARD.encode(&image)).is_empty(), "a long binary run");
        let text = "line of text with password=hunter2hunter2\n".repeat(40);
        assert_eq!(decoded(&general_purpose::STANDARD.encode(&text)), [text], "a long text run");
    }
}
