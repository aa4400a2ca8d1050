//! One scan of a buffer and of every layer of encoding inside it: the rules, the held secrets
//! and (strict mode) payment data run on the bytes as they are, then on what each encoded
//! segment decodes to ([`super::decode`]), and on what that decodes to, to
//! [`super::decode::MAX_DEPTH`] layers; a finding inside a segment is reported at the outermost
//! segment's place. The git gate reads this way with the rules alone ([`super::Rules::scan`]);
//! egress DLP with the rules, the held secrets and a [`Mode`] ([`scan_outbound`]).

use super::decode::{self, MAX_DEPTH};
use super::prescan::{Prescan, prescan, token_like};
use super::rules::{Context, Window, drop_redundant};
use super::{Confidence, Finding, KnownSecrets, Rules, payment, redact};

/// How far before a run a rule's match can start: a name, separators and quotes before the
/// value (`client_secret": "`), or a keyword before its token (`datadog_api_key = `).
const LEAD: usize = 96;

/// How strictly egress DLP reads what leaves (a route's `dlp.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The rules as the git gate reads them: allowlists (documentation examples, placeholders)
    /// and low-confidence tables excuse a match.
    Standard,
    /// Anything shaped like a credential: every rule's pattern whatever its allowlists say, the
    /// strict-only rules, payment data that passes its checksum, and encoding nested deeper
    /// than the scan decodes. A finding only strict mode makes is [`Confidence::Low`].
    #[default]
    Strict,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Strict => "strict",
        }
    }
}

/// The rule id of encoding nested deeper than [`MAX_DEPTH`] layers (strict mode): the scan
/// cannot see what it hides, and nothing legitimate is encoded four times over.
pub const TOO_DEEP_ID: &str = "encoding-too-deep";

/// What egress DLP finds in `data` with the given detectors, sorted by position. In strict
/// mode the findings strict mode alone makes are [`Confidence::Low`]; in standard mode there are
/// none of those.
pub fn scan_outbound(rules: Option<&Rules>, known: Option<&KnownSecrets>, mode: Mode, data: &[u8]) -> Vec<Finding> {
    let mut out = Vec::new();
    scan_into(rules, known, Context::default(), mode == Mode::Strict, true, data, &mut out);
    out.sort_by(|a, b| (a.start, a.end, &a.rule_id).cmp(&(b.start, b.end, &b.rule_id)));
    out
}

/// [`scan_outbound`] with the rules read over every byte of `data`, not only around the runs
/// that look like a token: for a short text (a host name's labels) in which a value without a
/// digit or a capital, which those windows pass over, is still worth a strict-mode finding.
pub fn scan_outbound_every_byte(
    rules: Option<&Rules>,
    known: Option<&KnownSecrets>,
    mode: Mode,
    data: &[u8],
) -> Vec<Finding> {
    let mut out = Vec::new();
    scan_into(rules, known, Context::default(), mode == Mode::Strict, false, data, &mut out);
    out.sort_by(|a, b| (a.start, a.end, &a.rule_id).cmp(&(b.start, b.end, &b.rule_id)));
    out
}

/// Unsorted findings in `data` and its encoded layers, the weaker of overlapping ones dropped.
/// `windowed`: the rules only look where a credential could be (around the runs that look like
/// one, [`windows`]), as egress DLP reads; else everywhere their keywords occur, as the git gate
/// reads (a rule may then also match an all-lower-case value shorter than 16 bytes, which only
/// a low-confidence finding would).
pub(crate) fn scan_into(
    rules: Option<&Rules>,
    known: Option<&KnownSecrets>,
    ctx: Context<'_>,
    strict: bool,
    windowed: bool,
    data: &[u8],
    out: &mut Vec<Finding>,
) {
    let first = out.len();
    layer(&Scan { rules, known, ctx, strict, windowed }, data, out, 0);
    drop_redundant(out, first);
}

/// What one scan reads with, and how.
struct Scan<'a> {
    rules: Option<&'a Rules>,
    known: Option<&'a KnownSecrets>,
    ctx: Context<'a>,
    strict: bool,
    windowed: bool,
}

