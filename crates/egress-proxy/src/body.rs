//! Request and response bodies: the one boxed body type the proxy passes around, bounded
//! collection of a request body (so DLP sees all of it before the upstream sees any of it), and
//! bounded decoding of `Content-Encoding` (gzip, deflate, br) for scanning.

use std::io::Read;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

pub(crate) fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// Boxes any body whose errors convert.
pub(crate) fn boxed<B>(b: B) -> ProxyBody
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the request body: {0}")]
    Read(BoxError),
    #[error("content-encoding {0:?} cannot be scanned")]
    UnknownEncoding(String),
    #[error("decoding {encoding} body: {source}")]
    Decode { encoding: String, source: std::io::Error },
    #[error("decoded body is larger than {0} bytes")]
    DecodedTooLarge(usize),
}

/// Reads the whole body, failing once it exceeds `max` bytes.
pub(crate) async fn collect<B>(body: B, max: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(BodyError::TooLarge(max))
            } else {
                Err(BodyError::Read(e))
            }
        }
    }
}

/// The encodings named by a `Content-Encoding` value, in the order they were applied.
pub(crate) fn encodings(value: &str) -> Vec<String> {
    value.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty() && s != "identity").collect()
}

/// Undoes `encodings` (applied in order) with the output bounded by `max` bytes.
pub(crate) fn decode(data: &[u8], encodings: &[String], max: usize) -> Result<Vec<u8>, BodyError> {
    let mut cur = data.to_vec();
    for enc in encodings.iter().rev() {
        let err = |source| BodyError::Decode { encoding: enc.clone(), source };
        let mut out = Vec::new();
        let limit = max as u64 + 1;
        match enc.as_str() {
            "gzip" | "x-gzip" => {
                flate2::read::MultiGzDecoder::new(&cur[..]).take(limit).read_to_end(&mut out).map_err(err)?;
            }
            "deflate" => {
                // RFC 9110 says zlib-wrapped; some clients send raw deflate.
                if flate2::read::ZlibDecoder::new(&cur[..]).take(limit).read_to_end(&mut out).is_err() {
                    out.clear();
                    flate2::read::DeflateDecoder::new(&cur[..]).take(limit).read_to_end(&mut out).map_err(err)?;
                }
            }
            "br" => {
                brotli::Decompressor::new(&cur[..], 4096).take(limit).read_to_end(&mut out).map_err(err)?;
            }
            other => return Err(BodyError::UnknownEncoding(other.to_string())),
        }
        if out.len() > max {
            return Err(BodyError::DecodedTooLarge(max));
        }
        cur = out;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_each_encoding_and_stacks() {
        let data = b"hello secret world".repeat(10);
        assert_eq!(decode(&gzip(&data), &encodings("gzip"), 1 << 20).unwrap(), data);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        assert_eq!(decode(&z.finish().unwrap(), &encodings("deflate"), 1 << 20).unwrap(), data);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&data).unwrap();
        assert_eq!(decode(&raw.finish().unwrap(), &encodings("deflate"), 1 << 20).unwrap(), data);
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22).write_all(&gzip(&data)).unwrap();
        assert_eq!(decode(&br, &encodings("gzip, br"), 1 << 20).unwrap(), data);
        assert_eq!(decode(&data, &encodings("identity"), 1 << 20).unwrap(), data);
    }

    #[test]
    fn bombs_and_unknowns_fail_closed() {
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(matches!(decode(&bomb, &encodings("gzip"), 1000), Err(BodyError::DecodedTooLarge(1000))));
        assert!(matches!(decode(b"x", &encodings("zstd"), 1000), Err(BodyError::UnknownEncoding(_))));
        assert!(matches!(decode(b"not gzip", &encodings("gzip"), 1000), Err(BodyError::Decode { .. })));
    }

    #[tokio::test]
    async fn collect_is_bounded() {
        assert_eq!(collect(Full::new(Bytes::from_static(b"abc")), 3).await.unwrap(), "abc");
        assert!(matches!(collect(Full::new(Bytes::from_static(b"abcd")), 3).await, Err(BodyError::TooLarge(3))));
    }
}
