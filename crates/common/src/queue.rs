//! The supervise queue directory: one `<id>.request.json` per request, answered by one
//! `<id>.response.json`. Both written atomically. Used by supervise (MCP tools), egress-proxy
//! (DLP `supervise` action), git-gate, and the operator's side in the orchestrator.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::formats::queue::is_request_id;
use crate::formats::{FormatError, QueueRequest, QueueResponse};

const REQUEST_SUFFIX: &str = ".request.json";
const RESPONSE_SUFFIX: &str = ".response.json";

/// How often a waiter looks for the operator's answer.
const POLL: Duration = Duration::from_millis(100);

/// A request with the operator's answer, if there is one yet.
pub type Entry = (QueueRequest, Option<QueueResponse>);

#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Queue {
    pub fn new(dir: impl Into<PathBuf>) -> Queue {
        Queue { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn request_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{REQUEST_SUFFIX}"))
    }

    pub fn response_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{RESPONSE_SUFFIX}"))
    }

    /// Files a new request and returns it (with its fresh id).
    pub fn file(&self, bottle: &str, tool: &str, arguments: serde_json::Value) -> std::io::Result<QueueRequest> {
        let req = QueueRequest {
            id: uuid::Uuid::new_v4().simple().to_string(),
            bottle: bottle.to_string(),
            tool: tool.to_string(),
            arguments,
            created_at: now_rfc3339(),
        };
        crate::atomic::write_json(&self.request_path(&req.id), &req)?;
        Ok(req)
    }

    /// The request with this id, if it exists. An invalid id is `Ok(None)`, never a path.
    pub fn request(&self, id: &str) -> Result<Option<QueueRequest>, FormatError> {
        if !is_request_id(id) {
            return Ok(None);
        }
        let p = self.request_path(id);
        if !p.exists() {
            return Ok(None);
        }
        QueueRequest::load(&p).map(Some)
    }

    /// The operator's answer, if there is one yet.
    pub fn response(&self, id: &str) -> Result<Option<QueueResponse>, FormatError> {
        if !is_request_id(id) {
            return Ok(None);
        }
        let p = self.response_path(id);
        if !p.exists() {
            return Ok(None);
        }
        QueueResponse::load(&p).map(Some)
    }

    /// Writes the operator's answer. Refuses an id with no request.
    pub fn answer(&self, id: &str, response: &QueueResponse) -> std::io::Result<()> {
        if !is_request_id(id) || !self.request_path(id).exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no request {id:?} in {}", self.dir.display()),
            ));
        }
        crate::atomic::write_json(&self.response_path(id), response)
    }

    /// Waits up to `timeout` for the answer; `Ok(None)` when none came in time. A response
    /// file that does not parse is an error (never taken as approval).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<QueueResponse>, FormatError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.response(id)? {
                return Ok(Some(r));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    /// Every request in the directory with its answer (if any), oldest first. Unreadable files
    /// are returned as errors alongside, so one broken file hides nothing else.
    pub fn list(&self) -> std::io::Result<(Vec<Entry>, Vec<FormatError>)> {
        let mut items = Vec::new();
        let mut errors = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((items, errors)),
            Err(e) => return Err(e),
        };
        for entry in rd {
            let name = entry?.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(REQUEST_SUFFIX)) else { continue };
            if id.starts_with('.') {
                continue;
            }
            match self.request(id) {
                Ok(Some(req)) => match self.response(id) {
                    Ok(resp) => items.push((req, resp)),
                    Err(e) => errors.push(e),
                },
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        items.sort_by(|a, b| a.0.created_at.cmp(&b.0.created_at).then_with(|| a.0.id.cmp(&b.0.id)));
        Ok((items, errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ResponseStatus;

    #[tokio::test]
    async fn file_wait_answer() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let req = q.file("b1", "ask_operator", serde_json::json!({"question": "?"})).unwrap();
        assert!(q.wait(&req.id, Duration::from_millis(150)).await.unwrap().is_none());
        let q2 = q.clone();
        let id = req.id.clone();
        let answerer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            q2.answer(&id, &QueueResponse { status: ResponseStatus::Approved, notes: "yes".into(), arguments: None })
                .unwrap();
        });
        let resp = q.wait(&req.id, Duration::from_secs(5)).await.unwrap().unwrap();
        answerer.await.unwrap();
        assert_eq!(resp.status, ResponseStatus::Approved);
        let (items, errors) = q.list().unwrap();
        assert_eq!(items.len(), 1);
        assert!(errors.is_empty());
    }

    #[test]
    fn ids_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        assert!(q.request("../../etc/passwd").unwrap().is_none());
        assert!(
            q.answer(
                "../x",
                &QueueResponse { status: ResponseStatus::Rejected, notes: String::new(), arguments: None }
            )
            .is_err()
        );
        assert!(
            q.answer(
                "unknown",
                &QueueResponse { status: ResponseStatus::Rejected, notes: String::new(), arguments: None }
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn broken_response_is_an_error_not_an_approval() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let req = q.file("b", "t", serde_json::json!({})).unwrap();
        std::fs::write(q.response_path(&req.id), b"{\"status\":\"approved\"").unwrap();
        assert!(q.wait(&req.id, Duration::from_secs(1)).await.is_err());
    }
}
