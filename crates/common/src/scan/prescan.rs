//! One cheap pass that says where in a buffer a credential could be, so the expensive parts of
//! a scan (keyword automata, rule regexes, decoding) only look there. A credential is a run of
//! bytes without a break (whitespace, quotes, brackets, `,;|<>\`), and it has a digit, an
//! upper-case letter or a `%` in it: random tokens all but always do, a value a rule reports at
//! high confidence must, every base64 of text, hex and percent-encoding does. (A capital that
//! starts an ordinary word, `The` or `Connection`, does not count: a token with one there has a
//! digit or another capital too.) So the pass classifies the bytes 64 at a time, in vector
//! instructions, into bit masks (anchors, breaks, digits), and, 4 KiB at a time while those
//! bytes are still in cache, jumps from anchor to anchor and from an anchor to the breaks either
//! side of it by bit scans; only a run's last bytes are read one by one (for a hex chain). Prose,
//! with few digits and capitals, is mostly skipped.
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
    /// How many digits each 64-byte block from the start holds.
    pub(crate) digits: Vec<u8>,
    /// Where a keyword of the [`Leads`] given could start, in order.
    pub(crate) leads: Vec<usize>,
}

/// A set of bytes, looked up by nibble: `b` is in it when `low[b & 15]` and `high[b >> 4]` share
/// a bit (each table twice, for both 128-bit lanes of a vector lookup). Bits 1 to 6 stand for the
/// high nibbles 2 to 7, and hold the set exactly; bit 0 stands for every byte below 0x20 and bit
/// 7 for every byte from 0x80 up, so a set with one of those holds them all (a superset: what it
/// finds is checked again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ByteSet {
    low: [u8; 32],
    high: [u8; 32],
}

impl ByteSet {
    pub(crate) fn new(bytes: impl IntoIterator<Item = u8>) -> ByteSet {
        let mut table = [false; 256];
        for b in bytes {
            table[usize::from(b)] = true;
        }
        ByteSet::of(&table)
    }

    /// The set of the bytes `table` marks.
    const fn of(table: &[bool; 256]) -> ByteSet {
        const fn bit(high: usize) -> u8 {
            match high {
                0 | 1 => 1,
                2..=7 => 1 << (high - 1),
                _ => 1 << 7,
            }
        }
        let mut set = ByteSet { low: [0; 32], high: [0; 32] };
        let mut b = 0;
        while b < 256 {
            if b < 16 {
                (set.high[b], set.high[16 + b]) = (bit(b), bit(b));
            }
            // A byte outside 0x20..0x80 stands for all of its kind: every low nibble.
            let (mut l, last) = if 0x20 <= b && b < 0x80 { (b & 15, b & 15) } else { (0, 15) };
            while table[b] && l <= last {
                set.low[l] |= bit(b >> 4);
                set.low[16 + l] |= bit(b >> 4);
                l += 1;
            }
            b += 1;
        }
        set
    }

    fn contains(&self, b: u8) -> bool {
        self.low[usize::from(b & 15)] & self.high[usize::from(b >> 4)] != 0
    }
}

/// Where a keyword could start: a byte of `first` followed by a byte of `second` (both sets
/// hold both cases of a letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leads {
    pub(crate) first: ByteSet,
    pub(crate) second: ByteSet,
}

/// The bytes that end a run: whitespace and control bytes, quotes, brackets, `,;|<>`, and `\`
/// (in JSON text, `\n` parts two words).
const BREAK: [bool; 256] = {
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

/// The bytes that end a word (for [`is_anchor`]): a space or below, `.`, `,`, `"` and `\`.
const END: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] =
            b <= b' ' as usize || b == b'.' as usize || b == b',' as usize || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    t
};

/// [`BREAK`] for the vector code (held exactly: every byte below 0x20 is in it, none from 0x80
/// up).
const BREAKS: ByteSet = ByteSet::of(&BREAK);

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

/// The hex chain starting with the run `data[start..end]` (whose tail after its last
/// non-alphanumeric byte is a hex pair): its span if it has 8 or more pairs.
#[inline(always)]
fn chain_from(data: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    // What most runs fail on first, read from their last three bytes: a pair's two hex
    // digits, and before them a break, `x` or the run's start (not a longer word or number,
    // `4096`).
    let back = |i: usize| (end - start >= i).then(|| data[end - i]);
    let hex = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_hexdigit());
    if !hex(back(1)) || !hex(back(2)) || back(3).is_some_and(|b| b.is_ascii_alphanumeric() && b | 0x20 != b'x') {
        return None;
    }
    chain_from_pair(data, start, end)
}

