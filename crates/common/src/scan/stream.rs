//! Scanning input that arrives in chunks (an HTTP body), with bounded memory.
//!
//! The stream is cut into windows at fixed absolute offsets: window `k` owns the findings that
//! start in `[k·step, (k+1)·step)` and is scanned over `[k·step − overlap, (k+1)·step + overlap)`,
//! so a secret that crosses a window edge is seen whole (if it is shorter than `overlap`) and
//! exactly once. Because windows depend only on offsets, the findings are the same however
//! the input is chunked, and the buffer never exceeds `step + 2·overlap` bytes. For a stream
//! no longer than `step` the findings equal a scan of the whole input.

use super::rules::Context;
use super::{Finding, KnownSecrets, Mode, Rules, assign_lines};

/// Default window step.
pub const DEFAULT_STEP: usize = 256 * 1024;
/// Default overlap: the longest secret a window edge can split and still be found (PEM keys).
pub const DEFAULT_OVERLAP: usize = 16 * 1024;

/// Chunked scanning with [`Rules`] and/or [`KnownSecrets`].
pub struct StreamScanner<'a> {
    rules: Option<&'a Rules>,
    known: Option<&'a KnownSecrets>,
    step: usize,
    overlap: usize,
    /// Bytes from absolute offset `base` to `total`.
    buf: Vec<u8>,
    base: usize,
    /// Newlines before `base`.
    lines_before: usize,
    total: usize,
    /// Next window to scan.
    window: usize,
    /// Strict mode (egress routes that should carry no credential at all).
    strict: bool,
}

impl<'a> StreamScanner<'a> {
    pub fn new(rules: Option<&'a Rules>, known: Option<&'a KnownSecrets>) -> Self {
        Self::with_window(rules, known, DEFAULT_STEP, DEFAULT_OVERLAP)
    }

    /// Custom window geometry (tests and fuzzing use small windows to exercise the edges).
    /// The overlap is raised to cover the longest known-secret encoding, and the step to at
    /// least the overlap.
    pub fn with_window(rules: Option<&'a Rules>, known: Option<&'a KnownSecrets>, step: usize, overlap: usize) -> Self {
        let overlap = overlap.max(known.map_or(0, |k| k.longest() + 1)).max(1);
        let step = step.max(overlap);
        StreamScanner {
            rules,
            known,
            step,
            overlap,
            buf: Vec::new(),
            base: 0,
            lines_before: 0,
            total: 0,
            window: 0,
            strict: false,
        }
    }

