//! The secret-scanning engine shared by egress-proxy (DLP on what leaves) and git-gate (every
//! pushed commit).
//!
//! - [`Rules`]: credential formats as gitleaks-format TOML (built-ins in `rules.toml`, or a
//!   user's file extending/replacing them). Scanning is Aho-Corasick over every rule keyword,
//!   then only the candidate rules' `regex::bytes` (Unicode off), then entropy and allowlists.
//! - [`KnownSecrets`]: exact values the bottle holds, found raw, base64 (standard and URL-safe,
//!   all three alignments), hex and percent-encoded.
//! - [`StreamScanner`]: both over chunked input, with matches across chunk boundaries and a
//!   bounded buffer; its findings depend only on the stream's bytes, never on the chunking.
//! - [`scan_outbound`]: egress DLP's one call: rules and held secrets over the bytes and every
//!   layer of encoding in them, in a [`Mode`]; strict mode adds the strict-only rules, what the
//!   allowlists excuse, payment data ([`CARD_ID`]...) and encoding nested too deep to read.

pub mod corpus;
mod decode;
mod known;
mod layered;
mod payment;
mod prescan;
mod rules;
mod stream;

pub use known::KnownSecrets;
pub use layered::{Mode, TOO_DEEP_ID, scan_outbound, scan_outbound_every_byte};
pub use payment::{BITCOIN_ADDRESS_ID, BITCOIN_KEY_ID, CARD_ID, IBAN_ID};
pub use rules::{Context, Rules, reads_like_identifier};
pub use stream::StreamScanner;

/// One secret found in scanned bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The rule that matched (`known-secret` for [`KnownSecrets`]).
    pub rule_id: String,
    /// Byte span of the secret itself (the rule's secret group) in the scanned input.
    pub start: usize,
    pub end: usize,
    /// 1-based line of `start`.
    pub line: usize,
    /// The secret's first 4 characters and `…` (only `…` when the secret is shorter than 8).
    pub secret_redacted: String,
    /// `Low` when the match also fits one of its rule's `lowConfidence` descriptions (e.g. a
    /// generic assignment whose value reads like an identifier); such findings are only
    /// reported when [`Context::low_confidence`] asks for them.
    pub confidence: Confidence,
}

/// How sure a finding is. Consumers decide what a low-confidence finding means: the git gate
/// holds it for the operator; egress DLP does not act on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    #[default]
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::High => "high",
        }
    }
}

/// A rules file that cannot be used; every message names the rule id or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("rules toml: {0}")]
    Toml(String),
    #[error("rule {rule:?}: invalid {key}: {message}")]
    Rule { rule: String, key: &'static str, message: String },
    #[error("rule #{index}: missing id")]
    MissingId { index: usize },
    #[error("rule {0:?}: defined twice")]
    DuplicateId(String),
    #[error("global allowlist: invalid {key}: {message}")]
    Allowlist { key: &'static str, message: String },
}

/// The redacted display form of a secret: first 4 characters and `…`.
pub fn redact(secret: &[u8]) -> String {
    if secret.len() < 8 {
        return "…".to_string();
    }
    let head: String = secret[..4].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect();
    format!("{head}…")
}

/// Shannon entropy (bits per byte) of `data`.
pub fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Fill in 1-based line numbers for findings sorted by `start`, counting newlines in `data`
/// and adding `line_base` (the number of lines before `data` in a larger input).
pub(crate) fn assign_lines(data: &[u8], findings: &mut [Finding], offset_base: usize, line_base: usize) {
    let mut pos = 0usize;
    let mut line = line_base + 1;
    for f in findings.iter_mut() {
        let at = f.start - offset_base;
        if at > pos {
            line += data[pos..at].iter().filter(|&&b| b == b'\n').count();
            pos = at;
        }
        f.line = line;
    }
}

/// All findings of the rules and (if any) the known secrets in `data` and its encoded layers,
/// sorted (standard mode).
pub fn scan_all(rules: Option<&Rules>, known: Option<&KnownSecrets>, data: &[u8]) -> Vec<Finding> {
    let mut out = scan_outbound(rules, known, Mode::Standard, data);
    assign_lines(data, &mut out, 0, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_shows_at_most_four_characters() {
        assert_eq!(redact(b"abcdefghijkl"), "abcd…");
        assert_eq!(redact(b"short"), "…");
    }

    #[test]
    fn entropy_of_uniform_and_constant_data() {
        assert_eq!(entropy(b"aaaa"), 0.0);
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
    }
}
