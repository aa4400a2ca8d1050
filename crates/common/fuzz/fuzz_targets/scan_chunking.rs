//! Fuzz the secret-scanning engine: arbitrary bytes cut into arbitrary chunks must never panic
//! and must give the same findings as the same bytes in one piece (and as a one-shot scan when
//! the input fits in one window).
//!
//! Input layout: byte 0 picks the window geometry, the next 16 bytes are chunk lengths
//! (cycled), the rest is the data. Run: `cargo +nightly fuzz run scan_chunking` in this dir.
#![no_main]

use common::Secret;
use common::scan::{KnownSecrets, Rules, StreamScanner, scan_all};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KNOWN: LazyLock<KnownSecrets> =
    LazyLock::new(|| KnownSecrets::new([Secret::new(["fuzz", "-known-", "value-", "7Qx"].concat())]));

fuzz_target!(|input: &[u8]| {
    if input.len() < 17 {
        return;
    }
    let geometry = [(64, 16), (256, 64), (1024, 300), (4096, 1024)][usize::from(input[0] % 4)];
    let cuts: Vec<usize> = input[1..17].iter().map(|&b| usize::from(b) + 1).collect();
    let data = &input[17..];
    let rules = Rules::builtin();

    let whole = {
        let mut s = StreamScanner::with_window(Some(rules), Some(&KNOWN), geometry.0, geometry.1);
        let mut f = s.feed(data);
        f.extend(s.finish());
        f
    };
    let chunked = {
        let mut s = StreamScanner::with_window(Some(rules), Some(&KNOWN), geometry.0, geometry.1);
        let mut f = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            f.extend(s.feed(&rest[..n]));
            rest = &rest[n..];
            i += 1;
        }
        f.extend(s.finish());
        f
    };
    assert_eq!(whole, chunked);
    let step = geometry.0.max(geometry.1).max(KNOWN.longest() + 1);
    if data.len() <= step {
        assert_eq!(whole, scan_all(Some(rules), Some(&KNOWN), data));
    }
    for f in &whole {
        assert!(f.start <= f.end && f.end <= data.len());
    }
});
