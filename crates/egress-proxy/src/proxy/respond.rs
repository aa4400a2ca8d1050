//! Responses: the agent must never see a secret the bottle holds (a token the proxy injects,
//! a value under `BOT_BOTTLE_SENSITIVE_PREFIXES`), and an upstream may hand one back (an echo
//! service, an error page quoting the request, a redirect carrying it). Every response is
//! cleaned on its way to the agent: header values (trailers too) and the body, also when the
//! body is gzip/deflate/br encoded (it then goes out decoded) and when it streams (bytes that
//! could begin a secret are held back until the next chunk or the end shows what they are, so a
//! secret split across chunks is caught; nothing else waits). Each held secret, in every form
//! [`KnownSecrets`] matches, is masked in place by `[REDACTED]` and `*`s of the same length, so
//! an unencoded body keeps its length. One audit line per response that had anything masked.
//! An encoding the proxy cannot decode is refused (502), never passed on unread; requests only
//! offer upstreams the encodings it can decode ([`accept_encoding`]).

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use common::scan::KnownSecrets;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, SizeHint};

use super::context::Ctx;
use super::{Live, Proxy, Target, text};
use crate::audit::Event;
use crate::body::{self, BoxError, ProxyBody};

/// The encodings the proxy can read a response in.
const READABLE: [&str; 4] = ["gzip", "x-gzip", "deflate", "br"];

/// Masks every held secret in `data`, in place and keeping its length; true if any was.
fn mask(known: &KnownSecrets, data: &mut [u8]) -> bool {
    let found = known.scan(data);
    for f in &found {
        let span = &mut data[f.start..f.end];
        let word = b"[REDACTED]";
        if span.len() >= word.len() {
            span[..word.len()].copy_from_slice(word);
            span[word.len()..].fill(b'*');
        } else {
            span.fill(b'*');
        }
    }
    !found.is_empty()
}

/// Masks the held secrets in every value of `headers`; the names of the headers that had one.
fn mask_headers(known: &KnownSecrets, headers: &mut HeaderMap) -> Vec<String> {
    let mut masked = Vec::new();
    for (name, value) in headers.iter_mut() {
        if !known.occurs_in(value.as_bytes()) {
            continue;
        }
        let mut bytes = value.as_bytes().to_vec();
        if mask(known, &mut bytes) {
            *value = HeaderValue::from_bytes(&bytes).unwrap_or(HeaderValue::from_static("[REDACTED]"));
            masked.push(name.to_string());
        }
    }
    masked
}

/// The request's `Accept-Encoding` cut down to what a response can be read in (or removed):
/// an upstream then has no reason to answer in an encoding the proxy would have to refuse.
pub(super) fn accept_encoding(headers: &mut HeaderMap) {
    if !headers.contains_key(header::ACCEPT_ENCODING) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            let coding = t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            READABLE.contains(&coding.as_str()) || coding == "identity"
        })
        .map(str::to_string)
        .collect();
    headers.remove(header::ACCEPT_ENCODING);
    if let Ok(v) = HeaderValue::from_str(&kept.join(", "))
        && !kept.is_empty()
    {
        headers.insert(header::ACCEPT_ENCODING, v);
    }
}

/// What the audit line of a cleaned response names (cheap to keep: shared or reference-counted).
pub(super) struct Origin {
    pub(super) proxy: Arc<Proxy>,
    pub(super) live: Arc<Live>,
    pub(super) target: Arc<Target>,
    pub(super) method: Method,
    pub(super) uri: Uri,
}

impl Origin {
    fn audit(&self, what: &str) {
        let ctx = Ctx::new(&self.proxy, &self.live, &self.target.host, self.method.as_str(), self.uri.path());
        ctx.audit(Event::Redact, format_args!("held secret redacted from the response {what}"));
    }
}

