//! `extends`: loading a bottle's parents (depth first, each file once, cycles and missing
//! parents reported where they are named) and merging the chain into one [`Resolved`] bottle.
//!
//! Merge rules, parents first and the child last: scalars and whole objects — the child wins;
//! `env` and `hosts` — by key; `egress.routes` — concatenated; `git-gate.repos` — by name (the
//! child's entry replaces the parent's); `agent_provider` — the child's replaces the parent's
//! whole (an image from one file and a command from another would be a bottle nobody wrote).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use super::types::{AgentFile, AgentProvider, BottleFile, GitUser, RepoSpec, RouteSpec, SuperviseSpec};
use super::validate::{self, EnvSource};
use super::{Loc, Parsed, Problem, Search, Sourced, parse_file};

/// One launch's manifests, merged: what the plan is computed from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The bottles asked for, in order.
    pub bottles: Vec<String>,
    /// Every bottle file merged, parents first.
    pub files: Vec<PathBuf>,
    pub agent: Option<AgentInfo>,
    pub env: BTreeMap<String, Sourced<EnvSource>>,
    pub git_user: Option<Sourced<GitUser>>,
    pub repos: BTreeMap<String, Sourced<RepoSpec>>,
    pub routes: Vec<Sourced<RouteSpec>>,
    pub egress_log: Option<u8>,
    pub upstream_ca: Option<Sourced<String>>,
    pub supervise: SuperviseSpec,
    pub agent_provider: Option<Sourced<AgentProvider>>,
    pub hosts: BTreeMap<String, Sourced<String>>,
    /// Every file's line index, for the lines of keys inside merged values.
    #[serde(skip)]
    pub(crate) lines: BTreeMap<PathBuf, super::yaml::Lines>,
}

impl Resolved {
    /// Where `sub` (a JSON pointer below `value`, e.g. `/auth/token_ref`) was written.
    pub fn loc_in<T>(&self, value: &Sourced<T>, sub: &str) -> Loc {
        let pointer = format!("{}{sub}", value.pointer);
        Loc {
            file: value.at.file.clone(),
            line: self.lines.get(&value.at.file).and_then(|l| l.line(&pointer)).or(value.at.line),
            key: super::yaml::key_path(&pointer),
        }
    }
}

/// The agent manifest's part.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    pub file: PathBuf,
    /// The manifest's body.
    pub prompt: String,
    pub skills: Vec<Sourced<String>>,
}

pub(crate) struct Loader<'a, 'p> {
    search: &'a Search<'a>,
    problems: &'p mut Vec<Problem>,
    /// Files already in the chain (a diamond merges its common parent once).
    done: HashSet<PathBuf>,
    stack: Vec<String>,
}

impl<'a, 'p> Loader<'a, 'p> {
    pub(crate) fn new(search: &'a Search<'a>, problems: &'p mut Vec<Problem>) -> Self {
        Loader { search, problems, done: HashSet::new(), stack: Vec::new() }
    }

    /// `name` and everything it extends, parents first; `None` when anything was wrong (the
    /// problems are recorded). `named_at` is where `name` was referenced, for a missing file.
    pub(crate) fn load(&mut self, name: &str, named_at: Option<Loc>) -> Option<Vec<Parsed<BottleFile>>> {
        let file = self.search.bottle(name);
        let at = named_at.clone().unwrap_or(Loc { file: file.clone(), line: None, key: String::new() });
        if !validate::is_manifest_name(name) {
            self.problems.push(Problem {
                at,
                message: format!("{name:?} is not a bottle name (letters, digits, '.', '_', '-')"),
            });
            return None;
        }
        if self.stack.iter().any(|n| n == name) {
            let cycle = self.stack.iter().chain(std::iter::once(&name.to_string())).cloned().collect::<Vec<_>>();
            self.problems.push(Problem { at, message: format!("extends cycle: {}", cycle.join(" → ")) });
            return None;
        }
        if self.done.contains(&file) {
            return Some(Vec::new());
        }
        if !file.is_file() {
            self.problems
                .push(Problem { at, message: format!("no bottle {name:?}: {} does not exist", file.display()) });
            return None;
        }
        let parsed = parse_file::<BottleFile>(&file, self.problems, validate::bottle);
        // Even a file with problems has its parents read, so that all problems are reported.
        let parents = match &parsed {
            Some(p) => p
                .front
                .extends
                .as_ref()
                .map(|e| (e.to_vec(), matches!(e, super::types::OneOrMany::Many(_)), p.lines.clone())),
            None => raw_extends(&file),
        };
        self.stack.push(name.to_string());
        let mut chain = Vec::new();
        let mut ok = parsed.is_some();
        if let Some((names, many, lines)) = parents {
            for (i, parent) in names.iter().enumerate() {
                let pointer = if many { format!("/extends/{i}") } else { "/extends".to_string() };
                let at = Loc { file: file.clone(), line: lines.line(&pointer), key: super::yaml::key_path(&pointer) };
                match self.load(parent, Some(at)) {
                    Some(c) => chain.extend(c),
                    None => ok = false,
                }
            }
        }
        self.stack.pop();
        self.done.insert(file);
        chain.extend(parsed);
        ok.then_some(chain)
    }
}

