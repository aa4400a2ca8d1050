//! DLP for what leaves the bottle: finds known secrets (every token the proxy holds and the
//! values of env vars under `BOT_BOTTLE_SENSITIVE_PREFIXES`) in raw, base64 (standard and
//! URL-safe, any alignment), hex and percent-encoded form, plus the shared token patterns.
//!
//! The proxy scans whole (decoded, bounded) request bodies at once, so a secret split across
//! chunks or frames is seen whole.

use std::collections::BTreeSet;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use common::Secret;
use common::formats::routes::DlpDetector;

/// Shortest value treated as a known secret (shorter values would match everywhere).
const MIN_SECRET_LEN: usize = 8;

/// One match, with byte offsets into the scanned data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule_id: String,
    pub start: usize,
    pub end: usize,
    /// A redacted rendering for logs and the operator (never the value).
    pub redacted: String,
}

/// The scanning engine for one set of known secrets.
pub struct Engine {
    known: Option<(AhoCorasick, Vec<&'static str>)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dlp::Engine")
    }
}

/// The encoded forms of a secret that are searched for, each with its label.
fn forms(secret: &str) -> Vec<(String, &'static str)> {
    let b = secret.as_bytes();
    let mut out = vec![(secret.to_string(), "known_secret")];
    out.push((hex::encode(b), "known_secret_hex"));
    out.push((hex::encode_upper(b), "known_secret_hex"));
    let pct: String = b
        .iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    if pct != secret {
        out.push((pct.clone(), "known_secret_percent"));
        out.push((pct.to_ascii_lowercase(), "known_secret_percent"));
    }
    // base64 at each of the three alignments: prefix the secret with 0..2 bytes, encode, and
    // keep only the characters that depend on the secret alone.
    for pad in 0..3usize {
        let mut data = vec![0u8; pad];
        data.extend_from_slice(b);
        for (engine, label) in [
            (&base64::engine::general_purpose::STANDARD_NO_PAD, "known_secret_base64"),
            (&base64::engine::general_purpose::URL_SAFE_NO_PAD, "known_secret_base64url"),
        ] {
            let enc = engine.encode(&data);
            // Characters fully determined by secret bytes: skip the first ceil(pad*8/6) chars,
            // and the last char if the tail is partial.
            let skip = (pad * 8).div_ceil(6);
            let total_bits = data.len() * 8;
            let full_chars = total_bits / 6;
            if full_chars > skip + MIN_SECRET_LEN {
                out.push((enc[skip..full_chars].to_string(), label));
            }
        }
    }
    out
}

impl Engine {
    /// Builds the engine; secrets shorter than 8 bytes are ignored (logged by name elsewhere).
    pub fn new(secrets: &[Secret]) -> Engine {
        let mut pats: Vec<String> = Vec::new();
        let mut labels = Vec::new();
        let mut seen = BTreeSet::new();
        for s in secrets {
            if s.expose().len() < MIN_SECRET_LEN {
                continue;
            }
            for (p, label) in forms(s.expose()) {
                if seen.insert(p.clone()) {
                    pats.push(p);
                    labels.push(label);
                }
            }
        }
        let known = if pats.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&pats)
                .ok()
                .map(|ac| (ac, labels))
        };
        Engine { known }
    }

    /// Every match of the selected detectors in `data`.
    pub fn scan(&self, detectors: &[DlpDetector], data: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        if detectors.contains(&DlpDetector::KnownSecrets)
            && let Some((ac, labels)) = &self.known
        {
            for m in ac.find_iter(data) {
                hits.push(Hit {
                    rule_id: labels[m.pattern().as_usize()].to_string(),
                    start: m.start(),
                    end: m.end(),
                    redacted: redact_preview(&data[m.start()..m.end()]),
                });
            }
        }
        // TOKEN_PATTERNS_HOOK
        hits.sort_by_key(|h| (h.start, h.end));
        hits
    }
}

/// `abcd…` style preview: at most the first 4 characters of a match of 12 or more.
fn redact_preview(m: &[u8]) -> String {
    if m.len() >= 12 {
        format!("{}…[{} bytes]", String::from_utf8_lossy(&m[..4]), m.len())
    } else {
        format!("[{} bytes]", m.len())
    }
}

/// Replaces every hit span in `data` with `with` (overlapping spans merged).
pub fn redact(data: &[u8], hits: &[Hit], with: &[u8]) -> Vec<u8> {
    let mut spans: Vec<(usize, usize)> = hits.iter().map(|h| (h.start, h.end)).collect();
    spans.sort();
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    for (s, e) in spans {
        if s < pos {
            // Overlaps the previous replacement: extend it.
            pos = pos.max(e);
            continue;
        }
        out.extend_from_slice(&data[pos..s]);
        out.extend_from_slice(with);
        pos = e;
    }
    out.extend_from_slice(&data[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "tok-3f9a8b7c6d5e4f3a2b1c";
    const BOTH: &[DlpDetector] = &[DlpDetector::KnownSecrets, DlpDetector::TokenPatterns];

    fn engine() -> Engine {
        Engine::new(&[Secret::new(T), Secret::new("short")])
    }

    fn found(data: &[u8]) -> bool {
        engine().scan(&[DlpDetector::KnownSecrets], data).iter().any(|h| h.rule_id.starts_with("known_secret"))
    }

    #[test]
    fn known_secret_forms() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        assert!(found(format!("x={T}&y").as_bytes()));
        assert!(found(hex::encode(T).as_bytes()));
        assert!(found(hex::encode_upper(T).as_bytes()));
        for prefix in ["", "a", "ab", "abc"] {
            let data = format!("{prefix}{T}suffix");
            assert!(found(STANDARD.encode(&data).as_bytes()), "std {prefix:?}");
            assert!(found(URL_SAFE.encode(&data).as_bytes()), "url {prefix:?}");
        }
        assert!(!found(b"nothing to see here"));
        assert!(engine().scan(BOTH, b"short").iter().all(|h| !h.rule_id.starts_with("known")), "short secrets ignored");
    }

    #[test]
    fn percent_form() {
        let e = Engine::new(&[Secret::new("p@ss/word+123")]);
        assert!(!e.scan(&[DlpDetector::KnownSecrets], b"?q=p%40ss%2Fword%2B123").is_empty());
        assert!(!e.scan(&[DlpDetector::KnownSecrets], b"?q=p%40ss%2fword%2b123").is_empty());
    }

    #[test]
    fn redaction_replaces_and_merges() {
        let data = format!("a {T} b {T}");
        let hits = engine().scan(BOTH, data.as_bytes());
        assert!(!hits.is_empty());
        let out = redact(data.as_bytes(), &hits, b"[REDACTED]");
        assert_eq!(String::from_utf8(out).unwrap(), "a [REDACTED] b [REDACTED]");
        let overlapping = [
            Hit { rule_id: "x".into(), start: 0, end: 4, redacted: String::new() },
            Hit { rule_id: "y".into(), start: 2, end: 6, redacted: String::new() },
        ];
        assert_eq!(redact(b"0123456789", &overlapping, b"#"), b"#6789");
    }

    #[test]
    fn previews_never_hold_the_value() {
        let hits = engine().scan(BOTH, T.as_bytes());
        assert!(hits.iter().all(|h| !h.redacted.contains(T)));
    }
}