/// The response as the agent may see it.
pub(super) fn clean(origin: Origin, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if origin.live.dlp.known().is_empty() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let known = origin.live.dlp.known();
    let in_headers = mask_headers(known, &mut parts.headers);
    let encodings: Vec<String> = parts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .flat_map(|v| body::encodings(&v))
        .collect();
    let mut audited = false;
    if !in_headers.is_empty() {
        origin.audit(&format!("(header {})", in_headers.join(", ")));
        audited = true;
    }
    if body.is_end_stream() {
        return Response::from_parts(parts, body);
    }
    let decoders = match Decoders::new(&encodings) {
        Ok(d) => d,
        Err(coding) => {
            let why = format!("the response's content-encoding {coding:?} cannot be read for held secrets");
            Ctx::new(&origin.proxy, &origin.live, &origin.target.host, origin.method.as_str(), origin.uri.path())
                .audit(Event::Deny, &why);
            return text(
                StatusCode::BAD_GATEWAY,
                format!("bot-bottle egress: upstream {}: {why}\n", origin.target.host),
            );
        }
    };
    if decoders.is_some() {
        // It goes out decoded.
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let body = Masking { inner: body, decoders, pending: Vec::new(), trailers: None, done: false, audited, origin };
    Response::from_parts(parts, body::boxed(body))
}

/// One decoder per encoding applied, undone last first; each takes input and gives what it
/// could decode so far.
struct Decoders(Vec<Decoder>);

enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Deflate(flate2::write::DeflateDecoder<Vec<u8>>),
    /// `deflate` is zlib-wrapped by the RFC and raw from some servers: told apart by the
    /// first bytes.
    Undecided(Vec<u8>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl Decoders {
    /// `None` for an unencoded body; the encoding that cannot be read as the error.
    fn new(encodings: &[String]) -> Result<Option<Decoders>, String> {
        if encodings.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(encodings.len());
        for e in encodings.iter().rev() {
            out.push(match e.as_str() {
                "gzip" | "x-gzip" => Decoder::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
                "deflate" => Decoder::Undecided(Vec::new()),
                "br" => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
                other => return Err(other.to_string()),
            });
        }
        Ok(Some(Decoders(out)))
    }

    /// Feeds `input` through every layer; the decoded bytes so far.
    fn feed(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut data = input.to_vec();
        for d in &mut self.0 {
            data = d.feed(&data)?;
        }
        Ok(data)
    }

    /// The end of the body: what every layer still had.
    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        let mut data = Vec::new();
        for d in &mut self.0 {
            let mut out = d.feed(&data)?;
            out.extend(d.finish()?);
            data = out;
        }
        Ok(data)
    }
}

impl Decoder {
    fn feed(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        if let Decoder::Undecided(seen) = self {
            seen.extend_from_slice(input);
            if seen.len() < 2 {
                return Ok(Vec::new());
            }
            let zlib = seen[0] & 0x0f == 8 && (u16::from(seen[0]) << 8 | u16::from(seen[1])) % 31 == 0;
            let seen = std::mem::take(seen);
            *self = if zlib {
                Decoder::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))
            } else {
                Decoder::Deflate(flate2::write::DeflateDecoder::new(Vec::new()))
            };
            return self.feed(&seen);
        }
        match self {
            Decoder::Gzip(d) => d.write_all(input).map(|()| std::mem::take(d.get_mut())),
            Decoder::Zlib(d) => d.write_all(input).map(|()| std::mem::take(d.get_mut())),
            Decoder::Deflate(d) => d.write_all(input).map(|()| std::mem::take(d.get_mut())),
            Decoder::Brotli(d) => d.write_all(input).map(|()| std::mem::take(d.get_mut())),
            Decoder::Undecided(_) => Ok(Vec::new()),
        }
    }

    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Decoder::Gzip(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
            Decoder::Zlib(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
            Decoder::Deflate(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
            Decoder::Brotli(d) => d.flush().map(|()| std::mem::take(d.get_mut())),
            Decoder::Undecided(seen) if seen.is_empty() => Ok(Vec::new()),
            Decoder::Undecided(_) => Err(std::io::Error::other("a deflate body of one byte")),
        }
    }
}

