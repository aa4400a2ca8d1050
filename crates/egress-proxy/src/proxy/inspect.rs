//! The DLP step: everything a request carries — host, path and query, method, every header's
//! name and value (the `Upgrade` and `Connection` values of an upgrade too), the whole body
//! (held, bounded, decoded) — read by the route's detectors in the route's mode, through every
//! layer of encoding, each finding kept with where it was found.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use common::formats::routes::{DlpConfig, DlpDetector, DlpMode};
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
    /// Offsets into the path and query.
    pub(super) url: Vec<Hit>,
    /// Header name, which of its values (by position), and the hits in that value.
    pub(super) headers: Vec<(HeaderName, usize, Vec<Hit>)>,
    /// Offsets into the decoded body.
    pub(super) body: Vec<Hit>,
    /// Findings where nothing can be replaced (the host, the method, a header's name, the
    /// `Upgrade` and `Connection` values of an upgrade), with where they were.
    pub(super) fixed: Vec<(String, Hit)>,
}

impl Inspection {
    pub(super) fn is_clean(&self) -> bool {
        self.url.is_empty() && self.headers.is_empty() && self.body.is_empty() && self.fixed.is_empty()
    }

    /// Every finding with where it was: `url`, `header x-foo`, `body`, `method`...
    fn located(&self) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, &Hit)> {
        let url = self.url.iter().map(|h| ("url".into(), h));
        let headers = self
            .headers
            .iter()
            .flat_map(|(name, _, hits)| hits.iter().map(move |h| (format!("header {name}").into(), h)));
        let body = self.body.iter().map(|h| ("body".into(), h));
        let fixed = self.fixed.iter().map(|(loc, h)| (loc.as_str().into(), h));
        fixed.chain(url).chain(headers).chain(body)
    }

    /// A summary without values, each finding with the mode that decided it:
    /// `rule in url (standard); rule in header x-foo (strict); rule in body (standard)`.
    pub(super) fn summary(&self) -> String {
        let mut parts: Vec<String> =
            self.located().map(|(loc, h)| format!("{} in {loc} ({})", h.rule_id, h.mode.as_str())).collect();
        parts.dedup();
        parts.join("; ")
    }

    /// The findings for a supervise request: rule, location, mode, redacted preview.
    pub(super) fn findings_json(&self) -> serde_json::Value {
        self.located()
            .map(|(loc, h)| {
                serde_json::json!({"rule_id": h.rule_id, "location": loc, "mode": h.mode.as_str(), "secret_redacted": h.redacted})
            })
            .collect()
    }
}

/// DLP's reading of a connection's host, the same for every request on it: kept with the
/// routes in force and the detectors and mode it was read with, and read again when those change.
#[derive(Default)]
pub(super) struct HostHits(Mutex<Option<HostScan>>);

struct HostScan {
    /// Held weakly, so no later routes can be allocated at its address.
    live: Weak<Live>,
    mode: DlpMode,
    outbound: Vec<DlpDetector>,
    hits: Vec<Hit>,
}

impl std::fmt::Debug for HostHits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostHits")
    }
}

impl HostHits {
    /// What [`crate::dlp::Engine::scan_host`] finds in `host` under `live` with `cfg`.
    fn get(&self, live: &Arc<Live>, cfg: &DlpConfig, host: &str) -> Vec<Hit> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = |k: &HostScan| {
            std::ptr::eq(k.live.as_ptr(), Arc::as_ptr(live)) && k.mode == cfg.mode && k.outbound == cfg.outbound
        };
        match kept.as_ref() {
            Some(k) if fresh(k) => k.hits.clone(),
            _ => {
                let hits = live.dlp.scan_host(cfg, host);
                *kept = Some(HostScan {
                    live: Arc::downgrade(live),
                    mode: cfg.mode,
                    outbound: cfg.outbound.clone(),
                    hits: hits.clone(),
                });
                hits
            }
        }
    }
}

/// What a request's head is, as DLP reads it.
pub(super) struct Head<'a> {
    /// The host as the agent wrote it (case kept).
    pub(super) host: &'a str,
    /// What DLP found in it before on this connection.
    pub(super) host_hits: &'a HostHits,
    pub(super) method: &'a str,
    pub(super) pq: &'a PathAndQuery,
    /// The headers that go upstream.
    pub(super) headers: &'a HeaderMap,
    /// The `Upgrade` and `Connection` values a WebSocket upgrade puts back before forwarding.
    pub(super) upgrade: [Option<&'a HeaderValue>; 2],
}

