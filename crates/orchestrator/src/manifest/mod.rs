//! Manifests: Markdown files with YAML front matter. Bottles come only from the operator's home
//! (`$BOT_BOTTLE_HOME/bottles/`); agents from the home or the repository's
//! `./.bot-bottle/agents/` (a repository's `./.bot-bottle/bottles/` is ignored with a warning:
//! a repository never defines or widens a bottle).
//!
//! Loading a manifest: [`yaml::parse`] → the JSON Schema of [`types`] (every unknown key, every
//! wrong type, all at once) → serde → per-file semantic checks → `extends` resolved and merged
//! ([`merge`]). Every problem names file, line and key; all problems of all files are reported
//! together in one [`ManifestError`].

mod merge;
pub mod types;
mod validate;
pub(crate) mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use merge::{AgentInfo, Resolved};
use types::AgentFile;
pub use validate::{EnvSource, parse_host_key, parse_user, route_json};

use crate::home::Home;

/// Where a value was set: file, line and key path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loc {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        Ok(())
    }
}

/// A value with the place it was set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    #[serde(skip)]
    pub at: Loc,
    /// The JSON pointer of the value in its file (for the lines of keys inside it).
    #[serde(skip)]
    pub pointer: String,
}

impl<T> Sourced<T> {
    /// A path written in the manifest, resolved: `~/…` against `$HOME`, relative against the
    /// manifest's directory.
    pub fn resolve_path(&self, written: &str) -> PathBuf {
        resolve_path(&self.at.file, written)
    }
}

pub(crate) fn resolve_path(manifest: &Path, written: &str) -> PathBuf {
    if let Some(rest) = written.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    let p = Path::new(written);
    let joined = if p.is_absolute() { p.to_path_buf() } else { manifest.parent().unwrap_or(Path::new(".")).join(p) };
    // `bottles/../keys/x` → `keys/x`, for messages and plans people read.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir if out.parent().is_some() => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// One thing wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub at: Loc,
    pub message: String,
}

/// Everything wrong with the manifests of one launch. Exit code 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError(pub Vec<Problem>);

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{} in the manifests:", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            write!(f, "\n  {}: {}", p.at, p.message)?;
        }
        Ok(())
    }
}

/// Collects problems for one file.
pub(crate) struct FileProblems<'a> {
    file: &'a Path,
    lines: &'a yaml::Lines,
    out: &'a mut Vec<Problem>,
}

impl FileProblems<'_> {
    /// A problem at a JSON pointer (`/egress/routes/0/host`).
    pub(crate) fn at(&mut self, pointer: &str, message: impl Into<String>) {
        self.out.push(Problem { at: self.loc(pointer), message: message.into() });
    }

    pub(crate) fn loc(&self, pointer: &str) -> Loc {
        Loc { file: self.file.to_path_buf(), line: self.lines.line(pointer), key: yaml::key_path(pointer) }
    }
}

/// A parsed, schema-valid, checked manifest file.
#[derive(Debug, Clone)]
pub(crate) struct Parsed<T> {
    pub(crate) file: PathBuf,
    pub(crate) front: T,
    pub(crate) body: String,
    pub(crate) lines: yaml::Lines,
}

impl<T> Parsed<T> {
    pub(crate) fn loc(&self, pointer: &str) -> Loc {
        Loc { file: self.file.clone(), line: self.lines.line(pointer), key: yaml::key_path(pointer) }
    }

    pub(crate) fn sourced<V>(&self, value: V, pointer: String) -> Sourced<V> {
        Sourced { value, at: self.loc(&pointer), pointer }
    }
}

/// The JSON Schema of a manifest kind's front matter. An optional key is described by its
/// type alone (not "that type or null"): a key set to nothing is reported as such, and a wrong
/// value inside an optional section is reported where it is rather than as "matches neither".
pub fn schema<T: schemars::JsonSchema>() -> serde_json::Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).expect("a schema serializes");
    drop_null_alternatives(&mut v);
    v
}

fn drop_null_alternatives(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(alts)) = map.get("anyOf")
                && alts.len() == 2
                && let Some(i) = alts.iter().position(|a| a == &serde_json::json!({"type": "null"}))
            {
                let keep = alts[1 - i].clone();
                map.remove("anyOf");
                if let Value::Object(inner) = keep {
                    for (k, val) in inner {
                        map.entry(k).or_insert(val);
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types[0].clone();
                    map.insert("type".into(), t);
                }
            }
            for child in map.values_mut() {
                drop_null_alternatives(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_alternatives),
        _ => {}
    }
}

