//! Encoded text inside scanned bytes: base64 (standard and URL-safe), hex (plain, any case, or
//! delimited: `41-4b-…`, `41:4b:…`, `41 4b …`, `\x41\x4b…`, `0x41,0x4b…`) and
//! percent-encoding (any case, any mix of encoded and plain characters). A secret committed as
//! `tls.key: LS0tLS1CRUdJTi…` (a Kubernetes Secret) or sent as `c2VjcmV0PV…` is only visible
//! once decoded, so the scan looks at each decoded segment too, and at what that decodes to
//! again (to [`MAX_DEPTH`] layers: double and triple percent-encoding, base64 inside
//! percent-encoding), reporting it at the encoded segment's place in the original input
//! ([`super::layered`]).
//!
//! A segment is decoded only when the result is text (printable ASCII and whitespace): long
//! identifiers also look like base64 but decode to noise, and are skipped. Hex is the exception:
//! a hex blob that decodes to binary with text inside (`deadbeef` + a key + padding) is kept as
//! its printable runs of 8 or more characters, one per line.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use regex::bytes::Regex;

use super::prescan::Prescan;

/// Layers of encoding looked through (base64 of percent-encoded base64 is 3).
pub(crate) const MAX_DEPTH: usize = 3;
/// Shortest encoded segment worth decoding (shorter ones hide no credential).
const MIN_LEN: usize = 16;

/// Hex pairs with a delimiter between them, or each with a `\x` (or JSON-escaped `\\x`) / `0x`
/// prefix: at least 8 bytes.
static DELIMITED_HEX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?-u)[0-9A-Fa-f]{2}(?:[-: ][0-9A-Fa-f]{2}){7,}|(?:\\{1,2}[xX][0-9A-Fa-f]{2}){8,}|(?:0[xX][0-9A-Fa-f]{2}(?:, ?| )?){8,}",
    )
    .unwrap_or_else(|e| panic!("delimited hex pattern: {e}"))
});
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

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex(s: &[u8]) -> Option<Vec<u8>> {
    let s = &s[..s.len() & !1];
    s.chunks_exact(2).map(|p| Some(hex_value(p[0])? << 4 | hex_value(p[1])?)).collect()
}

/// The bytes of delimited hex: every pair of hex digits that is not an `x` prefix's `0`.
fn delimited_hex(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 3);
    let mut i = 0;
    while i + 1 < s.len() {
        if s[i] == b'0' && matches!(s[i + 1], b'x' | b'X') {
            i += 2;
            continue;
        }
        match (hex_value(s[i]), hex_value(s[i + 1])) {
            (Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 2;
            }
            _ => i += 1,
        }
    }
    out
}

/// What a human would read in decoded hex: the bytes themselves when they are text, else
/// their printable runs of 8 or more characters, one per line (none: nothing to read).
fn readable(bytes: Vec<u8>) -> Option<Vec<u8>> {
    if is_text(&bytes) {
        return Some(bytes);
    }
    let mut out = Vec::new();
    for run in bytes.split(|&c| !(0x20..0x7f).contains(&c) && c != b'\t').filter(|r| r.len() >= 8) {
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(run);
    }
    (!out.is_empty()).then_some(out)
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

/// The encoded segments of `data` that decode to text — percent-encoded runs, delimited hex of 8
/// or more bytes, hex runs of 32 or more digits, and base64 runs of 16 or more characters with
/// both cases — given its prescan: every encoded segment lies inside one of its runs (or is one
/// of its hex chains), so only runs long enough to hold one are looked at.
pub(crate) fn segments_in(data: &[u8], pre: &Prescan) -> Vec<Segment> {
    let mut out = Vec::new();
    for &(s, e) in &pre.hex_chains {
        if let Some(text) = readable(delimited_hex(&data[s..e])) {
            out.push(Segment { start: s, end: e, text });
        }
    }
    for &(rs, re) in &pre.runs {
        let run = &data[rs..re];
        let first = out.len();
        if run.contains(&b'%') {
            for m in PERCENT.find_iter(run) {
                let text = percent(m.as_bytes());
                if m.len() >= MIN_LEN / 2 && is_text(&text) {
                    out.push(Segment { start: rs + m.start(), end: rs + m.end(), text });
                }
            }
        }
        // 8 pairs and 7 delimiters at the least; the regex only where it could match.
        if run.len() >= 23 && may_hold_delimited_hex(run) {
            for m in DELIMITED_HEX.find_iter(run) {
                if let Some(text) = readable(delimited_hex(m.as_bytes())) {
                    out.push(Segment { start: rs + m.start(), end: rs + m.end(), text });
                }
            }
        }
        if run.len() < MIN_LEN {
            continue;
        }
        for (s, e) in base64_runs(run) {
            if out[first..].iter().any(|seg| seg.start <= rs + s && rs + e <= seg.end) {
                // Inside delimited hex already decoded (`41-4b-49…` is also a base64-alphabet run).
                continue;
            }
            if let Some(text) = decode_run(&run[s..e]) {
                out.push(Segment { start: rs + s, end: rs + e, text });
            }
        }
    }
    out
}

/// What every [`DELIMITED_HEX`] match holds, counted in one pass: seven delimiters (`-`, `:`
/// or space: pairs with delimiters) or eight `x`/`X` (pairs after `\x` or `0x`). Most runs
/// (URLs, identifiers) hold neither, and the regex is not run over them.
fn may_hold_delimited_hex(run: &[u8]) -> bool {
    let (mut delimiters, mut xs) = (0, 0);
    for &b in run {
        delimiters += usize::from(matches!(b, b'-' | b':' | b' '));
        xs += usize::from(b | 0x20 == b'x');
    }
    delimiters >= 7 || xs >= 8
}

/// Whether `b` is in a base64 alphabet (standard or URL-safe).
fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-')
}

