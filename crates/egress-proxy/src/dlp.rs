//! DLP for what leaves the bottle, over `common::scan`: the known secrets (every token the proxy
//! holds and the values of env vars under `BOT_BOTTLE_SENSITIVE_PREFIXES`) in any percent, hex
//! or base64 form, any case, any mix, and the shared token patterns; both over the bytes and
//! every layer of encoding in them, in the route's mode (`strict` or `standard`). Strict mode
//! also reads a host name's labels for encoded data ([`Engine::scan_host`]).
//!
//! The proxy scans whole (decoded, bounded) request bodies at once, so a secret split across
//! chunks is seen whole; WebSocket payloads go through one [`Engine::stream`] per connection.

use std::sync::LazyLock;

use common::Secret;
use common::formats::routes::{DlpConfig, DlpDetector, DlpMode};
use common::scan::{
    Confidence, Finding, KnownSecrets, Mode, Rules, StreamScanner, scan_outbound, scan_outbound_every_byte,
};

/// One match, with byte offsets into the scanned data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) rule_id: String,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// A redacted rendering for logs and the operator (never the value).
    pub(crate) redacted: String,
    /// The least strict mode that finds it: `standard` (both modes would) or `strict`.
    pub(crate) mode: Mode,
}

impl Hit {
    fn from_finding(f: Finding) -> Hit {
        // In a strict scan, a low-confidence finding is one strict mode alone makes.
        let mode = if f.confidence == Confidence::Low { Mode::Strict } else { Mode::Standard };
        Hit { rule_id: f.rule_id, start: f.start, end: f.end, redacted: f.secret_redacted, mode }
    }
}

/// The scan mode of a route's `dlp.mode`.
pub(crate) fn mode(m: DlpMode) -> Mode {
    match m {
        DlpMode::Strict => Mode::Strict,
        DlpMode::Standard => Mode::Standard,
    }
}

/// Everything, strictly: what the audit log and the client's 403 are cleaned with.
pub(crate) static SANITIZE: LazyLock<DlpConfig> = LazyLock::new(DlpConfig::default);

/// The rule id of a host label that reads as encoded data.
pub(crate) const HOST_LABEL_ID: &str = "encoded-host-label";

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

    /// The held secrets (what every response is cleaned of).
    pub(crate) fn known(&self) -> &KnownSecrets {
        &self.known
    }

    /// Every match of the route's detectors in `data` (and in every layer of encoding in it),
    /// in the route's mode, sorted by position.
    pub(crate) fn scan(&self, cfg: &DlpConfig, data: &[u8]) -> Vec<Hit> {
        let rules = cfg.outbound.contains(&DlpDetector::TokenPatterns).then_some(self.rules);
        let known = cfg.outbound.contains(&DlpDetector::KnownSecrets).then_some(&self.known);
        scan_outbound(rules, known, mode(cfg.mode), data).into_iter().map(Hit::from_finding).collect()
    }

    /// What `host` (as the agent wrote it) carries in its labels, with offsets into `host`:
    /// - the labels before the domain a route names, read as one text (the dots taken out, as
    ///   the DNS server that receives them would put a value split across labels back
    ///   together) and again with `-` read as `_` (a host name cannot carry `_`, so a token whose
    ///   prefix has one travels with a `-`): a held secret in either, and in strict mode a
    ///   rule's match, reported over all of those labels;
    /// - strict mode (with the token patterns on): the labels that read as encoded data.
    pub(crate) fn scan_host(&self, cfg: &DlpConfig, host: &str) -> Vec<Hit> {
        let mut out = self.scan_joined_labels(cfg, host);
        if cfg.mode != DlpMode::Strict || !cfg.outbound.contains(&DlpDetector::TokenPatterns) {
            return out;
        }
        out.extend(encoded_labels(host).into_iter().map(|(start, end)| Hit {
            rule_id: HOST_LABEL_ID.to_string(),
            start,
            end,
            redacted: common::scan::redact(&host.as_bytes()[start..end]),
            mode: Mode::Strict,
        }));
        out
    }

    /// The first part of [`Engine::scan_host`].
    fn scan_joined_labels(&self, cfg: &DlpConfig, host: &str) -> Vec<Hit> {
        let Some(end) = subdomain_end(host) else { return Vec::new() };
        let rules =
            (cfg.mode == DlpMode::Strict && cfg.outbound.contains(&DlpDetector::TokenPatterns)).then_some(self.rules);
        let known = cfg.outbound.contains(&DlpDetector::KnownSecrets).then_some(&self.known);
        if rules.is_none() && known.is_none() {
            return Vec::new();
        }
        let joined: Vec<u8> = host[..end].bytes().filter(|&b| b != b'.').collect();
        let underscored: Vec<u8> = joined.iter().map(|&b| if b == b'-' { b'_' } else { b }).collect();
        let mut found: Vec<Finding> = scan_outbound_every_byte(rules, known, mode(cfg.mode), &joined);
        if underscored != joined {
            found.extend(scan_outbound_every_byte(rules, known, mode(cfg.mode), &underscored));
        }
        let mut out: Vec<Hit> = Vec::new();
        for f in found {
            if out.iter().any(|h| h.rule_id == f.rule_id) {
                continue;
            }
            let redacted = common::scan::redact(&host.as_bytes()[..end]);
            out.push(Hit { start: 0, end, redacted, ..Hit::from_finding(f) });
        }
        out
    }

    /// A scanner for data that arrives in pieces (WebSocket frames) with the route's detectors
    /// and mode: 64 KiB windows with a 16 KiB overlap (a PEM key split anywhere is still seen),
    /// so it holds at most 96 KiB whatever the stream's length.
    pub(crate) fn stream(&self, cfg: &DlpConfig) -> StreamScanner<'_> {
        StreamScanner::with_window(
            cfg.outbound.contains(&DlpDetector::TokenPatterns).then_some(self.rules),
            cfg.outbound.contains(&DlpDetector::KnownSecrets).then_some(&self.known),
            64 * 1024,
            16 * 1024,
        )
        .mode(mode(cfg.mode))
    }
}