/// [`chain_from`], past its first test.
#[inline(never)]
fn chain_from_pair(data: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
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

/// Scans `data` once: anchors are taken in order, each from where the last run ended; a run's
/// ends are the break bytes either side of its anchor.
/// With `leads`, also where a keyword could start.
pub(crate) fn prescan(data: &[u8], leads: Option<&Leads>) -> Prescan {
    let mut runs = Runs { data, pos: 0, last_brk: None, open: None, out: Prescan::default() };
    let (digits, leads) = blocks(data, leads, &mut |k, blocks| runs.chunk(k, blocks));
    if let Some(start) = runs.open.take() {
        runs.close(start, data.len());
    }
    Prescan { digits, leads, ..runs.out }
}

/// The last break byte in `blocks`, the first of which is block `k`.
fn last_break(k: usize, blocks: &[Block]) -> Option<usize> {
    let i = blocks.iter().rposition(|b| b.brk != 0)?;
    Some(64 * (k + i) + 63 - blocks[i].brk.leading_zeros() as usize)
}

/// The runs and hex chains, found block by block as the vector pass makes the blocks (while
/// their bytes are still in the nearest cache).
struct Runs<'a> {
    data: &'a [u8],
    /// Anchors before this lie in a run or chain already taken.
    pos: usize,
    /// The last break byte before the current chunk of blocks.
    last_brk: Option<usize>,
    /// The start of the run whose anchor was found and whose end lies beyond the blocks so far.
    open: Option<usize>,
    out: Prescan,
}

impl Runs<'_> {
    /// Takes the anchors of `blocks`, the first of which is block `k`: the blocks with anchors
    /// are found from a bit each (about half of them, in no order a branch could foresee), and
    /// while a run is open, the first block with a break.
    fn chunk(&mut self, k: usize, blocks: &[Block]) {
        let mut todo = blocks.iter().enumerate().fold(0u64, |m, (i, b)| m | u64::from(b.anchor != 0) << i);
        let mut from = 0;
        loop {
            if self.open.is_some() {
                // The blocks up to the next break lie in the open run, anchors and all.
                let Some(j) = blocks[from..].iter().position(|b| b.brk != 0).map(|j| from + j) else { break };
                todo = todo & (u64::MAX << j) | 1 << j;
            }
            if todo == 0 {
                break;
            }
            let i = todo.trailing_zeros() as usize;
            todo &= todo - 1;
            self.block(k + i, blocks[i], &blocks[..i]);
            from = i + 1;
        }
        self.last_brk = last_break(k, blocks).or(self.last_brk);
    }

    /// Takes the anchors of block `k` in order (`earlier`: the blocks of its chunk before it).
    /// A run's start may lie blocks back, its end blocks ahead: a run still open at a block's
    /// end is closed by the first break of the next block that has one, which [`Runs::chunk`]
    /// visits next.
    #[inline(always)]
    fn block(&mut self, k: usize, b: Block, earlier: &[Block]) {
        let base = 64 * k;
        if let Some(start) = self.open.take() {
            self.close(start, base + b.brk.trailing_zeros() as usize);
        }
        loop {
            let from = self.pos.saturating_sub(base);
            let anchors = if from < 64 { b.anchor & (u64::MAX << from) } else { 0 };
            if anchors == 0 {
                return;
            }
            let at = anchors.trailing_zeros();
            let before = b.brk & !(u64::MAX << at);
            let start = match before {
                0 => last_break(k - earlier.len(), earlier).or(self.last_brk).map_or(0, |p| p + 1),
                _ => base + 64 - before.leading_zeros() as usize,
            };
            match b.brk >> at {
                0 => {
                    self.open = Some(start);
                    return;
                }
                after => self.close(start, base + (at + after.trailing_zeros()) as usize),
            }
        }
    }

    /// The run `data[start..end]` (at the end, the input's end), and the hex chain it starts.
    fn close(&mut self, start: usize, end: usize) {
        let end = end.min(self.data.len());
        self.pos = end;
        if end - start >= MIN_RUN {
            self.out.runs.push((start, end));
        }
        if let Some(chain) = chain_from(self.data, start, end)
            && self.out.hex_chains.last().is_none_or(|last| last.1 < chain.0)
        {
            self.pos = self.pos.max(chain.1);
            self.out.hex_chains.push(chain);
        }
    }
}

/// Whether `b`, with the two bytes before it and the two after it, is an anchor: a digit, `%`,
/// or an upper-case letter but for one that starts an ordinary word. That is a capital at a
/// word's start (after a byte that is not a letter or digit, or after an escape: `\` and a
/// lower-case letter, as JSON's `\n` or `\t`) followed by lower-case letters to the word's end
/// or beyond what is looked at (`A`, `Of`, `The`, `Connection`); a token with a capital there
/// has a digit or another capital inside. Bytes beyond the input's ends are spaces. (The
/// reference [`blocks`]' bit operations must agree with.)
fn is_anchor([before, prev, b, next, then]: [u8; 5]) -> bool {
    let digit = |c: u8| c.wrapping_sub(b'0') < 10;
    let lower = |c: u8| c.wrapping_sub(b'a') < 26;
    let alnum = |c: u8| digit(c) | lower(c | 0x20);
    let end = |c: u8| END[usize::from(c)];
    let escape = (before == b'\\') & lower(prev);
    let word_start = (!alnum(prev) | escape) & (end(next) | lower(next) & (lower(then) | end(then)));
    digit(b) | (b == b'%') | (b.wrapping_sub(b'A') < 26) & !word_start
}

