//! The text inside a binary blob, as `strings` finds it: runs of printable ASCII (tab, CR and
//! LF included, so a text region keeps its lines) of at least [`MIN_RUN`] bytes, and runs of
//! printable characters in UTF-16 (little- and big-endian), so a credential in a binary file,
//! behind a NUL byte or in a UTF-16 text file reaches the engine like any text.
//!
//! Hand-written rather than taken from a crate: it is one linear pass over the bytes, and the
//! crates that extract strings come with object-file parsers this needs none of.

/// Shortest run kept (`strings`' default).
pub(crate) const MIN_RUN: usize = 4;

/// A blob is binary when it holds a NUL byte anywhere (git looks at the first 8,000 bytes
/// only; a NUL further on must not hide what follows it from the scan either).
pub(crate) fn is_binary(data: &[u8]) -> bool {
    memchr::memchr(0, data).is_some()
}

fn printable(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r')
}

/// The printable runs of a blob as text, one run after another (each ends in `\n`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Runs {
    pub text: Vec<u8>,
    /// For each line of `text`, the 1-based line of the blob it comes from (LF bytes before it
    /// in the blob, plus one).
    pub lines: Vec<u32>,
}

/// Extracts the printable runs of `data` in the order they occur.
pub(crate) fn runs(data: &[u8]) -> Runs {
    // (start offset in `data`, the run's characters)
    let mut found: Vec<(usize, Vec<u8>)> = Vec::new();
    // 8-bit runs.
    let mut i = 0;
    while i < data.len() {
        if !printable(data[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < data.len() && printable(data[i]) {
            i += 1;
        }
        if i - start >= MIN_RUN {
            found.push((start, data[start..i].to_vec()));
        }
    }
    // UTF-16 runs: a printable character beside a zero byte, little-endian (`c 0`) or
    // big-endian (`0 c`), taken greedily from left to right so one text yields one run.
    let mut i = 0;
    while i + 1 < data.len() {
        let le = |k: usize| k + 1 < data.len() && printable(data[k]) && data[k + 1] == 0;
        let be = |k: usize| k + 1 < data.len() && data[k] == 0 && printable(data[k + 1]);
        let (is_char, pick): (&dyn Fn(usize) -> bool, usize) = if le(i) {
            (&le, 0)
        } else if be(i) {
            (&be, 1)
        } else {
            i += 1;
            continue;
        };
        let start = i;
        let mut chars = Vec::new();
        while is_char(i) {
            chars.push(data[i + pick]);
            i += 2;
        }
        if chars.len() >= MIN_RUN {
            found.push((start, chars));
        } else {
            i = start + 1;
        }
    }
    found.sort_by_key(|(start, _)| *start);

    let mut out = Runs::default();
    let (mut pos, mut line) = (0usize, 1u32);
    for (start, chars) in found {
        if start > pos {
            line += memchr::memchr_iter(b'\n', &data[pos..start]).count() as u32;
            pos = start;
        }
        for (k, piece) in chars.split_inclusive(|&b| b == b'\n').enumerate() {
            out.text.extend_from_slice(piece);
            out.lines.push(line + k as u32);
        }
        if !chars.ends_with(b"\n") {
            out.text.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(data: &[u8]) -> String {
        String::from_utf8(runs(data).text).unwrap()
    }

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn utf16be(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    #[test]
    fn binary_means_a_nul_anywhere() {
        assert!(!is_binary(b"plain text\n"));
        assert!(is_binary(b"\0x"));
        let mut late = vec![b'a'; 20_000];
        late.push(0);
        assert!(is_binary(&late), "a NUL after git's 8,000-byte window counts too");
    }

    #[test]
    fn ascii_runs_keep_their_lines() {
        let data = b"\x00\x01abc\x02key = value\nsecond line\n\x00\xffxyz!\x00";
        assert_eq!(text(data), "key = value\nsecond line\nxyz!\n", "short runs dropped, text regions whole");
        let r = runs(b"\0\0line one\nline two\n\0\0\nmore text\0");
        assert_eq!(String::from_utf8(r.text.clone()).unwrap(), "line one\nline two\n\nmore text\n");
        assert_eq!(r.lines, vec![1, 2, 3, 4], "{r:?}");
    }

    #[test]
    fn utf16_text_in_either_byte_order() {
        let mut data = vec![0xff, 0xfe];
        data.extend(utf16le("token = abcdef\r\n"));
        assert_eq!(text(&data), "token = abcdef\r\n");
        let mut data = vec![0xfe, 0xff];
        data.extend(utf16be("password: hunter2"));
        assert_eq!(text(&data), "password: hunter2\n");
        // Odd alignment, between binary noise.
        let mut data = vec![0x01, 0x02, 0x03];
        data.extend(utf16le("odd start"));
        data.extend([0x05, 0x06]);
        assert_eq!(text(&data), "odd start\n");
        assert_eq!(text(&utf16le("ab")), "", "too short");
    }

    #[test]
    fn runs_come_in_file_order_with_their_line() {
        let mut data = b"first run\n\0".to_vec();
        data.extend(utf16le("wide run"));
        data.extend(b"\0\nthird run\0");
        let r = runs(&data);
        // The LF before the wide text pairs with a zero byte too, so the wide run starts with it.
        assert_eq!(String::from_utf8(r.text).unwrap(), "first run\n\nwide run\n\nthird run\n");
        assert_eq!(r.lines, vec![1, 1, 2, 2, 3]);
    }
}