/// Where a rule's match can be in `data`: before and over each run that looks like a credential
/// ([`token_like`]), merged where they touch.
fn windows(data: &[u8], pre: &Prescan) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for &(s, e) in &pre.runs {
        if !token_like(&data[s..e]) {
            continue;
        }
        let start = s.saturating_sub(LEAD);
        match out.last_mut() {
            Some(last) if start <= last.end => {
                last.end = e;
                last.longest_run = last.longest_run.max(e - s);
            }
            _ => out.push(Window { start, end: e, longest_run: e - s }),
        }
    }
    out
}

/// `data` at encoding depth `depth` (0: as sent).
fn layer(scan: &Scan<'_>, data: &[u8], out: &mut Vec<Finding>, depth: usize) {
    let pre = prescan(data, scan.rules.and_then(Rules::wide_leads).filter(|_| scan.windowed));
    if let Some(r) = scan.rules {
        let windows = scan.windowed.then(|| windows(data, &pre));
        r.scan_layer(data, scan.ctx, scan.strict, windows.as_deref().map(|w| (w, &pre.leads[..])), out);
    }
    if let Some(k) = scan.known {
        k.scan_runs(data, &pre.runs, out);
    }
    if scan.strict {
        payment::scan_into(data, &pre, out);
    }
    let segments = decode::segments_in(data, &pre);
    if depth == MAX_DEPTH {
        if scan.strict && !segments.is_empty() {
            // Reported over all of this layer: the caller maps it to its outermost segment.
            out.push(Finding {
                rule_id: TOO_DEEP_ID.to_string(),
                start: 0,
                end: data.len(),
                line: 0,
                secret_redacted: redact(data),
                confidence: Confidence::Low,
            });
        }
        return;
    }
    for seg in segments {
        let mut inner = Vec::new();
        layer(scan, &seg.text, &mut inner, depth + 1);
        for f in inner {
            if !out.iter().any(|o| o.rule_id == f.rule_id && o.start == seg.start && o.end == seg.end) {
                out.push(Finding { start: seg.start, end: seg.end, ..f });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(mode: Mode, text: &str) -> Vec<(String, Confidence)> {
        scan_outbound(Some(Rules::builtin()), None, mode, text.as_bytes())
            .into_iter()
            .map(|f| (f.rule_id, f.confidence))
            .collect()
    }

    /// What strict mode finds that standard does not, each as strict's own (low) finding. The
    /// values are assembled at run time: the repository holds none.
    #[test]
    fn strict_reads_the_shape_standard_the_rules() {
        let example = ["AKIA", "IOSFODNN7", "EXAMPLE"].concat();
        let filler = format!("SG.{}_{}.{}", "FAKE_TEST", "KEY_0000000000", "0".repeat(40));
        let short_pat = format!("{}_{}", "ghp", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef01");
        let bare = ["wJalrXUtnFEMI", "/K7MDENG/bPxRfiCY", "EXAMPLEKEY"].concat();
        let cases = [
            (format!("key={example}"), "aws-access-token"),
            (format!("x-api-key: {filler}"), "generic-api-key"),
            (format!("file contents:\n{short_pat}\n"), "vendor-token-prefix"),
            (format!("blob={}", bare.bytes().map(|b| format!("{b:02x}")).collect::<String>()), "aws-secret-access-key"),
            ("q=%25252541%25252549".to_string(), TOO_DEEP_ID),
        ];
        for (text, rule) in &cases {
            assert!(ids(Mode::Standard, text).is_empty(), "standard: {text}: {:?}", ids(Mode::Standard, text));
            assert_eq!(ids(Mode::Strict, text), [(rule.to_string(), Confidence::Low)], "strict: {text}");
        }
        // A live-shaped token: both modes, and strict reports it as standard's (high).
        let pat = format!("t={}_{}", "ghp", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVb");
        assert_eq!(ids(Mode::Standard, &pat), [("github-pat".to_string(), Confidence::High)]);
        assert_eq!(ids(Mode::Strict, &pat), [("github-pat".to_string(), Confidence::High)]);
        // A held token percent-encoded four times over: three layers decoded leave its
        // every-byte-escaped form, which is one of its needles.
        let token = ["tok-live-", "0123456789abcdef"].concat();
        let known = KnownSecrets::new([crate::Secret::new(&token)]);
        let four: String = token.bytes().map(|b| format!("%252525{b:02X}")).collect();
        let found = scan_outbound(None, Some(&known), Mode::Standard, format!("k={four}").as_bytes());
        assert!(found.iter().any(|f| f.rule_id == "known-secret"), "{found:?}");
    }

    #[test]
    fn a_min_run_rule_runs_only_around_a_run_that_long() {
        let toml = "[[rules]]\nid = \"long\"\nregex = 'tok_[A-Za-z0-9]{20,}'\nkeywords = [\"tok_\"]\nminRun = 30\n";
        let rules = Rules::from_gitleaks_toml(toml, false).unwrap();
        let found = |text: &str| {
            let windowed = scan_outbound(Some(&rules), None, Mode::Standard, text.as_bytes()).len();
            (windowed, rules.scan(text.as_bytes()).len())
        };
        let short = format!("a={}", ["tok_", "Abc123", "Def456", "Ghi789", "Jk"].concat());
        let long = format!("a={}", ["tok_", "Abc123", "Def456", "Ghi789", "Jkl012", "Mno345"].concat());
        // Egress skips the rule around a run shorter than its minRun; the git gate does not.
        assert_eq!(found(&short), (0, 1), "{short}");
        assert_eq!(found(&long), (1, 1), "{long}");
    }

    #[test]
    fn a_wide_rules_keyword_is_found_in_any_case_at_any_place() {
        let token = ["Zq9Xw2Lm", "7Rt4Kp8Vb3"].concat();
        for curl in ["curl", "CURL", "cUrL", "Curl"] {
            for pad in 0..70 {
                let text = format!(
                    "{}{curl} -s https://api.example.test/v1 -H \"Authorization: Bearer {token}\"",
                    " ".repeat(pad)
                );
                let found = scan_outbound(Some(Rules::builtin()), None, Mode::Standard, text.as_bytes());
                assert!(found.iter().any(|f| f.rule_id == "curl-auth-header"), "{curl} after {pad}: {found:?}");
            }
        }
        // A keyword starting inside what looks like its own start (`------BEGIN`).
        let key = ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", &"bW9yZSBrZXkgbWF0ZXJpYWw".repeat(4)].concat();
        let pem = format!("x ------BEGIN PRIVATE KEY-----\n{key}\n-----END PRIVATE KEY-----\n");
        let found = scan_outbound(Some(Rules::builtin()), None, Mode::Standard, pem.as_bytes());
        assert!(found.iter().any(|f| f.rule_id == "private-key"), "{found:?}");
    }

    #[test]
    fn a_one_byte_wide_keyword_is_found_as_the_last_byte() {
        let toml = "[[rules]]\nid = \"tail\"\nregex = '''([0-9]{6,}) *~'''\nkeywords = [\"~\"]\nwide = true\n";
        let rules = Rules::from_gitleaks_toml(toml, false).unwrap();
        // Ending a block's worth of input (no padding after it), and not.
        for text in [format!("{}123456 ~", "x".repeat(56)), "code 123456 ~".into(), "code 123456 ~ and more".into()] {
            let found = scan_outbound(Some(&rules), None, Mode::Standard, text.as_bytes());
            assert_eq!(found.iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>(), ["tail"], "{text:?}");
        }
    }

    #[test]
    fn every_byte_reads_what_the_windows_pass_over() {
        // A token's shape with a body of lower-case letters only: no run the windows look at.
        let text = format!("{}_{}", "gho", "abcdefghijklmnopqrstuvwxyzabcd");
        let every = |mode| {
            scan_outbound_every_byte(Some(Rules::builtin()), None, mode, text.as_bytes())
                .into_iter()
                .map(|f| (f.rule_id, f.confidence))
                .collect::<Vec<_>>()
        };
        assert!(ids(Mode::Strict, &text).is_empty(), "{:?}", ids(Mode::Strict, &text));
        assert_eq!(every(Mode::Strict), [("vendor-token-prefix".to_string(), Confidence::Low)]);
        assert!(every(Mode::Standard).is_empty());
    }
}