    /// Reads in `mode` (standard unless set; see [`super::scan_outbound`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.strict = mode == Mode::Strict;
        self
    }

    fn window_end(&self) -> usize {
        (self.window + 1) * self.step + self.overlap
    }

    /// Feed the next chunk; returns findings that are now final (absolute stream offsets).
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let take = (self.window_end() - self.total).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..take]);
            self.total += take;
            chunk = &chunk[take..];
            if self.total == self.window_end() {
                self.scan_window(&mut out);
            }
        }
        out
    }

    /// End of stream: the remaining findings.
    pub fn finish(mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        while self.window * self.step < self.total {
            self.scan_window(&mut out);
        }
        out
    }

    /// Bytes fed so far (the absolute offset the next chunk starts at).
    pub fn total(&self) -> usize {
        self.total
    }

    /// Early findings, for a caller that must decide before it passes on what it just fed (a
    /// WebSocket relay holds each frame until this says it is clean): every match in the
    /// buffered bytes from `overlap` bytes before absolute offset `since` (the [`total`] before
    /// the newest chunks were fed) to the end. So a call costs the overlap plus the new bytes,
    /// not the window, and a secret no longer than the overlap is reported by the call made
    /// after the chunk that holds its last byte (or the byte its rule needs after it). Findings
    /// are in absolute offsets; they are provisional (a rule anchored on the end of its input may
    /// match here and not once more input follows) and may repeat earlier ones, including ones
    /// [`feed`](Self::feed) returned.
    ///
    /// [`total`]: Self::total
    pub fn recent(&self, since: usize) -> Vec<Finding> {
        let from = since.min(self.total).saturating_sub(self.overlap).max(self.base);
        let (before, data) = self.buf.split_at(from - self.base);
        let mut found = self.scan_slice(data, from);
        found.sort_by(|a, b| (a.start, a.end, &a.rule_id).cmp(&(b.start, b.end, &b.rule_id)));
        let lines = self.lines_before + before.iter().filter(|&&b| b == b'\n').count();
        assign_lines(data, &mut found, from, lines);
        found
    }

    /// Rules and known secrets over `data` and its encoded layers; `data` starts at stream
    /// offset `offset`.
    fn scan_slice(&self, data: &[u8], offset: usize) -> Vec<Finding> {
        let mut found = Vec::new();
        super::layered::scan_into(self.rules, self.known, Context::default(), self.strict, true, data, &mut found);
        for f in &mut found {
            f.start += offset;
            f.end += offset;
        }
        found
    }

    /// Scan the current window over what is buffered, keep the findings it owns, advance.
    fn scan_window(&mut self, out: &mut Vec<Finding>) {
        let owned_start = self.window * self.step;
        let owned_end = owned_start + self.step;
        let start = owned_start.saturating_sub(self.overlap);
        debug_assert_eq!(start, self.base);
        let end = self.total.min(self.window_end());
        let data = &self.buf[..end - self.base];
        let mut found = self.scan_slice(data, self.base);
        found.retain(|f| f.start >= owned_start && f.start < owned_end);
        found.sort_by(|a, b| (a.start, a.end, &a.rule_id).cmp(&(b.start, b.end, &b.rule_id)));
        assign_lines(data, &mut found, self.base, self.lines_before);
        out.extend(found);

        self.window += 1;
        let next_start = (self.window * self.step).saturating_sub(self.overlap);
        let drop = next_start.saturating_sub(self.base).min(self.buf.len());
        self.lines_before += self.buf[..drop].iter().filter(|&&b| b == b'\n').count();
        self.buf.drain(..drop);
        self.base += drop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use crate::scan::scan_all;

    /// Deterministic xorshift so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn token(&mut self, prefix: &str, n: usize) -> String {
            let a = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let body: String = (0..n).map(|_| a[self.below(a.len())] as char).collect();
            format!("{prefix}{body}")
        }
    }

    /// Random text with planted secrets; returns it and the number of planted GitHub tokens.
    fn corpus(rng: &mut Rng, known: &str, len: usize) -> (Vec<u8>, usize) {
        let words = ["fn main() {", "let x = 1;", "\n", " ", "config:", "token", "key=", "ghp", "\r\n", "// note"];
        let mut out = Vec::new();
        let mut planted = 0;
        while out.len() < len {
            match rng.below(12) {
                0 => {
                    planted += 1;
                    out.extend(format!(" {} ", rng.token(&["gh", "p_"].concat(), 36)).bytes());
                }
                1 => out.extend(known.bytes()),
                2 => out.extend(format!("api_secret = \"{}\"\n", rng.token("", 20)).bytes()),
                3 => out.push(rng.next() as u8),
                _ => out.extend(words[rng.below(words.len())].bytes()),
            }
        }
        (out, planted)
    }

    fn stream(
        rules: &Rules,
        known: &KnownSecrets,
        data: &[u8],
        cuts: &mut Rng,
        step: usize,
        overlap: usize,
    ) -> Vec<Finding> {
        let mut s = StreamScanner::with_window(Some(rules), Some(known), step, overlap);
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = (cuts.below(64) + 1).min(rest.len());
            let n = if cuts.below(8) == 0 { rest.len().min(n * 97) } else { n };
            out.extend(s.feed(&rest[..n]));
            rest = &rest[n..];
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn same_findings_whatever_the_chunking() {
        let known_value = ["kn", "own-", "Vx81qZ"].concat();
        let known = KnownSecrets::new([Secret::new(known_value.clone())]);
        let rules = Rules::builtin();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..24 {
            let len = 200 + rng.below(6000);
            let (data, planted) = corpus(&mut rng, &known_value, len);
            let (step, overlap) = [(512, 128), (1024, 256), (DEFAULT_STEP, DEFAULT_OVERLAP)][round % 3];
            let reference = stream(rules, &known, &data, &mut Rng(1 + round as u64), step, overlap);
            for seed in 0..4 {
                let other = stream(rules, &known, &data, &mut Rng(100 + seed), step, overlap);
                assert_eq!(reference, other, "round {round} seed {seed}");
            }
            if data.len() <= step {
                assert_eq!(reference, scan_all(Some(rules), Some(&known), &data), "round {round}");
            }
            // Every planted token is found, also across window edges.
            let found = reference.iter().filter(|f| f.rule_id == "github-pat").count();
            assert_eq!(found, planted, "round {round}");
        }
    }

    #[test]
    fn boundary_crossing_secret_found_once_with_absolute_offset_and_line() {
        let token = Rng(7).token(&["gh", "p_"].concat(), 36);
        let mut data = vec![b'\n'; 1000];
        data.extend(b" ");
        data.extend(token.as_bytes());
        data.extend(b" \n");
        let rules = Rules::builtin();
        for split in [990, 1001, 1010, 1030, 1040] {
            let mut s = StreamScanner::with_window(Some(rules), None, 1020, 64);
            let mut f = s.feed(&data[..split]);
            f.extend(s.feed(&data[split..]));
            f.extend(s.finish());
            assert_eq!(f.len(), 1, "split {split}: {f:?}");
            assert_eq!((f[0].start, f[0].end, f[0].line), (1001, 1001 + token.len(), 1001));
        }
    }

    #[test]
    fn recent_reports_a_secret_with_the_chunk_that_completes_it() {
        let known_value = ["kn", "own-", "Vx81qZ"].concat();
        let known = KnownSecrets::new([Secret::new(known_value.clone())]);
        let token = Rng(11).token(&["gh", "p_"].concat(), 36);
        let rules = Rules::builtin();
        // Long clean runs between the secrets make windows close (and drain) in between.
        let mut data = vec![b'.'; 3000];
        let known_at = data.len();
        data.extend(known_value.as_bytes());
        data.extend(vec![b' '; 2500]);
        let token_at = data.len();
        data.extend(token.as_bytes());
        data.extend(b" and some more text\n");
        let whole = scan_all(Some(rules), Some(&known), &data);
        assert_eq!(whole.len(), 2, "{whole:?}");
        for seed in 0..16 {
            let mut cuts = Rng(0x9e37_79b9 + seed);
            let mut s = StreamScanner::with_window(Some(rules), Some(&known), 1024, 128);
            let mut seen: Vec<Finding> = Vec::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = (cuts.below(200) + 1).min(rest.len());
                let since = s.total();
                seen.extend(s.feed(&rest[..n]));
                let early = s.recent(since);
                for f in &whole {
                    let completed = f.end <= s.total() && f.end > since;
                    if completed {
                        assert!(early.contains(f), "seed {seed}: {f:?} not reported early: {early:?}");
                    }
                }
                for f in &early {
                    assert!(f.end <= s.total(), "seed {seed}: {f:?} reported before its bytes");
                }
                seen.extend(early);
                rest = &rest[n..];
            }
            assert!(seen.iter().any(|f| f.start == known_at && f.rule_id == "known-secret"), "seed {seed}");
            assert!(seen.iter().any(|f| f.start == token_at && f.rule_id == "github-pat"), "seed {seed}");
        }
    }

    #[test]
    fn recent_costs_the_overlap_not_the_window() {
        let rules = Rules::builtin();
        let token = Rng(5).token(&["gh", "p_"].concat(), 36);
        let mut s = StreamScanner::with_window(Some(rules), None, 4096, 256);
        s.feed(format!("{token} ").as_bytes());
        s.feed(&[b'a'; 1000]);
        let since = s.total();
        s.feed(b"fresh");
        assert!(s.recent(since).is_empty(), "the token is more than the overlap before the fresh bytes");
        assert_eq!(s.recent(0).len(), 1, "still buffered, so a wider look finds it");
    }

    #[test]
    fn recent_reports_a_long_match_with_the_chunk_that_completes_it() {
        // A PEM block fed in small chunks is reported with the chunk that completes its END
        // line, never earlier: the look-back reaches its BEGIN line, ~2 KiB and many calls back.
        let kind = ["PRIVATE", "KEY"].join(" ");
        let body: Vec<String> =
            (0..30u8).map(|i| std::iter::repeat_n(char::from(b'A' + i % 26), 64).collect()).collect();
        let pem = format!("-----BEGIN {kind}-----\n{}\n-----END {kind}-----\n", body.join("\n"));
        let mut data = b"x".repeat(5000);
        data.extend(pem.as_bytes());
        data.extend(b"y".repeat(3000));
        let end = 5000 + pem.len() - 1;
        let rules = Rules::builtin();
        for chunk in [1, 7, 64, 1000] {
            let mut s = StreamScanner::with_window(Some(rules), None, 4096, 4096);
            let mut first = None;
            for c in data.chunks(chunk) {
                let since = s.total();
                s.feed(c);
                if first.is_none() && s.recent(since).iter().any(|f| f.rule_id == "private-key") {
                    first = Some(s.total());
                }
            }
            let first = first.unwrap_or_else(|| panic!("chunk {chunk}: the key was never reported"));
            assert!(first >= end && first < end + chunk, "chunk {chunk}: reported at {first}, key ends at {end}");
        }
    }

    #[test]
    fn buffer_stays_bounded() {
        let rules = Rules::builtin();
        let mut s = StreamScanner::with_window(Some(rules), None, 4096, 512);
        let chunk = vec![b'a'; 100_000];
        for _ in 0..20 {
            s.feed(&chunk);
            assert!(s.buf.len() <= 4096 + 2 * 512);
        }
        assert!(s.finish().is_empty());
    }
}
