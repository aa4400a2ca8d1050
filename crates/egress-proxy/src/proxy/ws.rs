//! WebSocket relay after an allowed upgrade (the server → client half is a plain copy in
//! `proxy.rs`). Client → server frames are read whole (at most `max_frame` bytes), unmasked,
//! and every data payload (text, binary, continuation, in wire order) is fed to
//! one [`StreamScanner`](common::scan::StreamScanner) for the connection, so the payloads are
//! scanned as one stream: bounded memory, and a secret split across the fragments of a message
//! or across messages is seen whole. Control frames (ping, pong, close: at most 125 bytes) are
//! scanned each on its own and kept out of that stream, so one sent between two fragments
//! cannot split a secret in the stream's view. Frames are forwarded only after the scanner has looked at
//! them together with the 16 KiB before them (every whole frame buffered at that point, as one
//! batch, so a burst of small frames costs one look-back), so the frame that completes a secret
//! never leaves; a finding closes both sides (frames before it, which held only part of the
//! secret, may have gone out). Server → client is inbound and not scanned.
//!
//! Compression: the proxy removes `Sec-WebSocket-Extensions` from the upgrade request, so no
//! extension is negotiated; an upstream that answers with one anyway gets no WebSocket (the
//! client gets 502, in `proxy.rs`), and any frame with an RSV bit set is refused here (it cannot
//! be scanned decoded), closing both sides. Nothing compressed passes unscanned.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::dlp::Engine;
use common::formats::routes::DlpConfig;
use common::scan::Finding;

/// Why the client → server direction stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The client closed its side.
    Closed,
    /// DLP found something: the rule ids (no values).
    Finding(String),
    /// A frame the proxy will not forward.
    Refused(String),
}

/// Relays frames from `client` to `upstream` until the sender closes or a frame is refused.
/// With a DLP config, every payload is DLP-scanned as part of one stream before its frame goes
/// out. The same relay reads the other way (server → client, unmasked frames) for the held
/// secrets.
pub(crate) async fn relay<R, W>(
    mut client: R,
    mut upstream: W,
    engine: &Engine,
    dlp: Option<&DlpConfig>,
    max_frame: usize,
) -> std::io::Result<Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scanner = dlp.map(|d| engine.stream(d));
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut payload: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Read until at least one whole frame is buffered.
        while frame_size(&buf, max_frame)?.is_none_or(|n| buf.len() < n) {
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                // Everything fed was already seen by `recent`; the final windows rarely add
                // anything, but a finding is still worth an audit line.
                let left = scanner.map(|s| s.finish()).unwrap_or_default();
                return Ok(if left.is_empty() { Stop::Closed } else { Stop::Finding(rule_ids(left)) });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        // Every whole frame buffered is one batch: a burst of small frames costs one look-back
        // scan, and a finding anywhere in it holds the whole batch back.
        let since = scanner.as_ref().map_or(0, |s| s.total());
        let mut found = Vec::new();
        let mut end = 0;
        let mut refused = None;
        while let Some(n) = frame_size(&buf[end..], max_frame)?
            && buf.len() - end >= n
        {
            let frame = &buf[end..end + n];
            if frame[0] & 0x70 != 0 {
                refused = Some(Stop::Refused(
                    "websocket frame with RSV bits (a compression extension) cannot be scanned".into(),
                ));
                break;
            }
            if let (Some(scanner), Some(dlp)) = (scanner.as_mut(), dlp) {
                let (payload_at, mask) = payload_offset(frame);
                payload.clear();
                payload.extend_from_slice(&frame[payload_at..]);
                if let Some(m) = mask {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= m[i % 4];
                    }
                }
                if frame[0] & 0x08 != 0 {
                    // A control frame: scanned alone, not part of the data stream.
                    let mut alone = engine.stream(dlp);
                    found.extend(alone.feed(&payload));
                    found.extend(alone.finish());
                } else {
                    found.extend(scanner.feed(&payload));
                }
            }
            end += n;
        }
        if let Some(scanner) = scanner.as_ref() {
            found.extend(scanner.recent(since));
        }
        if !found.is_empty() {
            return Ok(Stop::Finding(rule_ids(found)));
        }
        if end > 0 {
            upstream.write_all(&buf[..end]).await?;
            upstream.flush().await?;
            buf.drain(..end);
        }
        if let Some(stop) = refused {
            return Ok(stop);
        }
    }
}

