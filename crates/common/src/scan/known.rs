//! Exact secret values (the tokens a bottle holds) and their common encodings.
//!
//! Each value becomes needles: raw; hex; percent-encoded (RFC 3986 unreserved characters kept,
//! with `+` for space or not, and every byte encoded); base64 standard and URL-safe, for each of
//! the three alignments the value can have inside a longer encoded string (only the characters
//! that depend on the value alone). One Aho-Corasick automaton finds them all, ASCII
//! case-insensitively: upper-, lower- and mixed-case hex and escapes, and the value with its
//! case changed (a lower-case hex token sent upper-case is the same token). Any other mix of
//! encoded and plain characters, and encodings of encodings, are found by scanning what the
//! input decodes to ([`super::layered`]). Values shorter than [`KnownSecrets::MIN_LEN`] bytes
//! are ignored: they would match ordinary text and their encodings are too short to mean
//! anything.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use super::{Confidence, Finding, assign_lines, redact};
use crate::Secret;

/// The rule id of a known-secret finding.
pub const KNOWN_SECRET_ID: &str = "known-secret";

/// A compiled set of known secret values.
pub struct KnownSecrets {
    /// Every needle.
    ac: Option<AhoCorasick>,
    /// The needles that only occur inside a prescan's runs (a digit, `%` or mixed case, and no
    /// break byte: tokens and their encodings, nearly always), for a scan that only reads those
    /// runs ([`KnownSecrets::scan_runs`]), and the others, which it still looks for everywhere.
    in_runs: Option<AhoCorasick>,
    elsewhere: Option<AhoCorasick>,
    longest: usize,
    count: usize,
    /// The needles lower-cased, indexed by their first byte (for [`KnownSecrets::pending`]).
    by_first: Vec<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Needles are secrets: never print them.
        f.debug_struct("KnownSecrets").field("values", &self.count).finish_non_exhaustive()
    }
}

/// `v` percent-encoded: unreserved characters kept (unless `all`), `+` for space if asked.
fn percent_encode(v: &[u8], all: bool, plus_space: bool) -> Vec<u8> {
    let digits: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(v.len() * 3);
    for &b in v {
        if !all && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
            out.push(b);
        } else if plus_space && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
        }
    }
    out
}

/// The base64 characters determined by `v` alone when `v` starts `align` bytes (mod 3) into
/// the encoded data.
fn base64_core(engine: &impl base64::Engine, v: &[u8], align: usize) -> Vec<u8> {
    let mut buf = vec![0u8; align];
    buf.extend_from_slice(v);
    let enc = engine.encode(&buf).into_bytes();
    let first = (8 * align).div_ceil(6);
    let last = (8 * (align + v.len())) / 6;
    enc[first.min(last)..last].to_vec()
}

impl KnownSecrets {
    /// Shorter values are ignored (documented choice: too many false positives).
    pub const MIN_LEN: usize = 8;

