//! One request inside a connection, as named steps: [`admit`] (the policy decision) →
//! [`prepare`] (credentials the agent sent and hop-by-hop headers out) → inspect (DLP over URL,
//! headers and the held body, [`super::inspect`]) → [`verdict`] → apply it (block, redact,
//! hold for the operator) → forward (the route's token in, the URI rebuilt for the upstream,
//! sent through the pool, or upgraded to the scanned WebSocket relay).

use std::sync::Arc;

use bytes::Bytes;
use common::formats::routes::{DlpConfig, DlpDetector, DlpMode};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::context::Ctx;
use super::inspect::{self, Inspection};
use super::respond;
use super::verdict::{Verdict, verdict};
use super::{Live, Proxy, Target, drain, strip_hop_by_hop, text, upstream_error};
use crate::audit::Event;
use crate::body::{self, ProxyBody};
use crate::dlp;
use crate::policy::{Decision, Deny, RequestFacts, RequestLine, decide};
use crate::upstream::internal_address;

/// The request on its way out.
struct Outgoing {
    parts: http::request::Parts,
    /// Path and query to send (DLP's redact action may have replaced findings in them).
    pq: PathAndQuery,
    body: ProxyBody,
}

/// The `Upgrade` and `Connection` values of a WebSocket upgrade, put back before forwarding.
type WsHeaders = (Option<HeaderValue>, Option<HeaderValue>);