/// The base64-alphabet runs of `run` that are [`MIN_LEN`] or more long, each with up to two `=`
/// of padding after it.
fn base64_runs(run: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < run.len() {
        if !is_base64(run[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < run.len() && is_base64(run[i]) {
            i += 1;
        }
        if i - start >= MIN_LEN {
            let mut end = i;
            while end < run.len() && end - i < 2 && run[end] == b'=' {
                end += 1;
            }
            out.push((start, end));
            i = end;
        }
    }
    out
}

/// What a base64-alphabet run decodes to, if text: hex (32 or more digits), or base64 with both
/// cases.
fn decode_run(s: &[u8]) -> Option<Vec<u8>> {
    let text = if s.len() >= 2 * MIN_LEN && s.iter().all(u8::is_ascii_hexdigit) {
        hex(s).and_then(readable)
    } else if s.iter().any(u8::is_ascii_uppercase) && s.iter().any(u8::is_ascii_lowercase) {
        // Plain words and identifiers in one case are not worth a decode; nor is a long run
        // (an embedded image, say) whose first bytes already decode to something not text.
        let head = &s[..s.len().min(256)];
        if s.len() > head.len() && !base64(head).is_some_and(|t| is_text(&t)) {
            return None;
        }
        base64(s)
    } else {
        None
    };
    text.filter(|t| t.len() >= 6 && is_text(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;

    fn decoded(data: &str) -> Vec<String> {
        let pre = crate::scan::prescan::prescan(data.as_bytes(), None);
        segments_in(data.as_bytes(), &pre).into_iter().map(|s| String::from_utf8(s.text).unwrap()).collect()
    }

    #[test]
    fn finds_text_in_each_encoding() {
        let b64 = general_purpose::STANDARD.encode("password=hunter2-hunter2");
        assert_eq!(decoded(&format!("x: {b64}\n")), ["password=hunter2-hunter2"]);
        let url = general_purpose::URL_SAFE_NO_PAD.encode("k=\u{7f}?>>>???>>>".replace('\u{7f}', "~"));
        assert_eq!(decoded(&format!("t={url}")), ["k=~?>>>???>>>"]);
        let plain = ["aws_secret=abcd", "efgh12345678"].concat();
        let hexed: String = plain.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decoded(&hexed), [plain.as_str()]);
        assert_eq!(decoded("q=secret%3Dabc%2Bdef%2Fghi"), ["q=secret=abc+def/ghi"]);
        let upper: String = plain.bytes().map(|b| format!("{b:02X}")).collect();
        assert_eq!(decoded(&upper), [plain.as_str()], "upper-case hex");
        let every: String = plain.bytes().map(|b| format!("%{b:02x}")).collect();
        assert_eq!(decoded(&format!("k={every}")), [format!("k={plain}")], "every byte percent-encoded");
    }

    #[test]
    fn delimited_hex_in_every_common_form() {
        let plain = ["aws_secret=abcd", "efgh12345678"].concat();
        let pairs: Vec<String> = plain.bytes().map(|b| format!("{b:02x}")).collect();
        for form in [
            pairs.join("-"),
            pairs.join(":"),
            pairs.join(" ").to_uppercase(),
            pairs.iter().map(|p| format!("\\x{p}")).collect(),
            pairs.iter().map(|p| format!("\\\\x{p}")).collect(),
            pairs.iter().map(|p| format!("0x{p}, ")).collect::<String>(),
        ] {
            assert_eq!(decoded(&format!("key={form};")), [plain.as_str()], "{form}");
        }
        assert!(decoded("00:1a:2b:3c:4d:5e").is_empty(), "a MAC address is too short and not text");
        assert!(decoded("550e8400-e29b-41d4-a716-446655440000").is_empty(), "a UUID is not delimited hex");
    }

    /// The count that lets a run skip the delimited-hex regex holds wherever the regex matches:
    /// the shortest match of each form, and the forms in longer runs.
    #[test]
    fn the_delimited_hex_precheck_passes_every_match() {
        let pairs: Vec<String> = (0x41..0x49).map(|b| format!("{b:02x}")).collect();
        let mut samples: Vec<String> = vec!["127.0.0.1:41899/v1/messages".into(), "a-b-c-d-e-f:x".into()];
        for form in [
            pairs.join("-"),
            pairs.join(":"),
            pairs.join(" "),
            pairs.iter().map(|p| format!("\\x{p}")).collect(),
            pairs.iter().map(|p| format!("\\\\X{p}")).collect(),
            pairs.iter().map(|p| format!("0x{p}")).collect(),
            pairs.iter().map(|p| format!("0X{p},")).collect(),
        ] {
            samples.push(format!("id={form}/end"));
            samples.push(form);
        }
        for s in &samples {
            if DELIMITED_HEX.is_match(s.as_bytes()) {
                assert!(may_hold_delimited_hex(s.as_bytes()), "{s}");
            }
        }
        assert!(samples.iter().filter(|s| DELIMITED_HEX.is_match(s.as_bytes())).count() >= 14);
        assert!(!may_hold_delimited_hex(b"127.0.0.1:41899/v1/messages"));
    }

    #[test]
    fn hex_of_binary_keeps_its_text() {
        let mut bytes = vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x11];
        bytes.extend_from_slice(b"hidden-text-here");
        bytes.extend_from_slice(&[0x0a, 0x00, 0xff, 0x41, 0x42]);
        let hexed: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decoded(&hexed), ["hidden-text-here"]);
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