/// Reads, validates (schema, then `check`) and deserializes one manifest file, adding every
/// problem to `out`. `None` when anything was wrong.
pub(crate) fn parse_file<T: DeserializeOwned + schemars::JsonSchema>(
    file: &Path,
    out: &mut Vec<Problem>,
    check: impl FnOnce(&T, &mut FileProblems<'_>),
) -> Option<Parsed<T>> {
    let whole =
        |message: String| Problem { at: Loc { file: file.to_path_buf(), line: None, key: String::new() }, message };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            out.push(whole(format!("cannot read: {e}")));
            return None;
        }
    };
    let doc = match yaml::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            out.push(Problem {
                at: Loc { file: file.to_path_buf(), line: e.line, key: String::new() },
                message: e.message,
            });
            return None;
        }
    };
    let before = out.len();
    let mut problems = FileProblems { file, lines: &doc.lines, out };
    validate::against_schema(&schema::<T>(), &doc.front, &mut problems);
    if out.len() > before {
        return None;
    }
    let front: T = match serde_json::from_value(doc.front) {
        Ok(v) => v,
        Err(e) => {
            // The schema accepted it, so this is a gap between schema and types: still a clear
            // error rather than a panic.
            out.push(whole(format!("invalid front matter: {e}")));
            return None;
        }
    };
    let mut problems = FileProblems { file, lines: &doc.lines, out };
    check(&front, &mut problems);
    if out.len() > before {
        return None;
    }
    Some(Parsed { file: file.to_path_buf(), front, body: doc.body, lines: doc.lines })
}

/// Where manifests are looked up.
pub struct Search<'a> {
    pub home: &'a Home,
    /// The directory `./.bot-bottle/` is looked up in (the operator's working directory).
    pub cwd: &'a Path,
}

impl Search<'_> {
    fn repo_dir(&self) -> PathBuf {
        self.cwd.join(".bot-bottle")
    }

    /// `agents/<name>.md`: the home's first, then the repository's.
    fn agent(&self, name: &str) -> Option<PathBuf> {
        [self.home.agents_dir(), self.repo_dir().join("agents")]
            .into_iter()
            .map(|d| d.join(format!("{name}.md")))
            .find(|p| p.is_file())
    }

    fn bottle(&self, name: &str) -> PathBuf {
        self.home.bottles_dir().join(format!("{name}.md"))
    }

    /// `skills/<name>/`: the home's first, then the repository's.
    pub(crate) fn skill(&self, name: &str) -> Option<PathBuf> {
        [self.home.root().join("skills"), self.repo_dir().join("skills")]
            .into_iter()
            .map(|d| d.join(name))
            .find(|p| p.is_dir())
    }
}

/// What `start` was asked to launch.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub agent: Option<String>,
    pub bottles: Vec<String>,
}

/// Loads the agent and bottle manifests of a launch, resolves `extends` and merges them.
/// Returns the result and warnings (e.g. an ignored `./.bot-bottle/bottles/`).
pub fn load(search: &Search<'_>, request: &Request) -> Result<(Resolved, Vec<String>), ManifestError> {
    let mut warnings = Vec::new();
    let ignored = search.repo_dir().join("bottles");
    if ignored.is_dir() {
        warnings.push(format!(
            "ignoring {}: repositories never define bottles (bottles live in {})",
            ignored.display(),
            search.home.bottles_dir().display()
        ));
    }
    let mut problems = Vec::new();
    let agent = match &request.agent {
        None => None,
        Some(name) => {
            let file = validate::is_manifest_name(name).then(|| search.agent(name)).flatten();
            let Some(file) = file else {
                let expected = search.home.agents_dir().join(format!("{name}.md"));
                return Err(ManifestError(vec![Problem {
                    at: Loc { file: expected.clone(), line: None, key: String::new() },
                    message: format!(
                        "no agent {name:?}: looked for {} and {}",
                        expected.display(),
                        search.repo_dir().join("agents").join(format!("{name}.md")).display()
                    ),
                }]));
            };
            parse_file::<AgentFile>(&file, &mut problems, |a, p| validate::agent(a, p, search))
        }
    };
    let bottle_names: Vec<(String, Option<Loc>)> = if !request.bottles.is_empty() {
        request.bottles.iter().map(|b| (b.clone(), None)).collect()
    } else if let Some(a) = &agent
        && let Some(b) = &a.front.bottle
    {
        let many = matches!(b, types::OneOrMany::Many(_));
        b.to_vec()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, Some(a.loc(&if many { format!("/bottle/{i}") } else { "/bottle".into() }))))
            .collect()
    } else if problems.is_empty() {
        return Err(ManifestError(vec![Problem {
            at: Loc {
                file: agent.as_ref().map(|a| a.file.clone()).unwrap_or_else(|| PathBuf::from("bot-bottle start")),
                line: None,
                key: if agent.is_some() { "bottle".into() } else { String::new() },
            },
            message: "no bottle to launch: name one with --bottle, or give the agent a `bottle` key".into(),
        }]));
    } else {
        return Err(ManifestError(problems));
    };
    let mut loader = merge::Loader::new(search, &mut problems);
    let mut layers = Vec::new();
    for (name, referenced_at) in &bottle_names {
        if let Some(chain) = loader.load(name, referenced_at.clone()) {
            layers.extend(chain);
        }
    }
    if !problems.is_empty() {
        return Err(ManifestError(problems));
    }
    let resolved = merge::merge(bottle_names.iter().map(|(n, _)| n.clone()).collect(), layers, agent);
    let mut problems = Vec::new();
    validate::merged(&resolved, &mut problems);
    if problems.is_empty() { Ok((resolved, warnings)) } else { Err(ManifestError(problems)) }
}

#[cfg(test)]
mod tests;