/// Whether every occurrence of `needle`, whatever bytes surround it, holds an anchor: a digit
/// or `%` in it, or a capital that no neighbours can make an ordinary word's start. (A held
/// secret such as `Passwordvalue` does not: after a space it reads as a word.)
pub(crate) fn always_anchored(needle: &[u8]) -> bool {
    // A byte of each kind `is_anchor` tells apart in a neighbour.
    const ANY: &[u8] = b" \\.a_A0";
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

/// The bytes of a 64-byte block by class, a bit each (bit i: the block's byte i).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Block {
    anchor: u64,
    brk: u64,
}

/// The classes of a block's bytes that need no neighbour to tell, a bit each: what [`Block`]'s
/// are made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Classes {
    digit: u64,
    upper: u64,
    lower: u64,
    percent: u64,
    backslash: u64,
    brk: u64,
    /// A byte that ends a word: a space or below, `.`, `,`, `"` or `\`.
    end: u64,
    /// A byte of the leads' first set, and of the second (none without leads).
    first: u64,
    second: u64,
}

impl Classes {
    /// Byte by byte (the compiler vectorises what it can).
    #[inline(always)]
    fn of(block: &[u8; 64], leads: Option<&Leads>) -> Classes {
        let mut out = Classes::default();
        for (i, &b) in block.iter().enumerate() {
            let bit = |on: bool| u64::from(on) << i;
            out.digit |= bit(b.is_ascii_digit());
            out.upper |= bit(b.is_ascii_uppercase());
            out.lower |= bit(b.is_ascii_lowercase());
            out.percent |= bit(b == b'%');
            out.backslash |= bit(b == b'\\');
            out.brk |= bit(is_break(b));
            out.end |= bit(END[usize::from(b)]);
            if let Some(l) = leads {
                out.first |= bit(l.first.contains(b));
                out.second |= bit(l.second.contains(b));
            }
        }
        out
    }
}

/// A block's [`Block`] from its classes and its neighbours': [`is_anchor`] in bit operations
/// (a neighbour's class is a class shifted by a bit or two, the bits beyond the block taken from
/// the block before or after).
#[inline(always)]
fn block(prev: &Classes, cur: &Classes, next: &Classes) -> (Block, u64) {
    let alnum = |c: &Classes| c.digit | c.upper | c.lower;
    // Bit i: byte i - n, and byte i + n.
    let back = |m: fn(&Classes) -> u64, n: u32| m(cur) << n | m(prev) >> (64 - n);
    let ahead = |m: fn(&Classes) -> u64, n: u32| m(cur) >> n | m(next) << (64 - n);
    let escape = back(|c| c.backslash, 2) & back(|c| c.lower, 1);
    let word_end = ahead(|c| c.end, 1) | ahead(|c| c.lower, 1) & (ahead(|c| c.lower, 2) | ahead(|c| c.end, 2));
    let word_start = (!back(alnum, 1) | escape) & word_end;
    let lead = cur.first & ahead(|c| c.second, 1);
    (Block { anchor: cur.digit | cur.percent | cur.upper & !word_start, brk: cur.brk }, lead)
}

/// `rest` (at most `N` bytes: the last of an input) and spaces after it.
fn padded<const N: usize>(rest: &[u8]) -> [u8; N] {
    let mut out = [b' '; N];
    out[..rest.len()].copy_from_slice(rest);
    out
}

/// How many blocks are made before they are handed on (4 KiB of input: still in the nearest
/// cache when the blocks are read).
const CHUNK: usize = 64;

/// The blocks of `data`, 64 bytes each from its start (bytes beyond its end are spaces), handed
/// to `sink` [`CHUNK`] at a time with the first one's index as they are made; returned: how
/// many digits each block holds, and where a byte of the leads' first set is followed by one of
/// the second. Written here rather than taken from a crate: `memchr` and the regex engine look
/// for a few bytes or a set of literals, not a class of bytes that depends on its neighbours,
/// and a search per class, restarted after every run, cost more than the rest of the prescan.
/// With AVX2, vector instructions classify 32 bytes at a time, read each byte's neighbours'
/// classes, and turn the verdicts into bit masks ([`avx2::blocks`]).
#[multiversion::multiversion(targets("x86_64+avx2+popcnt", "aarch64+neon"))]
fn blocks(data: &[u8], leads: Option<&Leads>, sink: &mut dyn FnMut(usize, &[Block])) -> (Vec<u8>, Vec<usize>) {
    multiversion::target::match_target! {
        "x86_64+avx2+popcnt" => avx2::blocks(data, leads, sink),
        _ => blocks_by(data, |block| Classes::of(block, leads), sink),
    }
}

