//! One cheap pass that says where in a buffer a credential could be, so the expensive parts of
//! a scan (keyword automata, rule regexes, decoding) only look there. A credential is a run of
//! bytes without a break (whitespace, quotes, brackets, `,;|<>\`), and it has a digit, an
//! upper-case letter or a `%` in it: random tokens all but always do, a value a rule reports at
//! high confidence must, every base64 of text, hex and percent-encoding does. (A capital that
//! starts an ordinary word, `The` or `Connection`, does not count: a token with one there has a
//! digit or another capital too.) So the pass jumps
//! from anchor to anchor — digits and `%` found by a vectorized search, upper-case letters by
//! comparing the buffer with its lower-cased copy eight bytes at a time — and only around an
//! anchor reads bytes one by one, out to the run's ends. Prose, with few digits and capitals,
//! is mostly skipped.
//!
//! It finds:
//! - runs: the maximal stretches without a break that hold an anchor, [`MIN_RUN`] or more long;
//! - hex chains: 8 or more hex pairs (`41`, `x41` or `0x41`) each parted from the next by one or
//!   two break bytes (`41 4b 49 …`, `\x41\x4b…`, `0x41, 0x4b, …`), which no run holds whole.

use std::sync::LazyLock;

use regex::bytes::Regex;

/// The shortest run worth reporting (the shortest held secret is 8 bytes).
pub(crate) const MIN_RUN: usize = 8;

/// Digits: ten bytes, which the regex engine searches for with vector instructions.
static DIGIT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u)[0-9]").unwrap_or_else(|e| panic!("anchor pattern: {e}")));

/// What the pass found.
#[derive(Debug, Default)]
pub(crate) struct Prescan {
    /// `(start, end)` of every anchored run of [`MIN_RUN`] or more bytes, in order.
    pub(crate) runs: Vec<(usize, usize)>,
    /// `(start, end)` of every hex chain, in order.
    pub(crate) hex_chains: Vec<(usize, usize)>,
}