/// Where the labels before the domain a route names (all but the last two) end in `host`, if
/// there are any.
fn subdomain_end(host: &str) -> Option<usize> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last_two = host.rmatch_indices('.').nth(1)?.0;
    (last_two > 0).then_some(last_two)
}

/// Spans of `host`'s labels that read as encoded data (the agent chooses the labels a wildcard
/// route covers, and DNS and SNI carry them out): a label of 16 or more letters and digits, with
/// both, that does not read like a name (base32, base64, hex); and runs of consecutive all-hex
/// labels of 4 or more digits each whose 12 or more digits together decode to text, or are 32 or
/// more (16 bytes of key material). The last two labels (the domain a route names) are left out.
fn encoded_labels(host: &str) -> Vec<(usize, usize)> {
    let mut labels: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    for l in host.split('.') {
        labels.push((at, l));
        at += l.len() + 1;
    }
    labels.truncate(labels.len().saturating_sub(2));
    let mut out = Vec::new();
    for &(start, l) in &labels {
        let b = l.as_bytes();
        if b.len() >= 16
            && b.iter().all(u8::is_ascii_alphanumeric)
            && b.iter().any(u8::is_ascii_digit)
            && b.iter().any(u8::is_ascii_alphabetic)
            && !common::scan::reads_like_identifier(b)
        {
            out.push((start, start + l.len()));
        }
    }
    let is_hex = |l: &str| l.len() >= 4 && l.bytes().all(|c| c.is_ascii_hexdigit());
    let mut i = 0;
    while i < labels.len() {
        let mut j = i;
        while j < labels.len() && is_hex(labels[j].1) {
            j += 1;
        }
        if j > i {
            let digits: String = labels[i..j].iter().map(|(_, l)| *l).collect();
            let mixed = digits.bytes().any(|c| c.is_ascii_digit()) && digits.bytes().any(|c| c.is_ascii_alphabetic());
            let text = hex::decode(&digits[..digits.len() & !1])
                .ok()
                .filter(|t| t.len() >= 6 && t.iter().all(|&c| (0x20..0x7f).contains(&c)));
            if mixed && digits.len() >= 12 && (text.is_some() || digits.len() >= 32) {
                let (start, last) = (labels[i].0, labels[j - 1]);
                out.push((start, last.0 + last.1.len()));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out.sort_unstable();
    out.dedup();
    out
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

    fn cfg(detectors: &[DlpDetector], mode: DlpMode) -> DlpConfig {
        DlpConfig { outbound: detectors.to_vec(), mode, ..DlpConfig::default() }
    }

    fn both() -> DlpConfig {
        cfg(&[DlpDetector::KnownSecrets, DlpDetector::TokenPatterns], DlpMode::Strict)
    }

    fn known_only() -> DlpConfig {
        cfg(&[DlpDetector::KnownSecrets], DlpMode::Strict)
    }

    fn engine() -> Engine {
        Engine::new(&[Secret::new(T), Secret::new("short")])
    }

    fn found(data: &[u8]) -> bool {
        engine().scan(&known_only(), data).iter().any(|h| h.rule_id == "known-secret")
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
        assert!(engine().scan(&both(), b"short").iter().all(|h| h.rule_id != "known-secret"), "short secrets ignored");
    }

    #[test]
    fn percent_form() {
        let e = Engine::new(&[Secret::new("p@ss/word+123")]);
        assert!(!e.scan(&known_only(), b"?q=p%40ss%2Fword%2B123").is_empty());
        assert!(!e.scan(&known_only(), b"?q=p%40ss%2fword%2b123").is_empty());
    }

    #[test]
    fn redaction_replaces_and_merges() {
        let data = format!("a {T} b {T}");
        let hits = engine().scan(&both(), data.as_bytes());
        assert!(!hits.is_empty());
        let out = redact(data.as_bytes(), &hits, b"[REDACTED]");
        assert_eq!(String::from_utf8(out).unwrap(), "a [REDACTED] b [REDACTED]");
        let overlapping = [
            Hit { rule_id: "x".into(), start: 0, end: 4, redacted: String::new(), mode: Mode::Standard },
            Hit { rule_id: "y".into(), start: 2, end: 6, redacted: String::new(), mode: Mode::Standard },
        ];
        assert_eq!(redact(b"0123456789", &overlapping, b"#"), b"#6789");
    }

    #[test]
    fn token_patterns_come_from_the_shared_rules() {
        // Built at run time so the repository itself holds no credential-shaped text.
        let gh = format!("token={}_{}", "ghp", "0123456789abcdefghijABCDEFGHIJ012345");
        let gh = gh.as_bytes();
        let hits = engine().scan(&cfg(&[DlpDetector::TokenPatterns], DlpMode::Standard), gh);
        assert!(!hits.is_empty(), "a GitHub token shape is a shared rule");
        assert!(engine().scan(&known_only(), gh).is_empty());
    }

    #[test]
    fn previews_never_hold_the_value() {
        let hits = engine().scan(&both(), T.as_bytes());
        assert!(hits.iter().all(|h| !h.redacted.contains(T)));
    }

    #[test]
    fn strict_mode_reads_shapes_standard_excuses_examples() {
        // The AWS documentation's example key: allowlisted by the rules, a credential's shape.
        let example = ["AKIA", "IOSFODNN7", "EXAMPLE"].concat();
        let data = format!("key={example}");
        let patterns = |mode| cfg(&[DlpDetector::TokenPatterns], mode);
        assert!(engine().scan(&patterns(DlpMode::Standard), data.as_bytes()).is_empty());
        let strict = engine().scan(&patterns(DlpMode::Strict), data.as_bytes());
        assert_eq!(
            strict.iter().map(|h| (h.rule_id.as_str(), h.mode)).collect::<Vec<_>>(),
            [("aws-access-token", Mode::Strict)]
        );
        // A live-shaped token is found by both, and reported as standard's.
        let pat = format!("t={}_{}", "ghp", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVb");
        let hits = engine().scan(&patterns(DlpMode::Strict), pat.as_bytes());
        assert_eq!(
            hits.iter().map(|h| (h.rule_id.as_str(), h.mode)).collect::<Vec<_>>(),
            [("github-pat", Mode::Standard)]
        );
        // Card numbers that pass Luhn: strict only.
        let card = format!("{{\"card\":\"{}\"}}", ["4111", "1111", "1111", "1111"].concat());
        assert!(engine().scan(&patterns(DlpMode::Standard), card.as_bytes()).is_empty());
        assert_eq!(engine().scan(&patterns(DlpMode::Strict), card.as_bytes())[0].rule_id, "payment-card-number");
    }

    #[test]
    fn host_labels_that_read_as_encoded_data() {
        let flagged = [
            ("7365637265745f6170695f6b65795f3132333435.exfil.evil.test", "7365637265745f6170695f6b65795f3132333435"),
            ("JBSWY3DPEHPK3PXP.exfil.evil.test", "JBSWY3DPEHPK3PXP"),
            ("c2VjcmV0X3Rva2VuXzEyMzQ1Njc4OTA.exfil.evil.test", "c2VjcmV0X3Rva2VuXzEyMzQ1Njc4OTA"),
            ("4150494b4559.313233343536.b32.x.evil.test", "4150494b4559.313233343536"),
            ("4a6f686e446f65.53656372657431.exfil.evil.test", "4a6f686e446f65.53656372657431"),
            ("a1b2c3d4.e5f6a7b8.c9d0e1f2.a3b4c5d6.exfil.evil.test", "a1b2c3d4.e5f6a7b8.c9d0e1f2.a3b4c5d6"),
        ];
        for (host, label) in flagged {
            let spans = encoded_labels(host);
            assert!(spans.iter().any(|&(s, e)| &host[s..e] == label), "{host}: {spans:?}");
        }
        for host in [
            "api.github.com",
            "cdnjs.cloudflare.com",
            "d111111abcdef8.cloudfront.net",
            "mystorage2024backup.blob.core.windows.net",
            "s3-us-west-2.amazonaws.com",
            "xn--80ak6aa92e.xn--p1ai",
            "deadbeef.cafe.example.com",
            "ghp-xxxx.yyyyzzzz.aaaabbbb.evil.test",
            "0123456789abcdef0123.test",
        ] {
            assert!(encoded_labels(host).is_empty(), "{host}: {:?}", encoded_labels(host));
        }
        let e = engine();
        assert!(
            e.scan_host(&cfg(&[DlpDetector::TokenPatterns], DlpMode::Standard), "JBSWY3DPEHPK3PXP.a.test").is_empty()
        );
        assert_eq!(e.scan_host(&both(), "JBSWY3DPEHPK3PXP.a.test")[0].mode, Mode::Strict);
    }

    #[test]
    fn a_value_split_across_host_labels_is_read_whole() {
        let e = engine();
        let rule = |host: &str, mode| -> Vec<String> {
            e.scan_host(&cfg(&[DlpDetector::TokenPatterns], mode), host).into_iter().map(|h| h.rule_id).collect()
        };
        // A vendor token cut into labels, its `_` carried as `-` (built at run time so the
        // repository itself holds no credential-shaped text).
        let body = "0123456789abcdefghijABCDEFGHIJ012345";
        let host =
            format!("{}-{}.{}.{}.{}.exfil.evil.test", "ghp", &body[..8], &body[8..18], &body[18..28], &body[28..]);
        assert!(rule(&host, DlpMode::Strict).contains(&"vendor-token-prefix".to_string()), "{host}");
        // Its shape is enough in strict mode, whatever the body looks like.
        let host = format!("{}-abcdefgh.ijklmnop.qrstuvwx.yzabcdef.exfil.evil.test", "gho");
        let hits = e.scan_host(&both(), &host);
        assert!(hits.iter().any(|h| h.start == 0 && h.end == host.len() - ".evil.test".len()), "{hits:?}");
        assert!(rule(&host, DlpMode::Standard).is_empty(), "standard mode reads no rule in a host");
        // A held secret split across labels, in either mode.
        let host = format!("{}.{}.{}.exfil.evil.test", &T[..8], &T[8..16], &T[16..]);
        for mode in [DlpMode::Strict, DlpMode::Standard] {
            let hits = e.scan_host(&cfg(&[DlpDetector::KnownSecrets], mode), &host);
            assert_eq!(hits.iter().map(|h| h.rule_id.as_str()).collect::<Vec<_>>(), ["known-secret"], "{mode:?}");
            assert_eq!(hits[0].mode, Mode::Standard);
        }
        for host in [
            "api.github.com",
            "cdnjs.cloudflare.com",
            "my-bucket-name.s3.us-west-2.amazonaws.com",
            "sk.example.com",
            "gh-pages.docs.example.com",
            "a1b2c3d4.e5f6.example.com",
            "www.example.com.",
            "localhost",
            "10.0.0.1",
        ] {
            assert!(e.scan_host(&both(), host).iter().all(|h| h.rule_id == HOST_LABEL_ID), "{host}");
        }
        assert_eq!(subdomain_end("a.b.example.com"), Some(3));
        assert_eq!(subdomain_end("example.com"), None);
        assert_eq!(subdomain_end("x.example.com."), Some(1));
    }
}
