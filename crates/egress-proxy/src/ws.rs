//! WebSocket relay after an allowed upgrade. Server → client bytes are copied as they are;
//! client → server frames are parsed, unmasked and DLP-scanned one whole frame at a time (with
//! the tail of the previous frames, so a secret split across frames is still seen) before the
//! frame is forwarded. A finding, an oversized frame or a frame with RSV bits (compression
//! cannot be scanned; the proxy strips `Sec-WebSocket-Extensions` so none is negotiated) closes
//! both sides. Limitation: when a secret is split across frames, the frames before the one that
//! completes it have already gone out.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::dlp::Engine;
use common::formats::routes::DlpDetector;

/// Bytes of earlier payloads kept to catch secrets split across frames.
const CARRY: usize = 512;

/// Why the client → server direction stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The client closed its side.
    Closed,
    /// DLP found something: the rule ids (no values).
    Finding(String),
    /// A frame the proxy will not forward.
    Refused(String),
}

/// Relays client frames to `upstream` until the client closes or a frame is refused.
pub async fn client_to_upstream<R, W>(
    mut client: R,
    mut upstream: W,
    engine: &Engine,
    detectors: Option<&[DlpDetector]>,
    max_frame: usize,
) -> std::io::Result<Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut carry: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Parse one frame header, reading more as needed.
        let frame_len = loop {
            if let Some(n) = frame_size(&buf, max_frame)?
                && buf.len() >= n
            {
                break n;
            }
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Stop::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if buf[0] & 0x70 != 0 {
            return Ok(Stop::Refused("websocket frame with RSV bits (an extension) cannot be scanned".into()));
        }
        if let Some(detectors) = detectors {
            let (payload_at, mask) = payload_offset(&buf);
            let mut scan = carry.clone();
            let start = scan.len();
            scan.extend_from_slice(&buf[payload_at..frame_len]);
            if let Some(m) = mask {
                for (i, b) in scan[start..].iter_mut().enumerate() {
                    *b ^= m[i % 4];
                }
            }
            let hits = engine.scan(detectors, &scan);
            if !hits.is_empty() {
                let mut ids: Vec<String> = hits.into_iter().map(|h| h.rule_id).collect();
                ids.dedup();
                return Ok(Stop::Finding(ids.join(", ")));
            }
            let keep = scan.len().min(CARRY);
            carry = scan[scan.len() - keep..].to_vec();
        }
        upstream.write_all(&buf[..frame_len]).await?;
        upstream.flush().await?;
        buf.drain(..frame_len);
    }
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

    const T: &str = "ws-secret-0123456789abcdef";

    fn frame(payload: &[u8], mask: [u8; 4], fin: bool) -> Vec<u8> {
        let mut f = vec![if fin { 0x81 } else { 0x01 }];
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

    async fn relay(input: Vec<u8>) -> (Stop, Vec<u8>) {
        let engine = Engine::new(&[Secret::new(T)]);
        let mut out = Vec::new();
        let stop = client_to_upstream(&input[..], &mut out, &engine, Some(&[DlpDetector::KnownSecrets]), 1 << 16)
            .await
            .unwrap();
        (stop, out)
    }

    #[tokio::test]
    async fn clean_frames_pass_byte_for_byte() {
        let mut input = frame(b"hello", [1, 2, 3, 4], true);
        input.extend(frame(&vec![b'x'; 300], [9, 8, 7, 6], true));
        let (stop, out) = relay(input.clone()).await;
        assert_eq!(stop, Stop::Closed);
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn masked_secret_is_found_and_not_forwarded() {
        let mut input = frame(b"first", [1, 2, 3, 4], true);
        let clean_len = input.len();
        input.extend(frame(format!("leak {T}").as_bytes(), [0xaa, 0x55, 0x0f, 0xf0], true));
        let (stop, out) = relay(input).await;
        assert_eq!(stop, Stop::Finding("known-secret".into()));
        assert_eq!(out.len(), clean_len, "only the clean frame went out");
    }

    #[tokio::test]
    async fn secret_split_across_frames_stops_the_second() {
        let (a, b) = T.split_at(10);
        let mut input = frame(a.as_bytes(), [1, 1, 1, 1], false);
        input.extend(frame(b.as_bytes(), [2, 2, 2, 2], true));
        let (stop, _) = relay(input).await;
        assert_eq!(stop, Stop::Finding("known-secret".into()));
    }

    #[tokio::test]
    async fn compressed_and_oversized_frames_are_refused() {
        let mut f = frame(b"x", [0; 4], true);
        f[0] |= 0x40;
        assert!(matches!(relay(f).await.0, Stop::Refused(_)));
        let engine = Engine::new(&[]);
        let big = frame(&vec![0u8; 2000], [0; 4], true);
        let r = client_to_upstream(&big[..], Vec::new(), &engine, None, 1000).await;
        assert!(r.is_err());
    }
}
