//! Loading, merging and validating manifests from a real home on disk.

use std::path::{Path, PathBuf};

use super::*;
use crate::home::Home;

struct Fixture {
    _dir: tempfile::TempDir,
    home: Home,
    cwd: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let cwd = dir.path().join("repo");
        for d in [home.bottles_dir(), home.agents_dir(), cwd.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        Fixture { _dir: dir, home, cwd }
    }

    fn bottle(&self, name: &str, text: &str) -> PathBuf {
        let p = self.home.bottles_dir().join(format!("{name}.md"));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn agent(&self, dir: &Path, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(format!("{name}.md"));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load(&self, agent: Option<&str>, bottles: &[&str]) -> Result<(Resolved, Vec<String>), ManifestError> {
        let search = Search { home: &self.home, cwd: &self.cwd };
        load(
            &search,
            &Request { agent: agent.map(String::from), bottles: bottles.iter().map(|s| s.to_string()).collect() },
        )
    }
}

const PROVIDER: &str = "agent_provider:\n  template: command\n  image: agent:latest\n  command: [run-agent]\n";

#[test]
fn extends_merges_child_over_parents() {
    let f = Fixture::new();
    f.bottle(
        "base",
        &format!(
            "---\nextends: common\nenv:\n  A: base\n  B: base\nhosts:\n  git.test: 10.1.2.3\negress:\n  log: 2\n  routes:\n    - host: base.example\n{PROVIDER}git-gate:\n  repos:\n    app:\n      url: file:///srv/app.git\n    lib:\n      url: file:///srv/lib.git\n---\n"
        ),
    );
    f.bottle("common", "---\nenv:\n  C: common\negress:\n  routes:\n    - host: common.example\n---\n");
    f.bottle(
        "child",
        "---\nextends: [base, common]\nenv:\n  B: child\negress:\n  routes:\n    - host: child.example\ngit-gate:\n  repos:\n    app:\n      url: file:///srv/app2.git\n---\n",
    );
    let (r, warnings) = f.load(None, &["child"]).unwrap();
    assert!(warnings.is_empty());
    let names: Vec<&str> = r.files.iter().map(|p| p.file_stem().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["common", "base", "child"], "parents first, the common one once");
    let env: Vec<(&str, String)> = r
        .env
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                match &v.value {
                    EnvSource::Literal { value } => value.clone(),
                    other => format!("{other:?}"),
                },
            )
        })
        .collect();
    assert_eq!(env, [("A", "base".into()), ("B", "child".into()), ("C", "common".into())]);
    let hosts: Vec<&str> = r.routes.iter().map(|r| r.value.host.as_str()).collect();
    assert_eq!(hosts, ["common.example", "base.example", "child.example"], "routes concatenate");
    assert_eq!(r.repos["app"].value.url, "file:///srv/app2.git", "the child's repo replaces the parent's");
    assert_eq!(r.repos["lib"].value.url, "file:///srv/lib.git");
    assert_eq!(r.egress_log, Some(2));
    assert_eq!(r.hosts["git.test"].value, "10.1.2.3");
    // Where each value came from is kept, with its line.
    assert_eq!(r.env["B"].at.file, f.home.bottles_dir().join("child.md"));
    assert_eq!(r.env["B"].at.line, Some(4));
}

