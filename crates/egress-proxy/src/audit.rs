//! The audit log: one JSON line per decision that denies, redacts or holds (and per allowed
//! request when the routes say `"log": 2`). Callers pass paths without query strings and with
//! DLP matches already redacted; secret values never reach this module.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Event {
    Deny,
    Redact,
    Hold,
    Allow,
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    bottle: &'a str,
    event: Event,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    reason: &'a str,
}

/// Where audit lines go (a file opened for append, or stderr).
pub(crate) struct Audit {
    bottle: String,
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("bottle", &self.bottle).finish()
    }
}

impl Audit {
    pub(crate) fn new(bottle: String, out: Box<dyn Write + Send>) -> Audit {
        Audit { bottle, out: Mutex::new(out) }
    }

    /// Writes one line; `log` is the routes' `log` level (0 off, 1 deny/redact/hold, 2 all).
    pub(crate) fn record(&self, log: u8, event: Event, host: &str, method: &str, path: &str, reason: &str) {
        let wanted = match event {
            Event::Allow => log >= 2,
            _ => log >= 1,
        };
        if !wanted {
            return;
        }
        let line = Line { ts: common::queue::now_rfc3339(), bottle: &self.bottle, event, host, method, path, reason };
        let Ok(mut bytes) = serde_json::to_vec(&line) else { return };
        bytes.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
            tracing::error!("writing the audit log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_follow_the_contract_and_the_log_level() {
        let buf = Buf::default();
        let a = Audit::new("b1".into(), Box::new(buf.clone()));
        a.record(1, Event::Allow, "h", "GET", "/", "ok");
        a.record(0, Event::Deny, "h", "GET", "/", "no");
        assert!(buf.0.lock().unwrap().is_empty());
        a.record(1, Event::Deny, "h.com", "GET", "/x", "host h.com is not in the bottle's routes");
        a.record(2, Event::Allow, "h.com", "GET", "/y", "route 0");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "deny");
        assert_eq!(lines[0]["bottle"], "b1");
        assert_eq!(lines[0]["host"], "h.com");
        assert_eq!(lines[0]["path"], "/x");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["event"], "allow");
    }
}