    pub fn new<I: IntoIterator<Item = Secret>>(values: I) -> KnownSecrets {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        let mut count = 0;
        for s in values {
            let v = s.expose().as_bytes();
            if v.len() < Self::MIN_LEN {
                continue;
            }
            count += 1;
            needles.push(v.to_vec());
            needles.push(hex::encode(v).into_bytes());
            for (all, plus) in [(false, false), (false, true), (true, false)] {
                needles.push(percent_encode(v, all, plus));
            }
            for align in 0..3 {
                needles.push(base64_core(&STANDARD_NO_PAD, v, align));
                needles.push(base64_core(&URL_SAFE_NO_PAD, v, align));
            }
        }
        needles.retain(|n| n.len() >= Self::MIN_LEN);
        needles.sort_by_key(|n| n.to_ascii_lowercase());
        needles.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        // A needle that holds an anchor wherever it occurs (a digit, `%`, or a capital no
        // neighbours make a word's start) and no break byte lies inside a run the prescan finds;
        // any other is looked for everywhere. (A case-changed copy of a mixed-case value is
        // another value: it need not be found.)
        let anchored =
            |n: &Vec<u8>| super::prescan::always_anchored(n) && !n.iter().any(|&b| super::prescan::is_break(b));
        // Building can only fail on absurd sizes; an empty set would fail open, so panic.
        let build = |set: Vec<Vec<u8>>, short: bool| {
            (!set.is_empty()).then(|| {
                let mut b = AhoCorasickBuilder::new();
                b.match_kind(MatchKind::LeftmostLongest).ascii_case_insensitive(true);
                if short {
                    // Searched in many short runs: a plain DFA, without a prefilter to set up
                    // for each.
                    b.kind(Some(AhoCorasickKind::DFA)).prefilter(false);
                }
                b.build(set).unwrap_or_else(|e| panic!("known secrets automaton: {e}"))
            })
        };
        let ac = build(needles.clone(), false);
        let in_runs = build(needles.iter().filter(|n| anchored(n)).cloned().collect(), true);
        let elsewhere = build(needles.iter().filter(|n| !anchored(n)).cloned().collect(), false);
        let mut by_first = vec![Vec::new(); 256];
        for n in &needles {
            by_first[usize::from(n[0].to_ascii_lowercase())].push(n.to_ascii_lowercase());
        }
        KnownSecrets { ac, in_runs, elsewhere, longest, count, by_first }
    }

    /// How many bytes at the end of `data` could be the start of a needle still arriving: the
    /// longest suffix that is a proper prefix of one (ASCII case-insensitively). A stream that
    /// must not pass on a secret in any piece (a response relayed to the agent) holds these back
    /// until more data or the end shows what they are.
    pub fn pending(&self, data: &[u8]) -> usize {
        let from = data.len().saturating_sub(self.longest.saturating_sub(1));
        for start in from..data.len() {
            let tail = &data[start..];
            let candidates = &self.by_first[usize::from(tail[0].to_ascii_lowercase())];
            if candidates.iter().any(|n| n.len() > tail.len() && n[..tail.len()].eq_ignore_ascii_case(tail)) {
                return tail.len();
            }
        }
        0
    }

    /// True when no value was long enough to be searched for.
    pub fn is_empty(&self) -> bool {
        self.ac.is_none()
    }

    /// Length of the longest needle (any encoding).
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Whether a known value occurs in `data` in any of its encodings: whether
    /// [`KnownSecrets::scan`] would find anything, without building the findings.
    pub fn occurs_in(&self, data: &[u8]) -> bool {
        self.ac.as_ref().is_some_and(|ac| ac.is_match(data))
    }

    /// Every occurrence of a known value in any of its encodings, sorted, 1-based lines.
    pub fn scan(&self, data: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scan_into(data, &mut out);
        assign_lines(data, &mut out, 0, 0);
        out
    }

    pub(crate) fn scan_into(&self, data: &[u8], out: &mut Vec<Finding>) {
        if let Some(ac) = &self.ac {
            Self::push(ac, data, 0..data.len(), out);
        }
    }

    /// [`KnownSecrets::scan_into`] reading only where an anchored needle could be: the `runs`
    /// (anchored stretches without a break, [`super::prescan`]), which hold every occurrence of
    /// one; the other needles are looked for everywhere.
    pub(crate) fn scan_runs(&self, data: &[u8], runs: &[(usize, usize)], out: &mut Vec<Finding>) {
        // Runs covering much of the input (dense code, base64) read faster as one search.
        if runs.iter().map(|(s, e)| e - s).sum::<usize>() > data.len() / 4 {
            self.scan_into(data, out);
            return;
        }
        if let Some(ac) = &self.in_runs {
            for &(s, e) in runs {
                Self::push(ac, data, s..e, out);
            }
        }
        if let Some(ac) = &self.elsewhere {
            Self::push(ac, data, 0..data.len(), out);
        }
    }

