//! The DLP step: what a request carries (URL, header values, the whole body — held, bounded,
//! decoded) scanned by the route's detectors, each finding kept with where it was found.

use std::sync::Arc;

use bytes::Bytes;
use common::formats::routes::DlpDetector;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use tokio::sync::OwnedSemaphorePermit;

use super::context::Ctx;
use super::{Live, Proxy, drain, text};
use crate::body::{self, BodyError, ProxyBody};
use crate::dlp::Hit;

/// Plain request bodies up to this size are scanned on the serving thread; larger ones (a scan
/// of megabytes takes milliseconds) and encoded ones (decoding may inflate them to the body
/// limit) on the blocking pool.
const SCAN_INLINE_MAX: usize = 64 * 1024;

/// What DLP found in one request, by location.
#[derive(Debug, Default)]
pub(super) struct Inspection {
    /// Offsets into the path and query (a hit in the host ends at 0).
    pub(super) url: Vec<Hit>,
    /// Header name, which of its values (by position), and the hits in that value.
    pub(super) headers: Vec<(HeaderName, usize, Vec<Hit>)>,
    /// Offsets into the decoded body.
    pub(super) body: Vec<Hit>,
}

impl Inspection {
    pub(super) fn is_clean(&self) -> bool {
        self.url.is_empty() && self.headers.is_empty() && self.body.is_empty()
    }

    /// A summary without values: `rule in url; rule in header x-foo; rule in body`.
    pub(super) fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for h in &self.url {
            parts.push(format!("{} in url", h.rule_id));
        }
        for (name, _, hits) in &self.headers {
            for h in hits {
                parts.push(format!("{} in header {name}", h.rule_id));
            }
        }
        for h in &self.body {
            parts.push(format!("{} in body", h.rule_id));
        }
        parts.dedup();
        parts.join("; ")
    }

    /// The findings for a supervise request: rule, location, redacted preview.
    pub(super) fn findings_json(&self) -> serde_json::Value {
        let mut out = Vec::new();
        let mut push = |loc: String, h: &Hit| {
            out.push(serde_json::json!({"rule_id": h.rule_id, "location": loc, "secret_redacted": h.redacted}));
        };
        for h in &self.url {
            push("url".into(), h);
        }
        for (name, _, hits) in &self.headers {
            for h in hits {
                push(format!("header {name}"), h);
            }
        }
        for h in &self.body {
            push("body".into(), h);
        }
        serde_json::Value::Array(out)
    }
}

/// Scans the host, path and query and every header value with one pass (joined by newlines: no
/// rule or known secret spans a newline) and maps each hit back to its segment.
pub(super) fn scan_head(
    live: &Live,
    detectors: &[DlpDetector],
    host: &str,
    pq: &PathAndQuery,
    headers: &HeaderMap,
    insp: &mut Inspection,
) {
    let mut head_text = Vec::with_capacity(256);
    head_text.extend_from_slice(host.as_bytes());
    head_text.extend_from_slice(pq.as_str().as_bytes());
    for (_, value) in headers.iter() {
        head_text.push(b'\n');
        head_text.extend_from_slice(value.as_bytes());
    }
    let hits = live.dlp.scan(detectors, &head_text);
    if hits.is_empty() {
        return;
    }
    // (start, end) of the URL and of each header value in `head_text`.
    let mut segments: Vec<(usize, usize)> = vec![(0, host.len() + pq.as_str().len())];
    for (_, value) in headers.iter() {
        let start = segments.last().map_or(0, |s| s.1) + 1;
        segments.push((start, start + value.len()));
    }
    let names: Vec<(&HeaderName, &HeaderValue)> = headers.iter().collect();
    let mut per_header: Vec<Vec<Hit>> = vec![Vec::new(); names.len()];
    for mut h in hits {
        let seg = segments.partition_point(|&(start, _)| start <= h.start).saturating_sub(1);
        let (start, end) = segments[seg];
        h.end = h.end.min(end);
        if seg == 0 {
            // Offsets relative to `pq`; a hit in the host ends up at or near 0.
            h.start = h.start.saturating_sub(host.len());
            h.end = h.end.saturating_sub(host.len());
            insp.url.push(h);
        } else {
            h.start -= start;
            h.end -= start;
            per_header[seg - 1].push(h);
        }
    }
    for (i, hits) in per_header.into_iter().enumerate() {
        if hits.is_empty() {
            continue;
        }
        let (name, value) = names[i];
        let idx = headers.get_all(name).iter().position(|v| v == value).unwrap_or(0);
        insp.headers.push((name.clone(), idx, hits));
    }
}

/// A request body held for DLP: as received, decoded (when it was encoded), what the scan
/// found in it, and its share of the proxy-wide budget for held bodies (released on drop).
pub(super) struct HeldBody {
    pub(super) raw: Bytes,
    pub(super) decoded: Option<Vec<u8>>,
    pub(super) hits: Vec<Hit>,
    pub(super) _reservation: Option<OwnedSemaphorePermit>,
}

/// Holds the whole body (bounded by the body limit and the shared budget), decodes it and scans
/// it; an error is the response to send instead.
pub(super) async fn hold_body(
    ctx: Ctx<'_>,
    live: &Arc<Live>,
    detectors: &[DlpDetector],
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<HeldBody, Response<ProxyBody>> {
    let proxy: &Proxy = ctx.proxy;
    if incoming.is_end_stream() {
        return Ok(HeldBody { raw: Bytes::new(), decoded: None, hits: Vec::new(), _reservation: None });
    }
    let max = proxy.limits.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        let resp = ctx.refuse(StatusCode::PAYLOAD_TOO_LARGE, &BodyError::TooLarge(max).to_string());
        drain(incoming).await;
        return Err(resp);
    }
    // Room for the raw body and, when encoded, its decoded form.
    let encoded = headers.contains_key(header::CONTENT_ENCODING);
    let need = declared.unwrap_or(max) + if encoded { max } else { 0 };
    let kib = u32::try_from(need.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let reservation = match tokio::time::timeout(
        proxy.limits.header_timeout,
        proxy.body_budget.clone().acquire_many_owned(kib),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "bot-bottle egress: busy: too many request bodies held for scanning\n".into(),
            ));
        }
    };
    let raw = match body::collect(incoming, max).await {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge(_)) => return Err(ctx.refuse(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())),
        Err(e) => return Err(text(StatusCode::BAD_REQUEST, format!("bot-bottle egress: {e}\n"))),
    };
    let encs = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .flat_map(|v| body::encodings(&v))
        .collect::<Vec<_>>();
    // An encoded body may inflate up to the body limit whatever its size on the wire.
    let offload = raw.len() > SCAN_INLINE_MAX || !encs.is_empty();
    let work = {
        let (live, detectors, raw) = (live.clone(), detectors.to_vec(), raw.clone());
        move || -> Result<(Option<Vec<u8>>, Vec<Hit>), String> {
            let plain =
                if encs.is_empty() { None } else { Some(body::decode(&raw, &encs, max).map_err(|e| e.to_string())?) };
            let hits = live.dlp.scan(&detectors, plain.as_deref().unwrap_or(&raw));
            Ok((plain, hits))
        }
    };
    // A large body is decoded and scanned on the blocking pool: this serving thread has other
    // connections to keep moving meanwhile.
    let scanned = if offload {
        tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(format!("scanning the body: {e}")))
    } else {
        work()
    };
    match scanned {
        Ok((decoded, hits)) => Ok(HeldBody { raw, decoded, hits, _reservation: Some(reservation) }),
        Err(e) => Err(ctx.deny(&e)),
    }
}
