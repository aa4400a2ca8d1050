//! The shared file formats of docs/interfaces.md as serde types: `routes.json` (orchestrator →
//! egress-proxy), git-gate `config.json` (orchestrator → git-gate) and the supervise queue
//! records (daemons ↔ operator).
//!
//! Every loader rejects unknown keys and bad values, and reports **every** problem at once in a
//! [`FormatError`] naming the file, the key path (`routes[2].auth.token_env`) and, for syntax
//! errors, the line.

pub mod git_gate;
pub mod queue;
pub mod routes;

use std::fmt;
use std::path::{Path, PathBuf};

pub use git_gate::GitGateConfig;
pub use queue::{QueueRequest, QueueResponse, ResponseStatus};
pub use routes::Routes;

/// One thing wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path inside the document, e.g. `routes[0].port`; empty for the whole document.
    pub key: String,
    /// 1-based line, where known (syntax and type errors).
    pub line: Option<usize>,
    pub message: String,
}

/// A file that could not be loaded, with everything wrong in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl std::error::Error for FormatError {}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if !p.key.is_empty() {
                write!(f, ": {}", p.key)?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

/// Collects validation problems under a key path.
#[derive(Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), line: None, message: message.into() });
    }

    pub(crate) fn into_result<T>(self, file: &Path, value: T) -> Result<T, FormatError> {
        if self.0.is_empty() { Ok(value) } else { Err(FormatError { file: file.to_path_buf(), problems: self.0 }) }
    }
}

/// Deserializes JSON, turning serde's error into a [`FormatError`] with key path and line.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &Path) -> Result<T, FormatError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.to_string();
        // serde_json appends " at line L column C"; the line is reported separately.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        FormatError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                key: if key == "." { String::new() } else { key },
                line: (inner.line() > 0).then_some(inner.line()),
                message,
            }],
        }
    })
}

/// Reads a file for a loader, mapping I/O errors to a [`FormatError`] naming the file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, FormatError> {
    std::fs::read(path).map_err(|e| FormatError {
        file: path.to_path_buf(),
        problems: vec![Problem { key: String::new(), line: None, message: format!("cannot read: {e}") }],
    })
}

/// True for a name usable as an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for a DNS name (letters, digits, hyphens, dots; labels 1–63, total ≤ 253).
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