    /// Every match of `ac` in `data[range]`.
    fn push(ac: &AhoCorasick, data: &[u8], range: std::ops::Range<usize>, out: &mut Vec<Finding>) {
        for m in ac.find_iter(aho_corasick::Input::new(data).range(range)) {
            let (start, end) = (m.start(), m.end());
            out.push(Finding {
                rule_id: KNOWN_SECRET_ID.to_string(),
                start,
                end,
                line: 0,
                secret_redacted: redact(&data[start..end]),
                confidence: Confidence::High,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn value() -> String {
        // assembled at runtime: a fake token with every byte class the encoders care about
        ["tok", "-", "Zq9/+x y=ü", "&", "END"].concat()
    }

    fn known() -> KnownSecrets {
        KnownSecrets::new([Secret::new(value()), Secret::new("short")])
    }

    /// What the scan finds, checked against [`KnownSecrets::occurs_in`].
    fn found_in(data: &[u8]) -> bool {
        let found = known().scan(data).iter().any(|f| f.rule_id == KNOWN_SECRET_ID);
        assert_eq!(known().occurs_in(data), found, "occurs_in disagrees with scan");
        found
    }

    #[test]
    fn raw_hex_and_percent() {
        let v = value();
        assert!(found_in(format!("a {v} b").as_bytes()));
        assert!(found_in(format!("x={}", hex::encode(&v)).as_bytes()));
        assert!(found_in(format!("x={}", hex::encode_upper(&v)).as_bytes()));
        assert!(found_in(format!("q={}&z", percent_encode(v.as_bytes(), false, false).escape_ascii()).as_bytes()));
        assert!(found_in(format!("q={}&z", percent_encode(v.as_bytes(), false, true).escape_ascii()).as_bytes()));
        let all = String::from_utf8(percent_encode(v.as_bytes(), true, false)).unwrap();
        assert!(found_in(all.as_bytes()), "every byte escaped");
        assert!(found_in(all.to_ascii_lowercase().as_bytes()), "lower-case escapes");
        let mixed: String =
            all.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c }).collect();
        assert!(found_in(mixed.as_bytes()), "mixed-case escapes");
        let hexed = hex::encode(&v);
        let mixed: String =
            hexed.chars().enumerate().map(|(i, c)| if i % 3 == 0 { c.to_ascii_uppercase() } else { c }).collect();
        assert!(found_in(mixed.as_bytes()), "mixed-case hex");
        assert!(!found_in(b"nothing here at all"));
    }

    #[test]
    fn base64_every_alignment_both_alphabets() {
        let v = value();
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            let payload = format!("{prefix}{v}:trailer");
            for enc in [STANDARD_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(&payload)] {
                let body = format!("Authorization: Basic {enc}\r\n");
                assert!(found_in(body.as_bytes()), "prefix {prefix:?}");
            }
        }
    }

    #[test]
    fn pending_is_the_longest_tail_a_needle_could_start_with() {
        let k = known();
        let v = value();
        assert_eq!(k.pending(b"nothing to hold\n\n"), 0, "no needle starts with a newline");
        for cut in 1..v.len() {
            let mut data = b"text ".to_vec();
            data.extend_from_slice(&v.as_bytes()[..cut]);
            assert!(k.pending(&data) >= cut, "{cut}");
        }
        assert_eq!(k.pending(format!("x {v}\n").as_bytes()), 0, "a whole needle is found, not held");
        assert_eq!(k.pending(b""), 0);
        assert_eq!(KnownSecrets::new([]).pending(b"abc"), 0);
    }

    #[test]
    fn short_values_are_ignored() {
        let k = KnownSecrets::new([Secret::new("short")]);
        assert!(k.is_empty());
        assert!(k.scan(b"short short").is_empty());
        assert!(!known().is_empty());
        assert_eq!(format!("{:?}", known()), "KnownSecrets { values: 1, .. }");
    }

    #[test]
    fn span_and_line() {
        let v = value();
        let data = format!("l1\nl2 {v}\n");
        let f = known().scan(data.as_bytes());
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].line, &data.as_bytes()[f[0].start..f[0].end]), (2, v.as_bytes()));
    }
}