impl Proxy {
    /// One request to a target: admit, prepare, inspect, apply the verdict, forward.
    pub(super) async fn handle(
        self: Arc<Self>,
        target: Arc<Target>,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let live = self.live();
        // Owned copies that outlive `req` (cheap: a standard method and a shared URI).
        let method = req.method().clone();
        let uri = req.uri().clone();
        let ctx = Ctx::new(&self, &live, &target.host, method.as_str(), uri.path());
        let route_idx = match admit(&live, &target, &req) {
            Ok(route) => route,
            Err(d) => {
                let resp = ctx.deny(&d.to_string());
                drain(req.into_body()).await;
                return resp;
            }
        };
        let route = &live.routes.routes[route_idx];
        let ws = is_ws_upgrade(&req);
        let inbound_upgrade = ws.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, incoming) = req.into_parts();
        let ws_headers: Option<WsHeaders> =
            ws.then(|| (parts.headers.get(header::UPGRADE).cloned(), parts.headers.get(header::CONNECTION).cloned()));
        prepare(&live, route_idx, &mut parts.headers);
        let pq = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut out = Outgoing { parts, pq, body: body::empty() };
        let mut held = false;
        match route.dlp.config() {
            Some(dlp_cfg) => match self
                .inspect_and_apply(ctx, &live, &target, dlp_cfg, ws_headers.as_ref(), &mut out, incoming)
                .await
            {
                Ok(h) => held = h,
                Err(resp) => return resp,
            },
            None => out.body = body::boxed(incoming),
        }
        if !held {
            ctx.audit(Event::Allow, format_args!("route {route_idx}"));
        }
        if let Some((name, Some(value))) = &live.auth[route_idx] {
            out.parts.headers.insert(name.clone(), value.clone());
        }
        let Outgoing { mut parts, pq, body } = out;
        parts.uri = match upstream_uri(&target, pq) {
            Ok(u) => u,
            Err(e) => return ctx.deny(&format!("cannot rebuild the URI: {e}")),
        };
        parts.version = Version::HTTP_11;
        if let Some(h) = &target.host_header {
            // The pool drops it again for an h2 upstream (`:authority` says it there).
            parts.headers.insert(header::HOST, h.clone());
        }
        match (inbound_upgrade, ws_headers) {
            (Some(inbound), Some(ws_headers)) => {
                let dlp_cfg = route.dlp.config().cloned();
                let origin = respond::Origin {
                    proxy: self.clone(),
                    live: live.clone(),
                    target: target.clone(),
                    method: method.clone(),
                    uri: uri.clone(),
                };
                self.clone().forward_websocket(ctx, origin, parts, ws_headers, inbound, dlp_cfg).await
            }
            _ => {
                let origin = respond::Origin {
                    proxy: self.clone(),
                    live: live.clone(),
                    target: target.clone(),
                    method: method.clone(),
                    uri: uri.clone(),
                };
                self.forward(ctx, origin, Request::from_parts(parts, body)).await
            }
        }
    }

    /// DLP over the head (host, path and query, method, every header and the upgrade values put
    /// back for a WebSocket) and the whole body, and the verdict applied to `out` (its body is
    /// then the held one). `Ok(true)` when the operator approved a held request; an error is the
    /// response to send instead.
    #[allow(clippy::too_many_arguments)] // the steps' inputs, each named
    async fn inspect_and_apply(
        &self,
        ctx: Ctx<'_>,
        live: &Arc<Live>,
        target: &Target,
        dlp_cfg: &DlpConfig,
        ws_headers: Option<&WsHeaders>,
        out: &mut Outgoing,
        incoming: Incoming,
    ) -> Result<bool, Response<ProxyBody>> {
        let mut insp = Inspection::default();
        let head = inspect::Head {
            host: &target.host_raw,
            host_hits: &target.host_hits,
            method: ctx.method,
            pq: &out.pq,
            headers: &out.parts.headers,
            upgrade: ws_headers.map_or([None, None], |(u, c)| [u.as_ref(), c.as_ref()]),
        };
        inspect::scan_head(live, dlp_cfg, &head, &mut insp);
        let held_body = inspect::hold_body(ctx, live, dlp_cfg, &out.parts.headers, incoming).await?;
        insp.body = held_body.hits;
        let mut body_bytes = held_body.raw;
        let mut held = false;
        let v = verdict(&insp, dlp_cfg.on_match, self.queue.is_some());
        if v != Verdict::Forward {
            let audit_path = {
                let red = dlp::redact(out.pq.as_str().as_bytes(), &insp.url, b"[REDACTED]");
                let s = String::from_utf8_lossy(&red).into_owned();
                s.split('?').next().unwrap_or("").to_string()
            };
            let ctx = ctx.with_path(&audit_path);
            match v {
                Verdict::Forward => {}
                Verdict::Block(reason) => return Err(ctx.deny(&reason)),
                Verdict::Redact(reason) => {
                    if let Err(e) = redact(out, &insp, held_body.decoded, &mut body_bytes) {
                        return Err(ctx.deny(&format!("cannot rebuild the URI: {e}")));
                    }
                    ctx.audit(Event::Redact, &reason);
                }
                Verdict::Hold(summary) => {
                    held = true;
                    self.hold(ctx, target, &insp, &summary).await?;
                }
            }
        }
        if !body_bytes.is_empty() {
            out.parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_bytes.len()));
        }
        out.body = body::full(body_bytes);
        Ok(held)
    }

    /// Files the request for the operator and waits for the answer; `Ok` only on approval.
    async fn hold(
        &self,
        ctx: Ctx<'_>,
        target: &Target,
        insp: &Inspection,
        summary: &str,
    ) -> Result<(), Response<ProxyBody>> {
        let Some(queue) = &self.queue else {
            return Err(ctx.deny(&format!("dlp: {summary} (supervise: no queue configured)")));
        };
        let args = serde_json::json!({
            "host": target.host, "port": target.port, "method": ctx.method, "path": ctx.path,
            "findings": insp.findings_json(),
        });
        let filed = match queue.file(&self.bottle, "egress_dlp", args) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("filing a supervise request: {e}");
                return Err(ctx.deny(&format!("dlp: {summary} (supervise: cannot file the request)")));
            }
        };
        ctx.audit(Event::Hold, format_args!("dlp: {summary} (held as {})", filed.id));
        match queue.wait(&filed.id, self.limits.supervise_timeout).await {
            Ok(Some(r)) if r.status.is_yes() => {
                ctx.audit(Event::Allow, format_args!("operator approved {}", filed.id));
                Ok(())
            }
            Ok(Some(_)) => Err(ctx.deny(&format!("dlp: {summary} (operator rejected {})", filed.id))),
            Ok(None) => Err(ctx.deny(&format!("dlp: {summary} (no operator answer for {} in time)", filed.id))),
            Err(e) => {
                tracing::error!("reading the operator's answer: {e}");
                Err(ctx.deny(&format!("dlp: {summary} (unreadable answer for {})", filed.id)))
            }
        }
    }

    /// Sends the request through this thread's upstream pool; the response is cleaned of held
    /// secrets on its way back.
    async fn forward(&self, ctx: Ctx<'_>, origin: respond::Origin, out: Request<ProxyBody>) -> Response<ProxyBody> {
        match self.upstream.request(out).await {
            Ok(resp) => {
                let (mut p, b) = resp.into_parts();
                strip_hop_by_hop(&mut p.headers);
                respond::clean(origin, Response::from_parts(p, b))
            }
            Err(e) => failed(ctx, &e),
        }
    }

    /// Sends the upgrade request and, on `101`, relays the two upgraded connections ([`super::ws`]):
    /// client → server with the route's DLP, server → client for the held secrets.
    async fn forward_websocket(
        self: Arc<Self>,
        ctx: Ctx<'_>,
        origin: respond::Origin,
        mut parts: http::request::Parts,
        (upgrade, connection): WsHeaders,
        inbound: hyper::upgrade::OnUpgrade,
        dlp_cfg: Option<DlpConfig>,
    ) -> Response<ProxyBody> {
        if let Some(u) = upgrade {
            parts.headers.insert(header::UPGRADE, u);
        }
        parts.headers.insert(header::CONNECTION, connection.unwrap_or(HeaderValue::from_static("upgrade")));
        // No permessage-deflate: compressed frames could not be scanned.
        parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        let out = Request::from_parts(parts, body::empty());
        match self.ws_client.request(out).await {
            Ok(resp)
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && resp.headers().contains_key(header::SEC_WEBSOCKET_EXTENSIONS) =>
            {
                // An extension nobody offered (compression, say): its frames could not be
                // scanned, and the client would have to fail the connection anyway.
                let why = "upstream accepted the websocket with an extension that was not offered";
                ctx.audit(Event::Deny, why);
                text(StatusCode::BAD_GATEWAY, format!("bot-bottle egress: {why}\n"))
            }
            Ok(mut resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    let upstream = hyper::upgrade::on(&mut resp);
                    let proxy = self.clone();
                    let live = origin.live.clone();
                    let (host, m, p) = (ctx.host.to_string(), ctx.method.to_string(), ctx.path.to_string());
                    tokio::spawn(async move {
                        let (Ok(a), Ok(b)) = (inbound.await, upstream.await) else { return };
                        let ctx = Ctx::new(&proxy, &live, &host, &m, &p);
                        let (a_read, mut a_write) = tokio::io::split(TokioIo::new(a));
                        let (mut b_read, b_write) = tokio::io::split(TokioIo::new(b));
                        let max = proxy.limits.max_body_bytes;
                        let up = super::ws::relay(a_read, b_write, &live.dlp, dlp_cfg.as_ref(), max);
                        // What comes back is read for the held secrets only (when there are any).
                        let held = (!live.dlp.known().is_empty()).then(|| DlpConfig {
                            outbound: vec![DlpDetector::KnownSecrets],
                            mode: DlpMode::Standard,
                            ..DlpConfig::default()
                        });
                        let down = async {
                            match &held {
                                Some(cfg) => {
                                    super::ws::relay(&mut b_read, &mut a_write, &live.dlp, Some(cfg), max).await
                                }
                                None => {
                                    tokio::io::copy(&mut b_read, &mut a_write).await.map(|_| super::ws::Stop::Closed)
                                }
                            }
                        };
                        tokio::select! {
                            r = up => match r {
                                Ok(super::ws::Stop::Finding(ids)) => {
                                    ctx.audit(Event::Deny, format_args!("dlp: {ids} in websocket frame; connection closed"));
                                }
                                Ok(super::ws::Stop::Refused(why)) => ctx.audit(Event::Deny, &why),
                                Ok(super::ws::Stop::Closed) => {}
                                Err(e) => tracing::debug!(%host, "websocket relay: {e}"),
                            },
                            r = down => match r {
                                Ok(super::ws::Stop::Finding(_)) => ctx.audit(
                                    Event::Deny,
                                    "held secret in a websocket frame from the upstream (the response); connection closed",
                                ),
                                Ok(super::ws::Stop::Refused(why)) => ctx.audit(Event::Deny, format_args!("from the upstream: {why}")),
                                Ok(super::ws::Stop::Closed) => {}
                                Err(e) => tracing::debug!(%host, "websocket relay from the upstream: {e}"),
                            },
                        }
                    });
                }
                let (p, b) = resp.into_parts();
                respond::clean(origin, Response::from_parts(p, body::boxed(b)))
            }
            Err(e) => failed(ctx, &e),
        }
    }
}

