//! DLP for what leaves the bottle: finds known secrets (every token the proxy holds and the
//! values of env vars under `BOT_BOTTLE_SENSITIVE_PREFIXES`) in raw, base64 (standard and
//! URL-safe, any alignment), hex and percent-encoded form, plus the shared token patterns.
//!
//! The proxy scans whole (decoded, bounded) request bodies at once, so a secret split across
//! chunks is seen whole; WebSocket payloads go through one [`Engine::stream`] per connection.

use common::Secret;
use common::formats::routes::DlpDetector;
use common::scan::{KnownSecrets, Rules, StreamScanner};

/// One match, with byte offsets into the scanned data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) rule_id: String,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// A redacted rendering for logs and the operator (never the value).
    pub(crate) redacted: String,
}

/// The shared scanning engine (`common::scan`) for one set of known secrets.
pub(crate) struct Engine {
    known: KnownSecrets,
    rules: &'static Rules,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dlp::Engine")
    }
}

impl Engine {
    /// Builds the engine; values shorter than [`KnownSecrets::MIN_LEN`] are not searched for.
    pub(crate) fn new(secrets: &[Secret]) -> Engine {
        Engine { known: KnownSecrets::new(secrets.iter().cloned()), rules: Rules::builtin() }
    }

    /// Every match of the selected detectors in `data`, sorted by position.
    pub(crate) fn scan(&self, detectors: &[DlpDetector], data: &[u8]) -> Vec<Hit> {
        let mut found = Vec::new();
        if detectors.contains(&DlpDetector::KnownSecrets) {
            found.extend(self.known.scan(data));
        }
        if detectors.contains(&DlpDetector::TokenPatterns) {
            found.extend(self.rules.scan(data));
        }
        let mut hits: Vec<Hit> = found
            .into_iter()
            .map(|f| Hit { rule_id: f.rule_id, start: f.start, end: f.end, redacted: f.secret_redacted })
            .collect();
        hits.sort_by_key(|h| (h.start, h.end));
        hits
    }

    /// A scanner for data that arrives in pieces (WebSocket frames) with the selected detectors:
    /// 64 KiB windows with a 16 KiB overlap (a PEM key split anywhere is still seen), so it holds
    /// at most 96 KiB whatever the stream's length.
    pub(crate) fn stream(&self, detectors: &[DlpDetector]) -> StreamScanner<'_> {
        StreamScanner::with_window(
            detectors.contains(&DlpDetector::TokenPatterns).then_some(self.rules),
            detectors.contains(&DlpDetector::KnownSecrets).then_some(&self.known),
            64 * 1024,
            16 * 1024,
        )
    }
}

/// Replaces every hit span in `data` with `with` (overlapping spans merged).
pub(crate) fn redact(data: &[u8], hits: &[Hit], with: &[u8]) -> Vec<u8> {
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
        engine().scan(&[DlpDetector::KnownSecrets], data).iter().any(|h| h.rule_id == "known-secret")
    }

    #[test]
    fn known_secret_forms() {
        use base64::Engine as _;
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
        assert!(engine().scan(BOTH, b"short").iter().all(|h| h.rule_id != "known-secret"), "short secrets ignored");
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
    fn token_patterns_come_from_the_shared_rules() {
        // Built at run time so the repository itself holds no credential-shaped text.
        let gh = format!("token={}_{}", "ghp", "0123456789abcdefghijABCDEFGHIJ012345");
        let gh = gh.as_bytes();
        let hits = engine().scan(&[DlpDetector::TokenPatterns], gh);
        assert!(!hits.is_empty(), "a GitHub token shape is a shared rule");
        assert!(engine().scan(&[DlpDetector::KnownSecrets], gh).is_empty());
    }

    #[test]
    fn previews_never_hold_the_value() {
        let hits = engine().scan(BOTH, T.as_bytes());
        assert!(hits.iter().all(|h| !h.redacted.contains(T)));
    }
}