/// [`blocks`] in bit operations on 64-bit masks, each block's classes found by `classes`: the
/// code for CPUs without AVX2, and the reference for the vector code.
#[inline(always)]
fn blocks_by(
    data: &[u8],
    classes: impl Fn(&[u8; 64]) -> Classes,
    sink: &mut dyn FnMut(usize, &[Block]),
) -> (Vec<u8>, Vec<usize>) {
    // What lies beyond the input's ends: spaces, classed as any block is (a space may be in the
    // leads' second set).
    let spaces = classes(&[b' '; 64]);
    let classes_at = |k: usize| match data.get(64 * k..).and_then(<[u8]>::first_chunk::<64>) {
        Some(block) => classes(block),
        None => classes(&padded(data.get(64 * k..).unwrap_or_default())),
    };
    let (mut prev, mut cur) = (spaces, classes_at(0));
    hand_on(data.len(), sink, |k| {
        let next = classes_at(k + 1);
        let (b, lead) = block(&prev, &cur, &next);
        let digits = cur.digit.count_ones() as u8;
        (prev, cur) = (cur, next);
        (b, lead, digits)
    })
}

/// Hands the blocks of `len` bytes of input on to `sink`, [`CHUNK`] at a time, as `make` makes
/// them (each in order: the block, its leads and how many digits it holds); returned: the
/// digits of each block, and where the leads are.
#[inline(always)]
fn hand_on(
    len: usize,
    sink: &mut dyn FnMut(usize, &[Block]),
    mut make: impl FnMut(usize) -> (Block, u64, u8),
) -> (Vec<u8>, Vec<usize>) {
    let (mut digits, mut leads) = (vec![0; len.div_ceil(64)], Vec::new());
    let mut made = [Block::default(); CHUNK];
    for (c, digits) in digits.chunks_mut(CHUNK).enumerate() {
        let m = digits.len();
        for (i, (b, digits)) in made.iter_mut().zip(digits).enumerate() {
            let k = CHUNK * c + i;
            let mut lead;
            (*b, lead, *digits) = make(k);
            while lead != 0 && 64 * k + (lead.trailing_zeros() as usize) < len {
                leads.push(64 * k + lead.trailing_zeros() as usize);
                lead &= lead - 1;
            }
        }
        sink(CHUNK * c, &made[..m]);
    }
    (digits, leads)
}

