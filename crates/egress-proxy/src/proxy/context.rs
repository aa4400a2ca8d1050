//! One request as the audit log and the client's 403 see it: [`Ctx`] carries the live routes,
//! host, method and path once, instead of every audit and deny call taking all four. Anything a
//! client sent is passed through DLP redaction before it reaches a log line or a 403 body.

use http::{Response, StatusCode};

use super::{Live, Proxy, forbidden};
use crate::audit::Event;
use crate::body::ProxyBody;
use crate::dlp;

/// The request being decided, for audit lines and denials.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) proxy: &'a Proxy,
    pub(super) live: &'a Live,
    pub(super) host: &'a str,
    pub(super) method: &'a str,
    /// The path as the audit log shows it (query left out, DLP findings redacted, once known).
    pub(super) path: &'a str,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(proxy: &'a Proxy, live: &'a Live, host: &'a str, method: &'a str, path: &'a str) -> Self {
        Ctx { proxy, live, host, method, path }
    }

    /// The same request with the path the audit log should show instead.
    pub(super) fn with_path(self, path: &'a str) -> Self {
        Ctx { path, ..self }
    }

    /// One audit line, if the routes' `log` level wants it; `reason` is only formatted then (an
    /// allow line is asked for on every request, and the default level records none).
    pub(super) fn audit(&self, event: Event, reason: impl std::fmt::Display) {
        let (live, log) = (self.live, self.live.routes.log);
        if log == 0 || (event == Event::Allow && log < 2) {
            return;
        }
        self.proxy.audit.record(
            log,
            event,
            &sanitize(live, self.host),
            self.method,
            &sanitize(live, self.path),
            &sanitize(live, &reason.to_string()),
        );
    }

    /// Logs, audits and answers a denial: `403` with the contract's body.
    pub(super) fn deny(&self, reason: &str) -> Response<ProxyBody> {
        tracing::info!(host = %sanitize(self.live, self.host), method = self.method, "denied: {}", sanitize(self.live, reason));
        self.audit(Event::Deny, reason);
        forbidden(&sanitize(self.live, reason))
    }

    /// Audits a denial and answers with `status` (413, 503...) and `body`.
    pub(super) fn refuse(&self, status: StatusCode, reason: &str) -> Response<ProxyBody> {
        self.audit(Event::Deny, reason);
        super::text(status, format!("bot-bottle egress: blocked: {}\n", sanitize(self.live, reason)))
    }
}

/// Redacts anything DLP would flag before a client-supplied string goes to the audit log.
pub(super) fn sanitize(live: &Live, s: &str) -> String {
    let hits = live.dlp.scan(&dlp::SANITIZE, s.as_bytes());
    if hits.is_empty() {
        s.to_string()
    } else {
        String::from_utf8_lossy(&dlp::redact(s.as_bytes(), &hits, b"[REDACTED]")).into_owned()
    }
}