/// The answer when the upstream request failed: a refused internal address is a denial (403,
/// audited); anything else is 502 with the error chain.
fn failed(ctx: Ctx<'_>, e: &(dyn std::error::Error + 'static)) -> Response<ProxyBody> {
    match internal_address(e) {
        Some(refused) => ctx.deny(&refused.to_string()),
        None => upstream_error(ctx.host, e),
    }
}

/// The policy decision for a request inside a connection: the index of the route that allows
/// it, or why not.
fn admit(live: &Live, target: &Target, req: &Request<Incoming>) -> Result<usize, Deny> {
    let mut authorities: Vec<std::borrow::Cow<'_, str>> =
        req.headers().get_all(header::HOST).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
    if let Some(a) = req.uri().authority() {
        authorities.push(a.as_str().into());
    }
    let auth_refs: Vec<&str> = authorities.iter().map(|a| a.as_ref()).collect();
    let facts = RequestFacts {
        via: target.via,
        host: &target.host,
        port: target.port,
        sni: target.sni.as_deref(),
        authorities: &auth_refs,
        request: Some(RequestLine { method: req.method().as_str(), path: req.uri().path(), headers: req.headers() }),
    };
    match decide(&live.routes, &facts) {
        Decision::Allow { route } => Ok(route),
        Decision::Deny(d) => Err(d),
    }
}

