//! One cheap pass that says where in a buffer a credential could be, so the expensive parts of
//! a scan (keyword automata, rule regexes, decoding) only look there. A credential is a run of
//! bytes without a break (whitespace, quotes, brackets, `,;|<>\`), and it has a digit, an
//! upper-case letter or a `%` in it: random tokens all but always do, a value a rule reports at
//! high confidence must, every base64 of text, hex and percent-encoding does. (A capital that
//! starts an ordinary word, `The` or `Connection`, does not count: a token with one there has a
//! digit or another capital too.) So the pass classifies the bytes 64 at a time, in vector
//! instructions, jumps from anchor to anchor, and only around an anchor reads bytes one by one,
//! out to the run's ends. Prose, with few digits and capitals, is mostly skipped.
//!
//! It finds:
//! - runs: the maximal stretches without a break that hold an anchor, [`MIN_RUN`] or more long;
//! - hex chains: 8 or more hex pairs (`41`, `x41` or `0x41`) each parted from the next by one or
//!   two break bytes (`41 4b 49 …`, `\x41\x4b…`, `0x41, 0x4b, …`), which no run holds whole.

/// The shortest run worth reporting (the shortest held secret is 8 bytes).
pub(crate) const MIN_RUN: usize = 8;

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
    // A pair is at most 4 bytes (`0x41`): only the run's last 5 can hold it and what parts it.
    let last = run.len().saturating_sub(5);
    let tail = run[last..].iter().rposition(|b| !b.is_ascii_alphanumeric()).map_or(last, |p| last + p + 1);
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

