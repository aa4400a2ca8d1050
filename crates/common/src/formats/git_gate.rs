//! git-gate `config.json`: the repos a bottle's gate serves and how pushes are forwarded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{FormatError, Problems, parse_json, read_file};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitGateConfig {
    pub version: u32,
    pub user: GitUser,
    pub repos: Vec<RepoConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitUser {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Served as `/<name>.git`.
    pub name: String,
    /// Any URL `git` accepts; ssh in production, `file://` in tests.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<PathBuf>,
    #[serde(default)]
    pub push: PushPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPolicy {
    /// Glob patterns over branch names (`*`, `feature/*`, `agent-?`).
    #[serde(default = "default_branches")]
    pub branches: Vec<String>,
    #[serde(default)]
    pub allow_force: bool,
    #[serde(default)]
    pub allow_delete: bool,
    #[serde(default = "yes")]
    pub allow_tags: bool,
}

impl Default for PushPolicy {
    fn default() -> Self {
        PushPolicy { branches: default_branches(), allow_force: false, allow_delete: false, allow_tags: true }
    }
}

fn default_branches() -> Vec<String> {
    vec!["*".into()]
}

fn yes() -> bool {
    true
}

impl RepoConfig {
    /// True when `url` reaches the upstream over SSH (`ssh://…` or scp-like `user@host:path`).
    pub fn is_ssh(&self) -> bool {
        is_ssh_url(&self.url)
    }
}

/// `ssh://`, `git+ssh://`, `ssh+git://`, or scp-like `[user@]host:path` (no scheme, a colon
/// before any slash).
pub fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return matches!(scheme, "ssh" | "git+ssh" | "ssh+git");
    }
    match (url.find(':'), url.find('/')) {
        (Some(c), Some(s)) => c < s && c > 0,
        (Some(c), None) => c > 0,
        _ => false,
    }
}