/// The response body, decoded when it was encoded, with every held secret masked; bytes that
/// could begin one wait for the next chunk.
struct Masking {
    inner: ProxyBody,
    decoders: Option<Decoders>,
    /// Decoded, masked bytes not passed on yet.
    pending: Vec<u8>,
    /// Trailers that arrived while bytes were still pending.
    trailers: Option<HeaderMap>,
    done: bool,
    /// Whether this response's audit line is written.
    audited: bool,
    origin: Origin,
}

impl Masking {
    fn masked(&mut self, what: &str) {
        if !self.audited {
            self.audited = true;
            self.origin.audit(what);
        }
    }

    /// Masks what is pending and takes what may go out now (all of it at the end).
    fn release(&mut self, end: bool) -> Option<Bytes> {
        if mask(self.origin.live.dlp.known(), &mut self.pending) {
            self.masked("(body)");
        }
        let keep = if end { 0 } else { self.origin.live.dlp.known().pending(&self.pending) };
        let n = self.pending.len() - keep;
        (n > 0).then(|| Bytes::from(self.pending.drain(..n).collect::<Vec<u8>>()))
    }
}

impl Body for Masking {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        // Nothing held back and nothing in this chunk that is or may begin a
                        // secret: it goes out as it came, uncopied.
                        let known = this.origin.live.dlp.known();
                        if this.decoders.is_none()
                            && this.pending.is_empty()
                            && !known.occurs_in(&data)
                            && known.pending(&data) == 0
                        {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        match &mut this.decoders {
                            Some(d) => this.pending.extend(d.feed(&data)?),
                            None => this.pending.extend_from_slice(&data),
                        }
                        if let Some(out) = this.release(false) {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            let names = mask_headers(this.origin.live.dlp.known(), &mut trailers);
                            if !names.is_empty() {
                                this.masked(&format!("(trailer {})", names.join(", ")));
                            }
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    if let Some(d) = &mut this.decoders {
                        this.pending.extend(d.finish()?);
                    }
                    if let Some(out) = this.release(true) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoders {
            // Masking keeps lengths: an unencoded body's length holds.
            None if self.pending.is_empty() => self.inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Secret;

    const T: &str = "tok-live-0123456789abcdef";

    fn known() -> KnownSecrets {
        KnownSecrets::new([Secret::new(T)])
    }

    #[test]
    fn masks_keep_the_length() {
        let mut data = format!("a {T} b {}", hex::encode(T)).into_bytes();
        let len = data.len();
        assert!(mask(&known(), &mut data));
        let text = String::from_utf8(data).unwrap();
        assert_eq!(text.len(), len);
        assert!(!text.contains(T) && !text.contains(&hex::encode(T)), "{text}");
        assert!(text.starts_with("a [REDACTED]***"), "{text}");
        let mut short = *b"x";
        assert!(!mask(&known(), &mut short));
    }

    #[test]
    fn every_decoder_undoes_its_encoding_in_pieces() {
        let plain = format!("{{\"auth\":\"Bearer {T}\"}}\n").repeat(50).into_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&plain).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&plain).unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22).write_all(&plain).unwrap();
        for (enc, data) in [
            ("gzip", gz.finish().unwrap()),
            ("deflate", zl.finish().unwrap()),
            ("deflate", raw.finish().unwrap()),
            ("br", br),
        ] {
            let mut d = Decoders::new(&[enc.to_string()]).unwrap().unwrap();
            let mut out = Vec::new();
            for piece in data.chunks(7) {
                out.extend(d.feed(piece).unwrap());
            }
            out.extend(d.finish().unwrap());
            assert_eq!(out, plain, "{enc}");
        }
        assert_eq!(Decoders::new(&["zstd".into()]).err(), Some("zstd".into()));
        assert!(Decoders::new(&[]).unwrap().is_none());
    }

    #[test]
    fn accept_encoding_keeps_only_what_can_be_read() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd, gzip;q=0.9, br, compress, identity"));
        accept_encoding(&mut h);
        assert_eq!(h[header::ACCEPT_ENCODING], "gzip;q=0.9, br, identity");
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
        accept_encoding(&mut h);
        assert!(!h.contains_key(header::ACCEPT_ENCODING));
    }
}