/// [`blocks`] in AVX2 instructions (each a safe call in a function compiled for them).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_alignr_epi8, _mm256_and_si256, _mm256_andnot_si256, _mm256_cmpeq_epi8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_permute2x128_si256, _mm256_set1_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_srli_epi16,
    };

    use super::{BREAKS, Block, ByteSet, Leads, hand_on, padded};

    // The classes a byte's neighbours are read for, a bit each, as pairs of nibble tables give
    // them: a byte is in a class when the class's bit is set both in the low table of [`FLAGS`]
    // at its low nibble and in the high table at its high nibble. Each class is one such
    // rectangle (a set of high nibbles by a set of low ones), so each is held exactly.
    const DIGIT: u8 = 1; // 0x30..=0x39
    const UPPER_A: u8 = 2; // 0x41..=0x4f
    const UPPER_B: u8 = 4; // 0x50..=0x5a
    const LOWER_A: u8 = 8; // 0x61..=0x6f
    const LOWER_B: u8 = 16; // 0x70..=0x7a
    const BACKSLASH: u8 = 32; // 0x5c
    const CONTROL: u8 = 64; // 0x00..=0x1f
    const PUNCT: u8 = 128; // space, `"`, `,`, `.`
    const UPPER: u8 = UPPER_A | UPPER_B;
    const LOWER: u8 = LOWER_A | LOWER_B;
    const ALNUM: u8 = DIGIT | UPPER | LOWER;
    /// [`super::END`]: a space or below, `.`, `,`, `"` and `\`.
    const END: u8 = CONTROL | PUNCT | BACKSLASH;

    /// The rectangles: a class, its high nibbles, its low nibbles.
    const RECTANGLES: [(u8, &[u8], &[u8]); 8] = [
        (DIGIT, &[3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (UPPER_A, &[4], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        (UPPER_B, &[5], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (LOWER_A, &[6], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        (LOWER_B, &[7], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (BACKSLASH, &[5], &[12]),
        (CONTROL, &[0, 1], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        (PUNCT, &[2], &[0, 2, 12, 14]),
    ];

    /// The nibble tables of [`RECTANGLES`], the low nibble's first (each twice, for both
    /// 128-bit lanes of a vector lookup).
    const fn flag_tables() -> ([u8; 32], [u8; 32]) {
        let (mut low, mut high) = ([0; 32], [0; 32]);
        let mut r = 0;
        while r < RECTANGLES.len() {
            let (class, highs, lows) = RECTANGLES[r];
            let mut i = 0;
            while i < highs.len() {
                high[highs[i] as usize] |= class;
                i += 1;
            }
            let mut i = 0;
            while i < lows.len() {
                low[lows[i] as usize] |= class;
                i += 1;
            }
            r += 1;
        }
        let mut i = 0;
        while i < 16 {
            (low[16 + i], high[16 + i]) = (low[i], high[i]);
            i += 1;
        }
        (low, high)
    }
    const FLAGS: ([u8; 32], [u8; 32]) = flag_tables();

    #[target_feature(enable = "avx2")]
    fn splat(c: u8) -> __m256i {
        _mm256_set1_epi8(i8::from_ne_bytes([c]))
    }

    #[target_feature(enable = "avx2")]
    fn and(a: __m256i, b: __m256i) -> __m256i {
        _mm256_and_si256(a, b)
    }

    #[target_feature(enable = "avx2")]
    fn or(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }

    /// All ones where `v`'s byte is zero.
    #[target_feature(enable = "avx2")]
    fn zero(v: __m256i) -> __m256i {
        _mm256_cmpeq_epi8(v, _mm256_setzero_si256())
    }

    /// All ones where the byte's flags `f` have none of `class`.
    #[target_feature(enable = "avx2")]
    fn none(f: __m256i, class: u8) -> __m256i {
        zero(and(f, splat(class)))
    }

    /// A bit per byte, set where `v`'s byte is all ones.
    #[target_feature(enable = "avx2")]
    fn bits(v: __m256i) -> u32 {
        u32::from_ne_bytes(_mm256_movemask_epi8(v).to_ne_bytes())
    }

    /// A bit per byte, set where `v`'s byte is all zeros (most verdicts are worked out as their
    /// negation, which a comparison with zero gives).
    #[target_feature(enable = "avx2")]
    fn unset(v: __m256i) -> u32 {
        !bits(v)
    }

    /// Non-zero where the byte is in the set the nibble tables `(low, high)` hold, given the
    /// bytes' nibbles.
    #[target_feature(enable = "avx2")]
    fn lookup((low, high): (&[u8; 32], &[u8; 32]), (low_nibbles, high_nibbles): (__m256i, __m256i)) -> __m256i {
        and(
            _mm256_shuffle_epi8(bytemuck::cast(*low), low_nibbles),
            _mm256_shuffle_epi8(bytemuck::cast(*high), high_nibbles),
        )
    }

    fn set(s: &ByteSet) -> (&[u8; 32], &[u8; 32]) {
        (&s.low, &s.high)
    }

    /// 32 bytes: each byte's flags, for its neighbours to read, and what needs no neighbour to
    /// tell, a bit per byte.
    #[derive(Clone, Copy)]
    struct Half {
        flags: __m256i,
        brk: u32,
        percent: u32,
        digit: u32,
        /// In the leads' first set, and second (none without leads).
        first: u32,
        second: u32,
    }

    impl Half {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn of<const LEADS: bool>(bytes: &[u8; 32], leads: &Leads) -> Half {
            let bytes: __m256i = bytemuck::cast(*bytes);
            let nibbles = (and(bytes, splat(0x0f)), and(_mm256_srli_epi16::<4>(bytes), splat(0x0f)));
            let flags = lookup((&FLAGS.0, &FLAGS.1), nibbles);
            let (first, second) = match LEADS {
                true => {
                    (unset(zero(lookup(set(&leads.first), nibbles))), unset(zero(lookup(set(&leads.second), nibbles))))
                }
                false => (0, 0),
            };
            Half {
                flags,
                brk: unset(zero(lookup(set(&BREAKS), nibbles))),
                percent: bits(_mm256_cmpeq_epi8(bytes, splat(b'%'))),
                digit: unset(none(flags, DIGIT)),
                first,
                second,
            }
        }
    }

    /// The anchors among the 32 bytes whose flags are `cur`, given the flags of the 32 before
    /// and the 32 after: [`super::is_anchor`], a neighbour's flags being the flags shifted by a
    /// byte or two across the halves.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn anchors(prev: __m256i, cur: &Half, next: __m256i) -> u32 {
        let f = cur.flags;
        // Bytes 16..48 of prev then cur, and of cur then next.
        let (behind, beyond) = (_mm256_permute2x128_si256::<0x21>(prev, f), _mm256_permute2x128_si256::<0x21>(f, next));
        let (p2, p1) = (_mm256_alignr_epi8::<14>(f, behind), _mm256_alignr_epi8::<15>(f, behind));
        let (n1, n2) = (_mm256_alignr_epi8::<1>(beyond, f), _mm256_alignr_epi8::<2>(beyond, f));
        // Not after a word's start: after a letter or digit that does not end an escape.
        let not_after_start = _mm256_andnot_si256(none(p1, ALNUM), or(none(p1, LOWER), none(p2, BACKSLASH)));
        // Not before a word's end: neither an end nor a lower-case letter before an end or one.
        let not_before_end = and(none(n1, END), or(none(n1, LOWER), none(n2, LOWER | END)));
        let not_word_start = or(not_after_start, not_before_end);
        // A digit, `%`, or a capital not starting a word.
        unset(zero(and(f, or(splat(DIGIT), and(not_word_start, splat(UPPER)))))) | cur.percent
    }

    /// [`super::blocks`] in AVX2 instructions (and POPCNT, which every CPU with AVX2 has, to
    /// count digits).
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) fn blocks(
        data: &[u8],
        leads: Option<&Leads>,
        sink: &mut dyn FnMut(usize, &[Block]),
    ) -> (Vec<u8>, Vec<usize>) {
        match leads {
            Some(leads) => blocks_with::<true>(data, leads, sink),
            None => {
                const NONE: Leads = Leads { first: ByteSet::of(&[false; 256]), second: ByteSet::of(&[false; 256]) };
                blocks_with::<false>(data, &NONE, sink)
            }
        }
    }

    /// [`blocks`] with leads (`LEADS`, from `leads`) or without (no lead code at all).
    #[inline]
    #[target_feature(enable = "avx2,popcnt")]
    fn blocks_with<const LEADS: bool>(
        data: &[u8],
        leads: &Leads,
        sink: &mut dyn FnMut(usize, &[Block]),
    ) -> (Vec<u8>, Vec<usize>) {
        // The halves in order, then the last bytes padded with spaces, then spaces: what lies
        // beyond the input's ends.
        let spaces = Half::of::<LEADS>(&[b' '; 32], leads);
        let mut halves = data.chunks_exact(32);
        let mut last = (!halves.remainder().is_empty()).then(|| Half::of::<LEADS>(&padded(halves.remainder()), leads));
        let mut next_half = || match halves.next().and_then(|h| h.first_chunk::<32>()) {
            Some(bytes) => Half::of::<LEADS>(bytes, leads),
            None => last.take().unwrap_or(spaces),
        };
        let (mut prev, mut cur) = (spaces.flags, next_half());
        let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
        hand_on(data.len(), sink, |_| {
            let (next, after) = (next_half(), next_half());
            let (lo, hi) = (anchors(prev, &cur, next.flags), anchors(cur.flags, &next, after.flags));
            let b = Block { anchor: join(lo, hi), brk: join(cur.brk, next.brk) };
            let digits = (cur.digit.count_ones() + next.digit.count_ones()) as u8;
            let lead = match LEADS {
                true => {
                    join(cur.first, next.first) & (join(cur.second, next.second) >> 1 | u64::from(after.second) << 63)
                }
                false => 0,
            };
            (prev, cur) = (next.flags, after);
            (b, lead, digits)
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_flag_tables_hold_each_class_exactly() {
            for b in 0..=255u8 {
                let flags = FLAGS.0[usize::from(b & 15)] & FLAGS.1[usize::from(b >> 4)];
                let has = |class: u8| flags & class != 0;
                assert_eq!(has(DIGIT), b.is_ascii_digit(), "{b:#x}");
                assert_eq!(has(UPPER), b.is_ascii_uppercase(), "{b:#x}");
                assert_eq!(has(LOWER), b.is_ascii_lowercase(), "{b:#x}");
                assert_eq!(has(ALNUM), b.is_ascii_alphanumeric(), "{b:#x}");
                assert_eq!(has(BACKSLASH), b == b'\\', "{b:#x}");
                assert_eq!(has(END), super::super::END[usize::from(b)], "{b:#x}");
            }
        }
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
        prescan(text.as_bytes(), None).runs.iter().map(|&(s, e)| &text[s..e]).collect()
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

    /// What the vector pass finds: each block's anchors and breaks, how many digits each holds,
    /// and (with leads) where a byte of the first set is followed by one of the second.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Blocks {
        blocks: Vec<Block>,
        digits: Vec<u8>,
        leads: Vec<usize>,
    }

    /// What `make` hands its sink, collected.
    fn collect(make: impl FnOnce(&mut dyn FnMut(usize, &[Block])) -> (Vec<u8>, Vec<usize>)) -> Blocks {
        let mut blocks = Vec::new();
        let (digits, leads) = make(&mut |k, b| {
            assert_eq!(k, blocks.len());
            blocks.extend_from_slice(b);
        });
        Blocks { blocks, digits, leads }
    }

    /// The blocks by the code the CPU runs (AVX2 where it has it).
    fn blocks(data: &[u8], leads: Option<&Leads>) -> Blocks {
        collect(|sink| super::blocks(data, leads, sink))
    }

    /// The blocks by the code for CPUs without AVX2.
    fn plain_blocks(data: &[u8], leads: Option<&Leads>) -> Blocks {
        collect(|sink| blocks_by(data, |b| Classes::of(b, leads), sink))
    }

    /// The first byte at or after `from` whose bit `mask` sets.
    fn next_bit(blocks: &[Block], mask: impl Fn(&Block) -> u64, from: usize) -> Option<usize> {
        let (mut k, skip) = (from / 64, from % 64);
        let mut bits = mask(blocks.get(k)?) & (u64::MAX << skip);
        loop {
            if bits != 0 {
                return Some(64 * k + bits.trailing_zeros() as usize);
            }
            k += 1;
            bits = mask(blocks.get(k)?);
        }
    }

    /// The last byte before `before` whose bit `mask` sets.
    fn prev_bit(blocks: &[Block], mask: impl Fn(&Block) -> u64, before: usize) -> Option<usize> {
        let (mut k, keep) = (before / 64, before % 64);
        let mut bits = blocks.get(k).map_or(0, &mask) & !(u64::MAX << keep);
        loop {
            if bits != 0 {
                return Some(64 * k + 63 - bits.leading_zeros() as usize);
            }
            k = k.checked_sub(1)?;
            bits = mask(&blocks[k]);
        }
    }

    /// `(start, end)` of each of a kind of span.
    type Spans = Vec<(usize, usize)>;

    /// The runs and hex chains as the blocks' bit scans find them, anchor after anchor: the
    /// reference for the block-by-block [`Runs`].
    fn runs_by_bit_scans(data: &[u8]) -> (Spans, Spans) {
        let blocks = blocks(data, None).blocks;
        let (mut runs, mut chains, mut pos) = (Spans::new(), Spans::new(), 0);
        while let Some(at) = next_bit(&blocks, |b| b.anchor, pos) {
            let start = prev_bit(&blocks, |b| b.brk, at).map_or(0, |p| p + 1);
            let end = next_bit(&blocks, |b| b.brk, at).map_or(data.len(), |p| p.min(data.len()));
            pos = end.max(at + 1);
            if end - start >= MIN_RUN {
                runs.push((start, end));
            }
            if let Some(chain) = chain_from(data, start, end)
                && chains.last().is_none_or(|last| last.1 < chain.0)
            {
                pos = pos.max(chain.1);
                chains.push(chain);
            }
        }
        (runs, chains)
    }

    #[test]
    fn runs_found_block_by_block_are_those_the_bit_scans_find() {
        let mut r = crate::scan::corpus::FakeRng::new(11);
        // Pieces that make runs short and long (across blocks), breaks, words, and hex chains
        // that reach blocks ahead.
        let pieces = [" ", "\\n", "\"", "word ", "The ", "a1", "Zq9/+w_y", "x", "-", "41 ", "0x4b, ", "\\x41", ":"];
        for case in 0..3000 {
            // One in ten over several chunks of blocks.
            let len = if case % 10 == 0 { 4096 + r.below(9000) } else { r.below(400) };
            let mut text = String::new();
            while text.len() < len {
                match r.below(40) {
                    0 | 1 => text.push_str(&"k".repeat(r.below(150))),
                    2 | 3 => text.push_str(&"4f ".repeat(r.below(40))),
                    4 => text.push_str(&"kq".repeat(r.below(3000))),
                    _ => text.push_str(pieces[r.below(pieces.len())]),
                }
            }
            let data = text.as_bytes();
            let pre = prescan(data, None);
            assert_eq!((pre.runs, pre.hex_chains), runs_by_bit_scans(data), "case {case}: {text:?}");
        }
    }

    /// Over inputs of several chunks of blocks, of every length around a chunk's: the vector
    /// code, which works a chunk at a time, agrees with the plain code on every block.
    #[test]
    fn the_vector_code_agrees_with_the_plain_code_across_chunks() {
        let mut r = crate::scan::corpus::FakeRng::new(3);
        let leads = Leads { first: ByteSet::new(*b"cC- "), second: ByteSet::new(*b"uU- ") };
        let pieces = ["The ", "curl ", "\\n", "x9", "AB", "-", "\"", " ", "Zq9", "41 ", "%2F", "word"];
        for case in 0..300 {
            let len = match case % 3 {
                0 => 64 * CHUNK - 40 + r.below(80),
                1 => 2 * 64 * CHUNK - 40 + r.below(80),
                _ => r.below(4 * 64 * CHUNK),
            };
            let mut text = String::new();
            while text.len() < len {
                text.push_str(pieces[r.below(pieces.len())]);
            }
            let data = &text.as_bytes()[..len];
            assert_eq!(blocks(data, None), plain_blocks(data, None), "case {case}, {len} bytes");
            assert_eq!(blocks(data, Some(&leads)), plain_blocks(data, Some(&leads)), "case {case} with leads");
        }
    }

    /// The bytes from `from` on (of `len`) whose bit `mask` sets, by the blocks' bit scan.
    fn set_bits(blocks: &[Block], len: usize, mask: fn(&Block) -> u64, from: usize) -> Vec<usize> {
        std::iter::successors(next_bit(blocks, mask, from), |&p| next_bit(blocks, mask, p + 1))
            .filter(|&p| p < len)
            .collect()
    }

    #[test]
    fn the_block_search_finds_exactly_the_anchor_and_break_bytes() {
        // Byte by byte, bytes beyond the ends read as spaces.
        let anchors_of = |data: &[u8]| -> Vec<usize> {
            let at = |i: usize, d: isize| i.checked_add_signed(d).and_then(|i| data.get(i)).copied().unwrap_or(b' ');
            (0..data.len()).filter(|&i| is_anchor([-2, -1, 0, 1, 2].map(|d| at(i, d)))).collect()
        };
        let where_ = |data: &[u8], f: fn(u8) -> bool| (0..data.len()).filter(|&i| f(data[i])).collect::<Vec<_>>();
        // Every byte value at every place of two blocks and a tail, among bytes on either side
        // of each class's bounds, and capitals starting words and not.
        let near = *b"/:@[$&`{az\x7f\x80\xffaB0\\n.";
        for b in 0..=255u8 {
            for at in 0..150 {
                let mut data: Vec<u8> = (0..150).map(|i| near[i % near.len()]).collect();
                data[at] = b;
                for len in [150, at + 1, (at + 2).min(150), (at + 3).min(150)] {
                    let data = &data[..len];
                    let (anchors, breaks, found) = (anchors_of(data), where_(data, is_break), blocks(data, None));
                    let blocks = &found.blocks;
                    for from in [0, at.saturating_sub(3), at] {
                        let after = |v: &[usize]| v.iter().copied().filter(|&p| p >= from).collect::<Vec<_>>();
                        let what = format!("byte {b:#x} at {at} from {from}, {len} bytes");
                        assert_eq!(set_bits(blocks, len, |b| b.anchor, from), after(&anchors), "anchors: {what}");
                        assert_eq!(set_bits(blocks, len, |b| b.brk, from), after(&breaks), "breaks: {what}");
                    }
                    let digits: Vec<u8> =
                        data.chunks(64).map(|c| c.iter().filter(|b| b.is_ascii_digit()).count() as u8).collect();
                    assert_eq!(found.digits, digits, "digits: byte {b:#x} at {at}, {len} bytes");
                    for before in [at, at + 1, len] {
                        let want = breaks.iter().copied().rfind(|&p| p < before);
                        assert_eq!(
                            prev_bit(blocks, |b| b.brk, before),
                            want,
                            "last break before {before}: {b:#x} at {at}"
                        );
                    }
                    // The vector code and the plain code agree on every block, with leads too.
                    assert_eq!(found, plain_blocks(data, None), "byte {b:#x} at {at}, {len} bytes");
                    let leads = Leads { first: ByteSet::new(*b"aA\\\x80"), second: ByteSet::new(*b"zZ\x7f\x05") };
                    let with_leads = super::tests::blocks(data, Some(&leads));
                    assert_eq!(with_leads, plain_blocks(data, Some(&leads)), "{b:#x} at {at}");
                    let lead_at = |i: usize| {
                        leads.first.contains(data[i]) && leads.second.contains(data.get(i + 1).copied().unwrap_or(b' '))
                    };
                    let want: Vec<usize> = (0..len).filter(|&i| lead_at(i)).collect();
                    assert_eq!(with_leads.leads, want, "leads: byte {b:#x} at {at}, {len} bytes");
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
            assert_eq!(set_bits(&blocks(text.as_bytes(), None).blocks, text.len(), |b| b.anchor, 0), want, "{text}");
        }
    }

    #[test]
    fn a_byte_set_holds_its_printable_bytes_exactly() {
        let mut r = crate::scan::corpus::FakeRng::new(7);
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..r.below(12)).map(|_| 0x20 + r.below(0x60) as u8).collect();
            let set = ByteSet::new(bytes.iter().copied());
            for b in 0x20..0x80u8 {
                assert_eq!(set.contains(b), bytes.contains(&b), "{b:#x} in {bytes:?}");
            }
            assert!((0..0x20u8).chain(0x80..=0xff).all(|b| !set.contains(b)), "{bytes:?}");
        }
        // A control byte or one from 0x80 up stands for all of its kind (a superset).
        let set = ByteSet::new([0x05, 0xc3]);
        assert!((0..0x20u8).chain(0x80..=0xff).all(|b| set.contains(b)));
        assert!((0x20..0x80u8).all(|b| !set.contains(b)));
    }

    #[test]
    fn a_needle_is_always_anchored_only_when_no_neighbours_make_it_a_word() {
        for n in ["tok-live-1", "xsEcretvalue", "SECRETVALUE", "50%off", "AbCdefghij"] {
            assert!(always_anchored(n.as_bytes()), "{n}");
        }
        // After a space, a quote or a `\` (`\n`, `\s`), these read as ordinary words.
        for n in ["Secretpasswordvalue", "nSecretvalue", "sEcretvalue", "secretvalue", "A.bcdefgh"] {
            assert!(!always_anchored(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn hex_chains_need_eight_pairs_one_or_two_breaks_apart() {
        let find = |t: &str| {
            prescan(t.as_bytes(), None).hex_chains.iter().map(|&(s, e)| t[s..e].to_string()).collect::<Vec<_>>()
        };
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
    fn the_first_test_of_a_chain_passes_every_run_that_starts_one() {
        let mut r = crate::scan::corpus::FakeRng::new(5);
        let bytes = b"0x4aAfg9 ,:\\";
        for _ in 0..20_000 {
            let text: Vec<u8> =
                (0..r.below(12)).map(|_| bytes[r.below(bytes.len())]).chain(*b" 4b 4c 4d 4e 4f 50 51 52").collect();
            let end = r.below(text.len() + 1);
            let start = r.below(end + 1);
            assert_eq!(chain_from(&text, start, end), chain_from_pair(&text, start, end), "{:?}", &text[start..end]);
        }
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