/// Removes what never goes upstream as the agent sent it: hop-by-hop headers, `Host` (set again
/// for the upstream), `Proxy-Authorization`, on a route that injects a token every
/// `Authorization` and the route's own auth header; and cuts `Accept-Encoding` down to what a
/// response can be read in.
fn prepare(live: &Live, route_idx: usize, headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    respond::accept_encoding(headers);
    headers.remove(header::HOST);
    headers.remove(header::PROXY_AUTHORIZATION);
    if live.routes.routes[route_idx].auth.is_some() {
        headers.remove(header::AUTHORIZATION);
        if let Some((n, _)) = &live.auth[route_idx] {
            headers.remove(n);
        }
    }
}

/// Applies the redact verdict: findings in the path and query, header values and body replaced
/// by `[REDACTED]` (an encoded body goes out decoded, without `Content-Encoding`).
fn redact(
    out: &mut Outgoing,
    insp: &Inspection,
    decoded: Option<Vec<u8>>,
    body_bytes: &mut Bytes,
) -> Result<(), http::uri::InvalidUri> {
    if !insp.url.is_empty() {
        let pq = String::from_utf8_lossy(&dlp::redact(out.pq.as_str().as_bytes(), &insp.url, b"%5BREDACTED%5D"))
            .into_owned();
        out.pq = PathAndQuery::try_from(pq)?;
    }
    let headers = &mut out.parts.headers;
    for (name, idx, hits) in &insp.headers {
        let values: Vec<HeaderValue> = headers.get_all(name).iter().cloned().collect();
        headers.remove(name);
        for (i, v) in values.into_iter().enumerate() {
            let v = if i == *idx {
                HeaderValue::from_bytes(&dlp::redact(v.as_bytes(), hits, b"[REDACTED]"))
                    .unwrap_or(HeaderValue::from_static("[REDACTED]"))
            } else {
                v
            };
            headers.append(name.clone(), v);
        }
    }
    if !insp.body.is_empty() {
        let src = decoded.unwrap_or_else(|| body_bytes.to_vec());
        let red = dlp::redact(&src, &insp.body, b"[REDACTED]");
        headers.remove(header::CONTENT_ENCODING);
        *body_bytes = Bytes::from(red);
    }
    Ok(())
}

/// The upstream URI: the target's scheme and authority with `pq`.
fn upstream_uri(target: &Target, pq: PathAndQuery) -> Result<Uri, String> {
    let (scheme, authority) = target.origin.clone()?;
    let mut up = http::uri::Parts::default();
    up.scheme = Some(scheme);
    up.authority = Some(authority);
    up.path_and_query = Some(pq);
    Uri::from_parts(up).map_err(|e| e.to_string())
}

/// An HTTP/1.1 WebSocket upgrade request (`Connection: upgrade` and an `Upgrade` header).
fn is_ws_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
        && req.headers().contains_key(header::UPGRADE)
}