/// A repo name the gate may serve: `[A-Za-z0-9._-]`, not starting with `.`, no `..`.
pub fn is_repo_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && !s.contains("..")
        && !s.ends_with(".git")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl GitGateConfig {
    pub fn load(path: &Path) -> Result<GitGateConfig, FormatError> {
        Self::parse(&read_file(path)?, path)
    }

    pub fn parse(bytes: &[u8], file: &Path) -> Result<GitGateConfig, FormatError> {
        let c: GitGateConfig = parse_json(bytes, file)?;
        c.validate(file)
    }

    pub fn validate(self, file: &Path) -> Result<GitGateConfig, FormatError> {
        let mut p = Problems::default();
        if self.version != 1 {
            p.push("version", format!("unsupported version {} (this build reads version 1)", self.version));
        }
        if self.user.name.trim().is_empty() {
            p.push("user.name", "must not be empty");
        }
        if !self.user.email.contains('@') || self.user.email.contains(char::is_whitespace) {
            p.push("user.email", format!("{:?} is not an email address", self.user.email));
        }
        let mut seen = HashSet::new();
        for (i, r) in self.repos.iter().enumerate() {
            let k = format!("repos[{i}]");
            if !is_repo_name(&r.name) {
                p.push(
                    format!("{k}.name"),
                    format!(
                        "{:?} must be letters, digits, '.', '_' or '-' (no leading '.', no '..', no '.git' suffix)",
                        r.name
                    ),
                );
            } else if !seen.insert(r.name.as_str()) {
                p.push(format!("{k}.name"), format!("{:?} is configured twice", r.name));
            }
            if r.url.trim().is_empty() {
                p.push(format!("{k}.url"), "must not be empty");
            } else if r.url.starts_with('-') || r.url.contains(['\n', '\0']) {
                p.push(format!("{k}.url"), format!("{:?} is not a usable git URL", r.url));
            }
            if r.is_ssh() {
                if r.identity_file.is_none() {
                    p.push(format!("{k}.identity_file"), "required for an ssh url");
                }
                if r.known_hosts_file.is_none() {
                    p.push(format!("{k}.known_hosts_file"), "required for an ssh url");
                }
            }
            for (j, b) in r.push.branches.iter().enumerate() {
                if b.is_empty() || b.contains(char::is_whitespace) || b.starts_with("refs/") {
                    p.push(
                        format!("{k}.push.branches[{j}]"),
                        format!("{b:?} must be a glob over branch names (without refs/heads/)"),
                    );
                }
            }
        }
        p.into_result(file, self)
    }

    pub fn repo(&self, name: &str) -> Option<&RepoConfig> {
        self.repos.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "version": 1,
      "user": {"name": "agent", "email": "agent@bottle.invalid"},
      "repos": [
        {"name": "app", "url": "ssh://git@git.example.com:22/org/app.git",
         "identity_file": "/etc/bot-bottle/git-gate/creds/app-key",
         "known_hosts_file": "/etc/bot-bottle/git-gate/creds/app-known_hosts",
         "push": {"branches": ["*"], "allow_force": false, "allow_delete": false, "allow_tags": true}}
      ]
    }"#;

    fn parse(s: &str) -> Result<GitGateConfig, FormatError> {
        GitGateConfig::parse(s.as_bytes(), Path::new("config.json"))
    }

    #[test]
    fn contract_example_round_trips() {
        let c = parse(FULL).unwrap();
        assert!(c.repos[0].is_ssh());
        assert_eq!(c.repo("app").unwrap().push, PushPolicy::default());
        assert_eq!(parse(&serde_json::to_string(&c).unwrap()).unwrap(), c);
    }

    #[test]
    fn push_defaults_and_file_urls() {
        let c = parse(
            r#"{"version":1,"user":{"name":"a","email":"a@b"},"repos":[{"name":"app","url":"file:///tmp/up.git"}]}"#,
        )
        .unwrap();
        assert_eq!(c.repos[0].push, PushPolicy::default());
        assert!(!c.repos[0].is_ssh());
    }

    #[test]
    fn ssh_url_forms() {
        for u in ["ssh://git@h/x.git", "git@github.com:org/x.git", "h:x", "git+ssh://h/x"] {
            assert!(is_ssh_url(u), "{u}");
        }
        for u in ["file:///tmp/x", "/tmp/x.git", "https://h/x.git", "./rel:x"] {
            assert!(!is_ssh_url(u), "{u}");
        }
    }

    #[test]
    fn bad_input_names_key_and_problem() {
        let user = r#""user":{"name":"a","email":"a@b"}"#;
        let cases: Vec<(String, &str, &str)> = vec![
            (format!(r#"{{"version":1,{user},"repos":[],"extra":true}}"#), "extra", "unknown field `extra`"),
            (
                format!(r#"{{"version":1,{user},"repos":[{{"name":"../x","url":"file:///x"}}]}}"#),
                "repos[0].name",
                "letters, digits",
            ),
            (
                format!(
                    r#"{{"version":1,{user},"repos":[{{"name":"a","url":"file:///x"}},{{"name":"a","url":"file:///y"}}]}}"#
                ),
                "repos[1].name",
                "twice",
            ),
            (
                format!(r#"{{"version":1,{user},"repos":[{{"name":"a","url":"ssh://h/x"}}]}}"#),
                "repos[0].identity_file",
                "required for an ssh url",
            ),
            (
                format!(r#"{{"version":1,{user},"repos":[{{"name":"a","url":"-oProxyCommand=x"}}]}}"#),
                "repos[0].url",
                "not a usable git URL",
            ),
            (
                format!(r#"{{"version":1,{user},"repos":[{{"name":"a","url":"file:///x","push":{{"force":true}}}}]}}"#),
                "repos[0].push.force",
                "unknown field `force`",
            ),
            (
                format!(
                    r#"{{"version":1,{user},"repos":[{{"name":"a","url":"file:///x","push":{{"branches":["refs/heads/x"]}}}}]}}"#
                ),
                "repos[0].push.branches[0]",
                "glob over branch names",
            ),
            (
                r#"{"version":1,"user":{"name":"a","email":"nope"},"repos":[]}"#.to_string(),
                "user.email",
                "not an email",
            ),
            (r#"{"version":1,"repos":[]}"#.to_string(), "", "missing field `user`"),
        ];
        for (doc, key, fragment) in &cases {
            let err = parse(doc).unwrap_err();
            assert_eq!(&err.problems[0].key, key, "{doc}: {err}");
            assert!(err.problems[0].message.contains(fragment), "{doc}: {err}");
        }
    }
}