/// The bytes that end a run: whitespace and control bytes, quotes, brackets, `,;|<>`, and `\`
/// (in JSON text, `\n` parts two words).
static BREAK: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b <= b' ' as usize || b == 0x7f;
        b += 1;
    }
    let more = *b"\"'`,;()<>[]{}|\\";
    let mut i = 0;
    while i < more.len() {
        t[more[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `b` ends a run.
#[inline(always)]
pub(crate) fn is_break(b: u8) -> bool {
    BREAK[usize::from(b)]
}

/// A run's worth as part of a hex chain: `41` (2 hex digits), `x41` (after a `\`) or `0x41`.
fn hex_pair(run: &[u8]) -> bool {
    match run {
        [a, b] | [b'x' | b'X', a, b] | [b'0', b'x' | b'X', a, b] => a.is_ascii_hexdigit() && b.is_ascii_hexdigit(),
        _ => false,
    }
}

/// The run around `at` (which is not a break): its start and end.
fn run_at(data: &[u8], at: usize) -> (usize, usize) {
    let start = data[..at].iter().rposition(|&b| is_break(b)).map_or(0, |p| p + 1);
    let end = data[at..].iter().position(|&b| is_break(b)).map_or(data.len(), |p| at + p);
    (start, end)
}

/// The hex chain starting with the run `data[start..end]` (whose tail after its last
/// non-alphanumeric byte is a hex pair): its span if it has 8 or more pairs.
fn chain_from(data: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    let run = &data[start..end];
    let tail = run.iter().rposition(|b| !b.is_ascii_alphanumeric()).map_or(0, |p| p + 1);
    if !hex_pair(&run[tail..]) {
        return None;
    }
    let (first, mut last, mut pairs) = (start + tail, end, 1);
    loop {
        // One or two break bytes, then the next pair.
        let gap = data[last..].iter().take(3).take_while(|&&b| is_break(b)).count();
        if gap == 0 || gap > 2 {
            break;
        }
        let next = last + gap;
        let len = data[next..].iter().take(5).take_while(|&&b| !is_break(b)).count();
        if len == 0 {
            break;
        }
        if !hex_pair(&data[next..next + len]) {
            break;
        }
        (last, pairs) = (next + len, pairs + 1);
    }
    (pairs >= 8).then_some((first, last))
}

/// Scans `data` once.
pub(crate) fn prescan(data: &[u8]) -> Prescan {
    prescan_lowered(data, &data.to_ascii_lowercase())
}

/// [`prescan`] given `data` lower-cased (which a scan makes once for the held secrets too).
/// Anchors are taken in order, each from where the last run ended: digits by the regex engine's
/// vectorized search, `%` by `memchr`, upper-case letters by comparing eight bytes at a time.
pub(crate) fn prescan_lowered(data: &[u8], lower: &[u8]) -> Prescan {
    let mut out = Prescan::default();
    let mut pos = 0;
    // The next anchor of each kind (`usize::MAX` when there is none left), found from `pos`.
    const NONE: usize = usize::MAX;
    let (mut digit, mut percent, mut upper) = (0, 0, 0);
    let mut first = true;
    loop {
        if first || (digit != NONE && digit < pos) {
            digit = DIGIT.find_at(data, pos).map_or(NONE, |m| m.start());
        }
        if first || (percent != NONE && percent < pos) {
            percent = memchr::memchr(b'%', &data[pos..]).map_or(NONE, |p| pos + p);
        }
        if first || (upper != NONE && upper < pos) {
            // A capital starting an ordinary word (`The`, `Connection`) is no anchor: a token
            // with one there has a digit, or another capital inside.
            let mut from = pos;
            upper = loop {
                match next_upper(data, lower, from) {
                    Some(u) if capitalized(data, u) => from = u + 1,
                    Some(u) => break u,
                    None => break NONE,
                }
            };
        }
        first = false;
        let at = digit.min(percent).min(upper);
        if at == NONE {
            break;
        }
        let (start, end) = run_at(data, at);
        pos = end.max(at + 1);
        if end - start >= MIN_RUN {
            out.runs.push((start, end));
        }
        if let Some(chain) = chain_from(data, start, end)
            && out.hex_chains.last().is_none_or(|last| last.1 < chain.0)
        {
            pos = pos.max(chain.1);
            out.hex_chains.push(chain);
        }
    }
    out
}

/// Whether the capital at `at` starts a word followed by two lower-case letters.
fn capitalized(data: &[u8], at: usize) -> bool {
    (at == 0 || !data[at - 1].is_ascii_alphanumeric())
        && data.get(at + 1).is_some_and(u8::is_ascii_lowercase)
        && data.get(at + 2).is_some_and(u8::is_ascii_lowercase)
}

/// The first upper-case letter at or after `from`: where `data` and `lower` differ, compared
/// eight bytes at a time (a 64-byte block with none is passed over in one step).
fn next_upper(data: &[u8], lower: &[u8], from: usize) -> Option<usize> {
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let mut i = from;
    while i < data.len() && !i.is_multiple_of(8) {
        if data[i] != lower[i] {
            return Some(i);
        }
        i += 1;
    }
    while i + 64 <= data.len() {
        let any = (0..8).fold(0u64, |acc, k| acc | (word(data, i + 8 * k) ^ word(lower, i + 8 * k)));
        if any == 0 {
            i += 64;
            continue;
        }
        for k in 0..8 {
            let diff = word(data, i + 8 * k) ^ word(lower, i + 8 * k);
            if diff != 0 {
                return Some(i + 8 * k + diff.trailing_zeros() as usize / 8);
            }
        }
    }
    while i + 8 <= data.len() {
        let diff = word(data, i) ^ word(lower, i);
        if diff != 0 {
            return Some(i + diff.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    (i..data.len()).find(|&j| data[j] != lower[j])
}

/// Whether a run looks like it could hold a credential, rather than a word: 16 bytes or more,
/// or 10 or more with a digit, an upper-case letter after the first byte, or a symbol other
/// than `.` (`_-+/=:%@$~!^&*#?\`). A value a rule reports at high confidence has digits; a
/// credential format has a long body or a prefix with `_` or `-`.
pub(crate) fn token_like(run: &[u8]) -> bool {
    run.len() >= 16
        || (run.len() >= 10
            && run.iter().enumerate().any(|(i, &b)| {
                b.is_ascii_digit() || (i > 0 && b.is_ascii_uppercase()) || (b.is_ascii_punctuation() && b != b'.')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(text: &str) -> Vec<&str> {
        prescan(text.as_bytes()).runs.iter().map(|&(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn runs_are_the_anchored_stretches_between_breaks() {
        let text = format!("a {} b,\"{}\";(ccccc) {} {}", "x".repeat(70), "key=Zq9/+w_y", "z".repeat(8), "Y".repeat(9));
        assert_eq!(runs(&text), ["key=Zq9/+w_y", "YYYYYYYYY"], "runs without a digit, a capital or % are skipped");
        // Across any alignment, and up to the end.
        for pad in 0..130 {
            let text = format!("{} {} tail-of-1t", "p".repeat(pad), "r7".repeat(20));
            let r = runs(&text);
            assert!(r.contains(&"r7".repeat(20).as_str()), "{pad}: {r:?}");
            assert_eq!(r.last(), Some(&"tail-of-1t"));
        }
        assert_eq!(runs("%41%4b%49%41"), ["%41%4b%49%41"]);
        assert!(runs("").is_empty());
        assert!(runs("Short words only, 42 here").is_empty());
    }

    #[test]
    fn hex_chains_need_eight_pairs_one_or_two_breaks_apart() {
        let find =
            |t: &str| prescan(t.as_bytes()).hex_chains.iter().map(|&(s, e)| t[s..e].to_string()).collect::<Vec<_>>();
        assert_eq!(find("x 74 6f 6b 2d 6c 69 76 65 y"), ["74 6f 6b 2d 6c 69 76 65"]);
        assert_eq!(find("key=74 6f 6b 2d 6c 69 76 65;"), ["74 6f 6b 2d 6c 69 76 65"]);
        assert_eq!(
            find("[0x74, 0x6f, 0x6b, 0x2d, 0x6c, 0x69, 0x76, 0x65]"),
            ["0x74, 0x6f, 0x6b, 0x2d, 0x6c, 0x69, 0x76, 0x65"]
        );
        assert!(find("74 6f 6b 2d 6c 69 76").is_empty(), "seven pairs");
        assert!(find("an ox is at my door in the barn at 10 am").is_empty());
    }

    #[test]
    fn token_like_runs() {
        for t in [
            "ghp_Abcdefghij0123456789",
            "sk-live-12",
            "password=x9",
            "AKIAIOSFODNN7EXAMPLE",
            "aaaaaaaaaaaaaaaa",
            "1abcdefghij",
        ] {
            assert!(token_like(t.as_bytes()), "{t}");
        }
        for t in ["configuration", "implementation.", "Connections", "short1"] {
            assert!(!token_like(t.as_bytes()), "{t}");
        }
    }
}