/// Merges `layers` (parents first) and the agent into one bottle.
pub(crate) fn merge(
    bottles: Vec<String>,
    layers: Vec<Parsed<BottleFile>>,
    agent: Option<Parsed<AgentFile>>,
) -> Resolved {
    let mut r = Resolved {
        bottles,
        files: layers.iter().map(|l| l.file.clone()).collect(),
        agent: None,
        env: BTreeMap::new(),
        git_user: None,
        repos: BTreeMap::new(),
        routes: Vec::new(),
        egress_log: None,
        upstream_ca: None,
        supervise: SuperviseSpec::default(),
        agent_provider: None,
        hosts: BTreeMap::new(),
        lines: layers.iter().map(|l| (l.file.clone(), l.lines.clone())).collect(),
    };
    for layer in &layers {
        let b = &layer.front;
        for (k, v) in &b.env {
            let parsed = EnvSource::parse(v).expect("checked when the file was loaded");
            r.env.insert(k.clone(), sourced(layer, parsed, format!("/env/{}", super::yaml::escape(k))));
        }
        for (k, v) in &b.hosts {
            r.hosts.insert(k.clone(), sourced(layer, v.clone(), format!("/hosts/{}", super::yaml::escape(k))));
        }
        if let Some(g) = &b.git_gate {
            if let Some(u) = &g.user {
                r.git_user = Some(sourced(layer, u.clone(), "/git-gate/user".into()));
            }
            for (name, repo) in &g.repos {
                r.repos.insert(
                    name.clone(),
                    sourced(layer, repo.clone(), format!("/git-gate/repos/{}", super::yaml::escape(name))),
                );
            }
        }
        if let Some(e) = &b.egress {
            for (i, route) in e.routes.iter().enumerate() {
                r.routes.push(sourced(layer, route.clone(), format!("/egress/routes/{i}")));
            }
            if e.log.is_some() {
                r.egress_log = e.log;
            }
            if let Some(ca) = &e.upstream_ca {
                r.upstream_ca = Some(sourced(layer, ca.clone(), "/egress/upstream_ca".into()));
            }
        }
        if let Some(s) = &b.supervise {
            if s.enabled.is_some() {
                r.supervise.enabled = s.enabled;
            }
            if s.wait_timeout.is_some() {
                r.supervise.wait_timeout = s.wait_timeout;
            }
        }
        if let Some(p) = &b.agent_provider {
            r.agent_provider = Some(sourced(layer, p.clone(), "/agent_provider".into()));
        }
    }
    if let Some(a) = agent {
        r.lines.insert(a.file.clone(), a.lines.clone());
        if let Some(u) = a.front.git_gate.as_ref().and_then(|g| g.user.clone()) {
            r.git_user = Some(a.sourced(u, "/git-gate/user".into()));
        }
        r.agent = Some(AgentInfo {
            skills: a
                .front
                .skills
                .iter()
                .enumerate()
                .map(|(i, s)| a.sourced(s.clone(), format!("/skills/{i}")))
                .collect(),
            file: a.file,
            prompt: a.body,
        });
    }
    r
}

fn sourced<T, F>(layer: &Parsed<F>, value: T, pointer: String) -> Sourced<T> {
    layer.sourced(value, pointer)
}

/// The `extends` of a file that did not load (its problems are already recorded): names that
/// are strings, with the file's lines.
fn raw_extends(file: &std::path::Path) -> Option<(Vec<String>, bool, super::yaml::Lines)> {
    let doc = super::yaml::parse(&std::fs::read_to_string(file).ok()?).ok()?;
    match doc.front.get("extends")? {
        serde_json::Value::String(s) => Some((vec![s.clone()], false, doc.lines)),
        serde_json::Value::Array(items) => {
            Some((items.iter().filter_map(|v| v.as_str().map(String::from)).collect(), true, doc.lines))
        }
        _ => None,
    }
}