/// Scans `data` once: anchors are taken in order, each from where the last run ended.
pub(crate) fn prescan(data: &[u8]) -> Prescan {
    let mut out = Prescan::default();
    let mut anchors = Anchors::new(data);
    let mut pos = 0;
    while let Some(at) = anchors.next(pos) {
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

/// Whether `b`, with the two bytes before it and the two after it, is an anchor: a digit, `%`,
/// or an upper-case letter but for one that starts an ordinary word. That is a capital at a
/// word's start (after a byte that is not a letter or digit, or after a JSON escape such as
/// `\n`) followed by lower-case letters to the word's end or beyond what is looked at (`A`, `Of`,
/// `The`, `Connection`); a token with a capital there has a digit or another capital inside.
/// Bytes beyond the input's ends are spaces. (Written without `&&` and `||`, whose branches
/// would keep the compiler from classifying 16 or 32 bytes an instruction.)
#[inline(always)]
fn is_anchor([before, prev, b, next, then]: [u8; 5]) -> bool {
    let digit = |c: u8| c.wrapping_sub(b'0') < 10;
    let lower = |c: u8| c.wrapping_sub(b'a') < 26;
    let alnum = |c: u8| digit(c) | lower(c | 0x20);
    let end = |c: u8| (c <= b' ') | (c == b'.') | (c == b',') | (c == b'"') | (c == b'\\');
    let escape = (before == b'\\') & ((prev == b'n') | (prev == b't') | (prev == b'r'));
    let word_start = (!alnum(prev) | escape) & (end(next) | lower(next) & (lower(then) | end(then)));
    digit(b) | (b == b'%') | (b.wrapping_sub(b'A') < 26) & !word_start
}

/// Whether every occurrence of `needle`, whatever bytes surround it, holds an anchor: a digit
/// or `%` in it, or a capital that no neighbours can make an ordinary word's start. (A held
/// secret such as `Passwordvalue` does not: after a space it reads as a word.)
pub(crate) fn always_anchored(needle: &[u8]) -> bool {
    // A byte of each kind `is_anchor` tells apart in a neighbour.
    const ANY: &[u8] = b" \\.na_A0";
    (0..needle.len()).any(|i| {
        let around = [-2, -1, 1, 2].map(|d| match i.checked_add_signed(d).and_then(|j| needle.get(j)) {
            Some(b) => std::slice::from_ref(b),
            None => ANY,
        });
        around[0].iter().all(|&b2| {
            around[1].iter().all(|&b1| {
                around[2].iter().all(|&a1| around[3].iter().all(|&a2| is_anchor([b2, b1, needle[i], a1, a2])))
            })
        })
    })
}

/// The anchors of a block given with the two bytes before it and the two after it: a byte each, 1
/// for an anchor. Compiled for the vector instructions the CPU has (with AVX2, 32 bytes an
/// instruction; else 16).
#[multiversion::multiversion(targets("x86_64+avx2", "aarch64+neon"))]
fn classify(span: &[u8; SPAN]) -> [u8; 64] {
    // A loop, not `array::from_fn`: its closure would not be compiled for these instructions.
    let mut flags = [0; 64];
    for (i, f) in flags.iter_mut().enumerate() {
        *f = u8::from(is_anchor([span[i], span[i + 1], span[i + 2], span[i + 3], span[i + 4]]));
    }
    flags
}

/// The anchors of `data`, found 64 bytes at a time. (Written here rather than taken from a
/// crate: `memchr` and the regex engine look for three bytes or a set of literals, not a class
/// of bytes that depends on its neighbours, and a search per class, restarted after every run,
/// cost more than the rest of the prescan.)
struct Anchors<'a> {
    data: &'a [u8],
    /// The block read (a multiple of 64), and its anchors: a byte each, 1 for an anchor.
    block: usize,
    flags: [u8; 64],
}

/// A block, the two bytes before it and the two after it.
const SPAN: usize = 2 + 64 + 2;

impl<'a> Anchors<'a> {
    fn new(data: &'a [u8]) -> Self {
        Anchors { data, block: 0, flags: Self::flags_at(data, 0) }
    }

    /// The anchors of the 64 bytes from `at` (none beyond the end). A block at an end of `data`
    /// is read from a copy with spaces beyond.
    fn flags_at(data: &[u8], at: usize) -> [u8; 64] {
        let padded;
        let span = match at.checked_sub(2).and_then(|s| data.get(s..)).and_then(<[u8]>::first_chunk::<SPAN>) {
            Some(span) => span,
            None => {
                let (from, to) = (at.saturating_sub(2), data.len().min(at + SPAN - 2));
                let skip = 2 - (at - from);
                let mut copy = [b' '; SPAN];
                copy[skip..skip + (to - from)].copy_from_slice(&data[from..to]);
                padded = copy;
                &padded
            }
        };
        classify(span)
    }

    /// The first anchor at or after `from`: the block's flags read eight at a time.
    fn next(&mut self, mut from: usize) -> Option<usize> {
        let word =
            |flags: &[u8; 64], k: usize| u64::from_le_bytes(flags[8 * k..8 * k + 8].try_into().unwrap_or([0; 8]));
        while from < self.data.len() {
            let block = from & !63;
            if block != self.block {
                (self.block, self.flags) = (block, Self::flags_at(self.data, block));
            }
            let (mut k, skip) = ((from - block) / 8, (from - block) % 8);
            let mut ahead = word(&self.flags, k) & (u64::MAX << (8 * skip));
            loop {
                if ahead != 0 {
                    return Some(block + 8 * k + ahead.trailing_zeros() as usize / 8);
                }
                k += 1;
                if k == 8 {
                    break;
                }
                ahead = word(&self.flags, k);
            }
            from = block + 64;
        }
        None
    }
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
    fn the_block_search_finds_exactly_the_anchor_bytes() {
        // Byte by byte, bytes beyond the ends read as spaces.
        let anchors_of = |data: &[u8]| -> Vec<usize> {
            let at = |i: usize, d: isize| i.checked_add_signed(d).and_then(|i| data.get(i)).copied().unwrap_or(b' ');
            (0..data.len()).filter(|&i| is_anchor([-2, -1, 0, 1, 2].map(|d| at(i, d)))).collect()
        };
        let found = |data: &[u8], from: usize| {
            let mut a = Anchors::new(data);
            std::iter::successors(a.next(from), |&p| a.next(p + 1)).collect::<Vec<_>>()
        };
        // Every byte value at every place of two blocks and a tail, among bytes on either side
        // of each class's bounds, and capitals starting words and not.
        let near = *b"/:@[$&`{az\x7f\x80\xffaB0\\n.";
        for b in 0..=255u8 {
            for at in 0..150 {
                let mut data: Vec<u8> = (0..150).map(|i| near[i % near.len()]).collect();
                data[at] = b;
                for len in [150, at + 1, (at + 2).min(150), (at + 3).min(150)] {
                    let data = &data[..len];
                    let want = anchors_of(data);
                    for from in [0, at.saturating_sub(3), at] {
                        let want: Vec<usize> = want.iter().copied().filter(|&p| p >= from).collect();
                        assert_eq!(found(data, from), want, "byte {b:#x} at {at} from {from}, {len} bytes");
                    }
                }
            }
        }
        for (text, want) in [
            ("The Connection", vec![]),
            ("A word. Of it, Is", vec![]),
            ("\\n\\nThe \\tAn", vec![]),
            ("xThe", vec![1]),
            ("TheX", vec![3]),
            ("AB", vec![0, 1]),
            ("Ab1", vec![0, 2]),
            ("A_b", vec![0]),
            ("nThe", vec![1]),
            ("7he", vec![0]),
        ] {
            assert_eq!(anchors_of(text.as_bytes()), want, "{text}");
            assert_eq!(found(text.as_bytes(), 0), want, "{text}");
        }
    }

    #[test]
    fn a_needle_is_always_anchored_only_when_no_neighbours_make_it_a_word() {
        for n in ["tok-live-1", "sEcretvalue", "SECRETVALUE", "50%off", "AbCdefghij"] {
            assert!(always_anchored(n.as_bytes()), "{n}");
        }
        // After a space, a quote or a JSON `\n`, these read as ordinary words.
        for n in ["Secretpasswordvalue", "nSecretvalue", "secretvalue", "A.bcdefgh"] {
            assert!(!always_anchored(n.as_bytes()), "{n}");
        }
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
