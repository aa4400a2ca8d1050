//! Supervise queue records: `<id>.request.json` (filed by a daemon) and `<id>.response.json`
//! (written by the operator).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{FormatError, Problems, parse_json, read_file};

/// A request to the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRequest {
    pub id: String,
    pub bottle: String,
    /// `ask_operator`, `request_egress`, `request_capability`, or `egress_dlp` (a held request).
    pub tool: String,
    pub arguments: serde_json::Value,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// The operator's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueResponse {
    pub status: ResponseStatus,
    #[serde(default)]
    pub notes: String,
    /// For `modified`: the arguments as the operator changed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseStatus {
    Approved,
    Modified,
    Rejected,
}

impl ResponseStatus {
    /// Approved or modified.
    pub fn is_yes(self) -> bool {
        !matches!(self, ResponseStatus::Rejected)
    }
}

/// A request id usable as a file name: 1–128 of `[A-Za-z0-9_-]`.
pub fn is_request_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl QueueRequest {
    pub fn load(path: &Path) -> Result<QueueRequest, FormatError> {
        Self::parse(&read_file(path)?, path)
    }

    pub fn parse(bytes: &[u8], file: &Path) -> Result<QueueRequest, FormatError> {
        let r: QueueRequest = parse_json(bytes, file)?;
        let mut p = Problems::default();
        if !is_request_id(&r.id) {
            p.push("id", format!("{:?} must be 1-128 of [A-Za-z0-9_-]", r.id));
        }
        if r.bottle.is_empty() {
            p.push("bottle", "must not be empty");
        }
        if r.tool.is_empty() {
            p.push("tool", "must not be empty");
        }
        if humantime::parse_rfc3339(&r.created_at).is_err() {
            p.push("created_at", format!("{:?} is not an RFC 3339 UTC time", r.created_at));
        }
        p.into_result(file, r)
    }
}

impl QueueResponse {
    pub fn load(path: &Path) -> Result<QueueResponse, FormatError> {
        Self::parse(&read_file(path)?, path)
    }

    pub fn parse(bytes: &[u8], file: &Path) -> Result<QueueResponse, FormatError> {
        let r: QueueResponse = parse_json(bytes, file)?;
        let mut p = Problems::default();
        if r.status == ResponseStatus::Modified && r.arguments.is_none() {
            p.push("arguments", "required when status is \"modified\"");
        }
        p.into_result(file, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let req = QueueRequest {
            id: "r-1".into(),
            bottle: "b".into(),
            tool: "ask_operator".into(),
            arguments: serde_json::json!({"question": "ok?"}),
            created_at: "2026-11-27T06:00:00.000Z".into(),
        };
        let bytes = serde_json::to_vec(&req).unwrap();
        assert_eq!(QueueRequest::parse(&bytes, Path::new("r-1.request.json")).unwrap(), req);
        let resp = QueueResponse {
            status: ResponseStatus::Modified,
            notes: "n".into(),
            arguments: Some(serde_json::json!({})),
        };
        let bytes = serde_json::to_vec(&resp).unwrap();
        assert_eq!(QueueResponse::parse(&bytes, Path::new("x")).unwrap(), resp);
    }

    #[test]
    fn bad_records() {
        let f = Path::new("q.json");
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"id":"../x","bottle":"b","tool":"t","arguments":{},"created_at":"2026-01-01T00:00:00Z"}"#,
                "id",
                "[A-Za-z0-9_-]",
            ),
            (r#"{"id":"a","bottle":"b","tool":"t","arguments":{},"created_at":"yesterday"}"#, "created_at", "RFC 3339"),
            (
                r#"{"id":"a","bottle":"b","tool":"t","arguments":{},"created_at":"2026-01-01T00:00:00Z","x":1}"#,
                "x",
                "unknown field `x`",
            ),
        ];
        for (doc, key, frag) in cases {
            let err = QueueRequest::parse(doc.as_bytes(), f).unwrap_err();
            assert_eq!(&err.problems[0].key, key, "{err}");
            assert!(err.to_string().contains(frag), "{err}");
        }
        let err = QueueResponse::parse(br#"{"status":"maybe"}"#, f).unwrap_err();
        assert!(err.to_string().contains("unknown variant `maybe`"), "{err}");
        let err = QueueResponse::parse(br#"{"status":"modified"}"#, f).unwrap_err();
        assert_eq!(err.problems[0].key, "arguments");
    }
}