/// Where a stretch of the scanned head text came from.
#[derive(Clone, Copy)]
enum Part {
    /// Host, path and query, one line.
    Url,
    Method,
    Name(usize),
    Value(usize),
    Upgrade(&'static str),
}

/// Scans the request head as one text (`host+path?query`, the method, every header as
/// `name: value`, the upgrade values; one per line, and no rule or known secret spans a line)
/// and maps each hit back to where it was.
pub(super) fn scan_head(live: &Arc<Live>, cfg: &DlpConfig, head: &Head<'_>, insp: &mut Inspection) {
    let mut text = Vec::with_capacity(512);
    let mut parts: Vec<(usize, usize, Part)> = Vec::with_capacity(2 * head.headers.len() + 4);
    fn push(text: &mut Vec<u8>, parts: &mut Vec<(usize, usize, Part)>, bytes: &[&[u8]], part: Part) {
        let start = text.len();
        for b in bytes {
            text.extend_from_slice(b);
        }
        parts.push((start, text.len(), part));
    }
    push(&mut text, &mut parts, &[head.host.as_bytes(), head.pq.as_str().as_bytes()], Part::Url);
    text.push(b'\n');
    push(&mut text, &mut parts, &[head.method.as_bytes()], Part::Method);
    for (i, (name, value)) in head.headers.iter().enumerate() {
        text.push(b'\n');
        push(&mut text, &mut parts, &[name.as_str().as_bytes()], Part::Name(i));
        text.extend_from_slice(b": ");
        push(&mut text, &mut parts, &[value.as_bytes()], Part::Value(i));
    }
    for (name, value) in ["upgrade", "connection"].into_iter().zip(head.upgrade) {
        if let Some(v) = value {
            text.push(b'\n');
            text.extend_from_slice(name.as_bytes());
            text.extend_from_slice(b": ");
            push(&mut text, &mut parts, &[v.as_bytes()], Part::Upgrade(name));
        }
    }
    let mut hits = live.dlp.scan(cfg, &text);
    hits.extend(head.host_hits.get(live, cfg, head.host));
    if hits.is_empty() {
        return;
    }
    let names: Vec<(&HeaderName, &HeaderValue)> = head.headers.iter().collect();
    let mut per_header: Vec<Vec<Hit>> = vec![Vec::new(); names.len()];
    let host_len = head.host.len();
    for mut h in hits {
        // The part a hit starts in (a hit in the gap after a name, `: `, is the name's).
        let k = parts.partition_point(|&(start, _, _)| start <= h.start).saturating_sub(1);
        let (start, end, part) = parts[k];
        h.end = h.end.min(end).max(h.start);
        match part {
            Part::Url if h.start < host_len => insp.fixed.push(("host".into(), h)),
            Part::Url => {
                h.start -= host_len;
                h.end -= host_len;
                insp.url.push(h);
            }
            Part::Method => insp.fixed.push(("method".into(), h)),
            Part::Name(i) => insp.fixed.push((format!("header name {}", names[i].0), h)),
            Part::Upgrade(name) => insp.fixed.push((format!("header {name}"), h)),
            Part::Value(i) => {
                h.start = h.start.saturating_sub(start);
                h.end = h.end.saturating_sub(start);
                per_header[i].push(h);
            }
        }
    }
    for (i, hits) in per_header.into_iter().enumerate() {
        if hits.is_empty() {
            continue;
        }
        let (name, value) = names[i];
        let idx = head.headers.get_all(name).iter().position(|v| v == value).unwrap_or(0);
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
    cfg: &DlpConfig,
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
    // A large body is decoded and scanned on the blocking pool: this serving thread has other
    // connections to keep moving meanwhile.
    let scanned = if offload {
        let (live, cfg, raw) = (live.clone(), cfg.clone(), raw.clone());
        tokio::task::spawn_blocking(move || scan_body(&live, &cfg, &raw, &encs, max))
            .await
            .unwrap_or_else(|e| Err(format!("scanning the body: {e}")))
    } else {
        scan_body(live, cfg, &raw, &encs, max)
    };
    match scanned {
        Ok((decoded, hits)) => Ok(HeldBody { raw, decoded, hits, _reservation: Some(reservation) }),
        Err(e) => Err(ctx.deny(&e)),
    }
}

/// Decodes (`encs`, bounded by `max`) and scans a held body: the decoded form, if it was
/// encoded, and the findings in what was scanned.
fn scan_body(
    live: &Live,
    cfg: &DlpConfig,
    raw: &[u8],
    encs: &[String],
    max: usize,
) -> Result<(Option<Vec<u8>>, Vec<Hit>), String> {
    let plain = if encs.is_empty() { None } else { Some(body::decode(raw, encs, max).map_err(|e| e.to_string())?) };
    let hits = live.dlp.scan(cfg, plain.as_deref().unwrap_or(raw));
    Ok((plain, hits))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use common::Secret;
    use common::formats::Routes;

    use super::*;
    use crate::dlp::Engine;

    fn live(secret: &str) -> Arc<Live> {
        let routes =
            Routes::parse(br#"{"version":1,"routes":[{"host":"*.example.com"}]}"#, Path::new("routes.json")).unwrap();
        Arc::new(Live::new(routes, &HashMap::new(), Engine::new(&[Secret::new(secret)])))
    }

    /// A connection's host is read once, and again whenever the routes in force or the route's
    /// detectors or mode differ from those it was read with.
    #[test]
    fn host_hits_are_read_again_when_what_they_were_read_with_changes() {
        // Assembled at run time: the repository holds no credential-shaped text.
        let token = ["tok-", "3f9a8b7c6d5e4f3a2b1c"].concat();
        let host = format!("{token}.example.com");
        let known = DlpConfig { outbound: vec![DlpDetector::KnownSecrets], ..DlpConfig::default() };
        let none = DlpConfig { outbound: vec![], ..DlpConfig::default() };
        let (holds, other) = (live(&token), live("another-held-secret-42"));
        let kept = HostHits::default();
        let ids = |l: &Arc<Live>, cfg: &DlpConfig| -> Vec<String> {
            kept.get(l, cfg, &host).into_iter().map(|h| h.rule_id).collect()
        };
        assert_eq!(ids(&holds, &known), ["known-secret"]);
        assert_eq!(ids(&holds, &known), ["known-secret"], "kept");
        assert!(std::ptr::eq(kept.0.lock().unwrap().as_ref().unwrap().live.as_ptr(), Arc::as_ptr(&holds)));
        assert!(ids(&other, &known).is_empty(), "other routes: read again");
        assert_eq!(ids(&holds, &known), ["known-secret"], "back: read again");
        assert!(ids(&holds, &none).is_empty(), "other detectors: read again");
        let standard = DlpConfig { mode: DlpMode::Standard, ..known.clone() };
        assert_eq!(ids(&holds, &standard), ["known-secret"]);
        assert_eq!(kept.0.lock().unwrap().as_ref().unwrap().mode, DlpMode::Standard, "other mode: read again");
    }
}