#[test]
fn every_problem_of_every_file_at_once_with_file_line_and_key() {
    let f = Fixture::new();
    f.bottle(
        "parent",
        "---\nenv:\n  bad-name: x\n  HTTPS_PROXY: http://elsewhere\nhosts:\n  git.test: not-an-ip\n---\n",
    );
    f.bottle(
        "child",
        "---\nextends: parent\negres: {}\negress:\n  routes:\n    - host: a.example\n      prot: 443\n    - host: b.example\n      port: 99999\nagent_provider:\n  template: command\n  command: []\n---\n",
    );
    let err = f.load(None, &["child"]).unwrap_err();
    let text = err.to_string();
    let child = f.home.bottles_dir().join("child.md").display().to_string();
    let parent = f.home.bottles_dir().join("parent.md").display().to_string();
    for expected in [
        format!("{child}:3: egres: unknown key"),
        format!("{child}:7: egress.routes[0].prot: unknown key"),
        format!("{child}:9: egress.routes[1].port:"),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    // The schema stopped the child; the parent's semantic problems are still all reported.
    for expected in [
        format!("{parent}:3: env.bad-name: \"bad-name\" is not an environment variable name"),
        format!("{parent}:4: env.HTTPS_PROXY: HTTPS_PROXY is set by bot-bottle itself"),
        format!("{parent}:6: hosts.git.test: \"not-an-ip\" is neither an IP address nor `host-gateway`"),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn semantic_checks_name_the_key() {
    let f = Fixture::new();
    f.bottle(
        "b",
        "---\nenv:\n  X: pre-${Y}\negress:\n  routes:\n    - host: api.example\n      auth: {token_ref: 9BAD}\ngit-gate:\n  repos:\n    app:\n      url: ssh://git@git.example:22/org/app.git\nagent_provider:\n  template: command\n  image: x\n  dockerfile: Dockerfile\n  command: [a]\n  user: \"0\"\n---\n",
    );
    let text = f.load(None, &["b"]).unwrap_err().to_string();
    for expected in [
        ":3: env.X: \"pre-${Y}\": only a whole value",
        ":7: egress.routes[0].auth.token_ref: \"9BAD\" is not an environment variable name",
        ":10: git-gate.repos.app: an ssh url needs `identity`",
        ":10: git-gate.repos.app: an ssh url needs `host_key`",
        ":12: agent_provider: give `image` or `dockerfile`, not both",
        ":17: agent_provider.user: \"0\" must be `uid` or `uid:gid`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn routes_are_checked_by_the_routes_json_validator_and_mapped_back() {
    let f = Fixture::new();
    f.bottle(
        "b",
        &format!("---\negress:\n  routes:\n    - host: ok.example\n    - host: \"\"\n      matches:\n        - paths: [{{type: prefix, value: no-slash}}]\n{PROVIDER}---\n"),
    );
    let err = f.load(None, &["b"]).unwrap_err();
    let keys: Vec<String> = err.0.iter().map(|p| format!("{}:{:?}", p.at.key, p.at.line)).collect();
    assert!(keys.iter().any(|k| k.starts_with("egress.routes[1].host:Some(5)")), "{err}");
    assert!(keys.iter().any(|k| k.starts_with("egress.routes[1].matches[0]")), "{err}");
}

#[test]
fn extends_cycles_and_missing_parents_are_errors_where_named() {
    let f = Fixture::new();
    f.bottle("a", "---\nextends: b\n---\n");
    f.bottle("b", "---\nextends: [c, a]\n---\n");
    f.bottle("c", "---\nextends: nowhere\n---\n");
    let err = f.load(None, &["a"]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("b.md:2: extends[1]: extends cycle: a → b → a"), "{text}");
    assert!(text.contains("c.md:2: extends: no bottle \"nowhere\""), "{text}");
}

#[test]
fn bottles_come_only_from_the_home_and_agents_from_home_then_repo() {
    let f = Fixture::new();
    f.bottle("mine", &format!("---\n{PROVIDER}---\n"));
    // A repository's bottle of the same name is ignored, with a warning.
    let repo = f.cwd.join(".bot-bottle");
    std::fs::create_dir_all(repo.join("bottles")).unwrap();
    std::fs::write(repo.join("bottles/mine.md"), "---\negress:\n  routes:\n    - host: \"*.evil.example\"\n---\n")
        .unwrap();
    f.agent(&repo.join("agents"), "helper", "---\nbottle: mine\n---\nFrom the repo.\n");
    let (r, warnings) = f.load(Some("helper"), &[]).unwrap();
    assert!(r.routes.is_empty(), "the repository's bottle must not be used");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("repositories never define bottles"), "{warnings:?}");
    assert_eq!(r.agent.as_ref().unwrap().prompt, "From the repo.");
    // The home's agent of the same name wins.
    f.agent(&f.home.agents_dir(), "helper", "---\nbottle: mine\n---\nFrom the home.\n");
    let (r, _) = f.load(Some("helper"), &[]).unwrap();
    assert_eq!(r.agent.as_ref().unwrap().prompt, "From the home.");
    // --bottle overrides the agent's bottle; an unknown agent or bottle is a clear error.
    assert!(f.load(Some("nobody"), &[]).unwrap_err().to_string().contains("no agent \"nobody\""));
    assert!(f.load(Some("helper"), &["../etc/passwd"]).unwrap_err().to_string().contains("is not a bottle name"));
    assert!(f.load(None, &[]).unwrap_err().to_string().contains("no bottle to launch"));
}

#[test]
fn a_chain_without_a_provider_and_unsupported_features_are_errors() {
    let f = Fixture::new();
    f.bottle("none", "---\nenv: {A: b}\n---\n");
    assert!(f.load(None, &["none"]).unwrap_err().to_string().contains("says what runs as the agent"));
    f.bottle("claude", "---\nagent_provider:\n  template: claude\n  auth_token: ANTHROPIC_KEY\n---\n");
    assert!(f.load(None, &["claude"]).is_ok());
    f.bottle("bare", "---\nagent_provider:\n  template: codex\n  command: [x]\n---\n");
    let err = f.load(None, &["bare"]).unwrap_err().to_string();
    assert!(err.contains("`template: codex` needs `auth_token`"), "{err}");
    assert!(err.contains("command: is for `template: command`"), "{err}");
}

#[test]
fn the_schema_rejects_unknown_keys_everywhere() {
    let bottle = schema::<types::BottleFile>();
    assert_eq!(bottle["additionalProperties"], false);
    let text = serde_json::to_string(&bottle).unwrap();
    for key in ["agent_provider", "token_ref", "upstream_ca", "provisioned_key", "host_key", "read_only_root"] {
        assert!(text.contains(key), "{key} missing from the schema");
    }
    let agent = schema::<types::AgentFile>();
    assert_eq!(agent["additionalProperties"], false);
}