/// The distinct rule ids of `found`, for the audit line (never the values).
fn rule_ids(found: Vec<Finding>) -> String {
    let mut ids: Vec<String> = found.into_iter().map(|f| f.rule_id).collect();
    ids.sort();
    ids.dedup();
    ids.join(", ")
}

/// Total size of the frame at the start of `buf`, once its header is complete.
fn frame_size(buf: &[u8], max_frame: usize) -> std::io::Result<Option<usize>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, hdr) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (u64::from_be_bytes(buf[2..10].try_into().unwrap_or_default()), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > max_frame as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("websocket frame of {len} bytes is larger than {max_frame}"),
        ));
    }
    Ok(Some(hdr + if masked { 4 } else { 0 } + len as usize))
}

/// Where the payload starts, and the mask key if any (header must be complete).
fn payload_offset(buf: &[u8]) -> (usize, Option<[u8; 4]>) {
    let hdr = match buf[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    if buf[1] & 0x80 != 0 { (hdr + 4, Some([buf[hdr], buf[hdr + 1], buf[hdr + 2], buf[hdr + 3]])) } else { (hdr, None) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Secret;
    use common::formats::routes::DlpDetector;

    const T: &str = "ws-secret-0123456789abcdef";
    const BOTH: &[DlpDetector] = &[DlpDetector::KnownSecrets, DlpDetector::TokenPatterns];

    fn cfg(detectors: &[DlpDetector]) -> DlpConfig {
        DlpConfig { outbound: detectors.to_vec(), ..DlpConfig::default() }
    }

    /// A masked client frame with `opcode` (0 continuation, 1 text, 2 binary, 9 ping).
    fn frame_op(opcode: u8, payload: &[u8], mask: [u8; 4], fin: bool) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 | opcode } else { opcode }];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn frame(payload: &[u8], mask: [u8; 4], fin: bool) -> Vec<u8> {
        frame_op(1, payload, mask, fin)
    }

    /// Frames carrying `data` cut at `cuts`: one fragmented text message when `fragmented`,
    /// else one whole text message per piece.
    fn framed(data: &[u8], cuts: &[usize], fragmented: bool) -> Vec<Vec<u8>> {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < data.len()));
        bounds.push(data.len());
        bounds.dedup();
        let n = bounds.len() - 1;
        (0..n)
            .map(|i| {
                let piece = &data[bounds[i]..bounds[i + 1]];
                let mask = [i as u8, 0x5a, 0xa5, 0x0f ^ i as u8];
                if fragmented {
                    frame_op(if i == 0 { 1 } else { 0 }, piece, mask, i == n - 1)
                } else {
                    frame(piece, mask, true)
                }
            })
            .collect()
    }

    /// A client whose every `read` returns the next element (as a socket would return what
    /// arrived in one packet).
    struct Reads(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Reads {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(mut r) = self.0.pop_front() {
                let n = r.len().min(buf.remaining());
                buf.put_slice(&r[..n]);
                if n < r.len() {
                    self.0.push_front(r.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn relay_with(reads: Vec<Vec<u8>>, detectors: &[DlpDetector]) -> (Stop, Vec<u8>) {
        let engine = Engine::new(&[Secret::new(T)]);
        let mut out = Vec::new();
        let stop = super::relay(Reads(reads.into()), &mut out, &engine, Some(&cfg(detectors)), 1 << 16).await.unwrap();
        (stop, out)
    }

    /// Relays `reads` with the known-secrets detector.
    async fn relay_known(reads: Vec<Vec<u8>>) -> (Stop, Vec<u8>) {
        relay_with(reads, &[DlpDetector::KnownSecrets]).await
    }

    /// A fake PEM private key (built at run time, so the repository holds no key-shaped text).
    fn pem_key() -> String {
        let body: String = (0..1600u32).map(|i| char::from(b'A' + (i * 7 % 26) as u8)).collect();
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let kind = ["PRIVATE", "KEY"].join(" ");
        format!("-----BEGIN RSA {kind}-----\n{}\n-----END RSA {kind}-----\n", lines.join("\n"))
    }

    #[tokio::test]
    async fn clean_frames_pass_byte_for_byte() {
        let mut input = frame(b"hello", [1, 2, 3, 4], true);
        input.extend(frame(&vec![b'x'; 300], [9, 8, 7, 6], true));
        input.extend(frame_op(9, b"ping", [3, 3, 3, 3], true));
        // Whole, and dribbled in 3-byte reads that cut headers and payloads anywhere.
        for reads in [vec![input.clone()], input.chunks(3).map(<[u8]>::to_vec).collect()] {
            let (stop, out) = relay_with(reads, BOTH).await;
            assert_eq!(stop, Stop::Closed);
            assert_eq!(out, input);
        }
    }

    #[tokio::test]
    async fn masked_secret_is_found_and_not_forwarded() {
        let first = frame(b"first", [1, 2, 3, 4], true);
        let leak = frame(format!("leak {T}").as_bytes(), [0xaa, 0x55, 0x0f, 0xf0], true);
        let (stop, out) = relay_known(vec![first.clone(), leak]).await;
        assert_eq!(stop, Stop::Finding("known-secret".into()));
        assert_eq!(out, first, "only the clean frame went out");
    }

    #[tokio::test]
    async fn secret_split_across_fragments_or_messages_stops_the_frame_that_completes_it() {
        let (a, b) = T.split_at(10);
        for fragmented in [true, false] {
            let frames = framed(format!("say {a}{b} now").as_bytes(), &[4 + a.len()], fragmented);
            let (stop, out) = relay_known(frames.clone()).await;
            assert_eq!(stop, Stop::Finding("known-secret".into()), "fragmented {fragmented}");
            assert_eq!(out, frames[0], "fragmented {fragmented}: only the first part went out");
        }
    }

    #[tokio::test]
    async fn a_control_frame_between_fragments_does_not_hide_a_split_secret() {
        let (a, b) = T.split_at(10);
        let first = frame_op(1, format!("say {a}").as_bytes(), [1, 2, 3, 4], false);
        let ping = frame_op(9, b"keepalive", [5, 6, 7, 8], true);
        let last = frame_op(0, format!("{b} now").as_bytes(), [9, 9, 9, 9], true);
        let (stop, out) = relay_known(vec![first.clone(), ping.clone(), last]).await;
        assert_eq!(stop, Stop::Finding("known-secret".into()));
        assert_eq!(out, [first, ping].concat(), "the fragment completing the secret never leaves");
        // A secret in a control frame's own payload is found too.
        let pong = frame_op(10, format!("pong {T}").as_bytes(), [1, 1, 1, 1], true);
        let (stop, out) = relay_known(vec![pong]).await;
        assert_eq!(stop, Stop::Finding("known-secret".into()));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_pem_key_split_across_frames_is_found() {
        // Far longer than the 512 bytes the relay used to carry from one frame to the next.
        let key = pem_key();
        let data = format!("config follows\n{key}done");
        // The END line is split between the last two frames.
        let frames = framed(data.as_bytes(), &[100, 1200, data.len() - 20], false);
        let (stop, out) = relay_with(frames.clone(), BOTH).await;
        assert_eq!(stop, Stop::Finding("private-key".into()));
        assert!(out == frames[..3].concat(), "the frame completing the END line must not go out");
    }

    #[tokio::test]
    async fn same_verdict_and_cut_whatever_the_framing() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("xy{T}z"));
        for (i, secret) in [T.to_string(), hex::encode(T), b64].into_iter().enumerate() {
            let data = format!("{}{secret}{}", "lorem ipsum ".repeat(40 * i + 3), " dolor".repeat(20));
            // Where the first finding ends (for base64, the characters the token alone determines;
            // the decoded run is also reported, ending later).
            let secret_end = Engine::new(&[Secret::new(T)])
                .scan(&cfg(&[DlpDetector::KnownSecrets]), data.as_bytes())
                .iter()
                .map(|h| h.end)
                .min()
                .unwrap();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ i as u64;
            for round in 0..40 {
                let mut cuts = Vec::new();
                let mut at = 0;
                while at < data.len() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    at += 1 + (x % if round % 2 == 0 { 7 } else { 90 }) as usize;
                    cuts.push(at);
                }
                let fragmented = round % 3 != 0;
                let frames = framed(data.as_bytes(), &cuts, fragmented);
                let (stop, out) = relay_known(frames.clone()).await;
                assert_eq!(stop, Stop::Finding("known-secret".into()), "secret {i} round {round}");
                // Frames up to (not including) the one holding the secret's last byte went out.
                let mut bounds = vec![0];
                bounds.extend(cuts.iter().copied().filter(|&c| c < data.len()));
                let holding = bounds.iter().filter(|&&b| b < secret_end).count() - 1;
                assert!(
                    out == frames[..holding].concat(),
                    "secret {i} round {round}: {} bytes out; want the {holding} frames before the one completing it",
                    out.len()
                );
            }
        }
    }

    #[tokio::test]
    async fn frames_that_arrive_together_are_one_batch() {
        let (a, b) = T.split_at(10);
        let hello = frame(b"hello", [1, 2, 3, 4], true);
        let clean = frame(b"clean one", [5; 4], true);
        let part = frame(format!("x {a}").as_bytes(), [6; 4], true);
        let completes = frame(format!("{b} y").as_bytes(), [7; 4], true);
        // A clean burst goes out whole.
        let (stop, out) = relay_known(vec![hello.clone(), [clean.clone(), part.clone()].concat()]).await;
        assert_eq!((stop, out), (Stop::Closed, [hello.clone(), clean.clone(), part.clone()].concat()));
        // A burst holding the frame that completes a secret is held back whole, with the clean
        // frame that came in with it.
        let first = [hello.clone(), part.clone()].concat();
        let (stop, out) = relay_known(vec![first.clone(), [completes.clone(), clean.clone()].concat()]).await;
        assert_eq!(stop, Stop::Finding("known-secret".into()));
        assert!(out == first, "{} bytes out", out.len());
        // Read by read, the clean frame ahead of the completing one goes out.
        let (stop, out) = relay_known(vec![hello.clone(), part.clone(), completes, clean]).await;
        assert_eq!(stop, Stop::Finding("known-secret".into()));
        assert!(out == [hello, part].concat(), "{} bytes out", out.len());
    }

    #[tokio::test]
    async fn compressed_and_oversized_frames_are_refused() {
        let mut f = frame(b"x", [0; 4], true);
        f[0] |= 0x40;
        let (stop, out) = relay_known(vec![f.clone()]).await;
        assert!(matches!(stop, Stop::Refused(ref why) if why.contains("RSV")), "{stop:?}");
        assert!(out.is_empty());
        // Clean frames ahead of it in the same read go out; the compressed one never does.
        let clean = frame(b"clean", [4; 4], true);
        let (stop, out) = relay_known(vec![[clean.clone(), f.clone(), clean.clone()].concat()]).await;
        assert!(matches!(stop, Stop::Refused(_)), "{stop:?}");
        assert_eq!(out, clean);
        // Also when DLP is off for the route: a compressed frame is never relayed.
        let mut f = frame(b"x", [0; 4], true);
        f[0] |= 0x40;
        let mut out = Vec::new();
        let r = super::relay(&f[..], &mut out, &Engine::new(&[]), None, 1000).await.unwrap();
        assert!(matches!(r, Stop::Refused(_)));
        assert!(out.is_empty());
        let engine = Engine::new(&[]);
        let big = frame(&vec![0u8; 2000], [0; 4], true);
        let r = super::relay(&big[..], Vec::new(), &engine, None, 1000).await;
        assert!(r.is_err());
    }
}
