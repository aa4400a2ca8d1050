//! Ref policy for pushes: a pure decision over (policy, ref name, kind of change). The hook
//! gathers the facts (is it a create, a fast-forward, a force, a delete) and applies the answer.
//!
//! - branches (`refs/heads/<b>`): `<b>` must match one of `push.branches` (globs where `*`
//!   matches any run of characters, `/` included, and `?` any one character);
//! - tags (`refs/tags/*`): only with `allow_tags`; moving an existing tag counts as a force;
//! - force (non-fast-forward) needs `allow_force`, delete needs `allow_delete`;
//! - any other ref (`refs/notes/*`, `refs/pull/*`, ...) is refused.

use common::formats::git_gate::PushPolicy;

/// What a ref update does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    FastForward,
    /// The old tip is not an ancestor of the new one (history is rewritten).
    Force,
    Delete,
}

impl Change {
    fn describe(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::FastForward => "update",
            Change::Force => "force-push (non-fast-forward)",
            Change::Delete => "delete",
        }
    }
}

/// Decides one ref update; `Err` is the reason it is refused, naming the ref.
pub fn check(policy: &PushPolicy, refname: &str, change: Change) -> Result<(), String> {
    let what = change.describe();
    if let Some(branch) = refname.strip_prefix("refs/heads/") {
        if !policy.branches.iter().any(|p| glob_match(p, branch)) {
            return Err(format!(
                "{refname}: branch {branch:?} is not allowed (allowed branches: {})",
                policy.branches.join(", ")
            ));
        }
    } else if refname.starts_with("refs/tags/") {
        if !policy.allow_tags {
            return Err(format!("{refname}: pushing tags is not allowed"));
        }
        if change == Change::FastForward {
            // A tag that moves is rewritten, whatever the ancestry says.
            return check(policy, refname, Change::Force)
                .map_err(|_| format!("{refname}: moving an existing tag is not allowed (allow_force is off)"));
        }
    } else {
        return Err(format!("{refname}: only branches (refs/heads/*) and tags (refs/tags/*) can be pushed"));
    }
    match change {
        Change::Force if !policy.allow_force => Err(format!("{refname}: {what} is not allowed (allow_force is off)")),
        Change::Delete if !policy.allow_delete => {
            Err(format!("{refname}: {what} is not allowed (allow_delete is off)"))
        }
        _ => Ok(()),
    }
}

/// Glob over a branch name: `*` matches any run of characters (also `/`), `?` one character,
/// everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point (the last `*`): linear-ish, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(branches: &[&str], force: bool, delete: bool, tags: bool) -> PushPolicy {
        PushPolicy {
            branches: branches.iter().map(|s| s.to_string()).collect(),
            allow_force: force,
            allow_delete: delete,
            allow_tags: tags,
        }
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("*", "main", true),
            ("*", "feature/x", true),
            ("feature/*", "feature/x", true),
            ("feature/*", "feature", false),
            ("feature/*", "bugfix/x", false),
            ("agent-?", "agent-1", true),
            ("agent-?", "agent-12", false),
            ("main", "main", true),
            ("main", "mainline", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
            ("**", "x/y/z", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn defaults_allow_create_and_fast_forward_only() {
        let p = PushPolicy::default();
        assert!(check(&p, "refs/heads/main", Change::Create).is_ok());
        assert!(check(&p, "refs/heads/main", Change::FastForward).is_ok());
        let e = check(&p, "refs/heads/main", Change::Force).unwrap_err();
        assert!(e.contains("refs/heads/main") && e.contains("allow_force"), "{e}");
        let e = check(&p, "refs/heads/main", Change::Delete).unwrap_err();
        assert!(e.contains("allow_delete"), "{e}");
        assert!(check(&p, "refs/tags/v1", Change::Create).is_ok());
        assert!(check(&p, "refs/tags/v1", Change::FastForward).unwrap_err().contains("moving an existing tag"));
    }

    #[test]
    fn configured_force_and_delete() {
        let p = policy(&["*"], true, true, true);
        for c in [Change::Create, Change::FastForward, Change::Force, Change::Delete] {
            assert!(check(&p, "refs/heads/x", c).is_ok(), "{c:?}");
            assert!(check(&p, "refs/tags/v1", c).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn branch_globs_and_tags_and_other_refs() {
        let p = policy(&["agent/*"], false, false, false);
        assert!(check(&p, "refs/heads/agent/work", Change::Create).is_ok());
        let e = check(&p, "refs/heads/main", Change::FastForward).unwrap_err();
        assert!(e.contains("\"main\" is not allowed") && e.contains("agent/*"), "{e}");
        assert!(check(&p, "refs/tags/v1", Change::Create).unwrap_err().contains("pushing tags is not allowed"));
        assert!(check(&p, "refs/notes/commits", Change::Create).unwrap_err().contains("only branches"));
        assert!(check(&PushPolicy::default(), "HEAD", Change::Create).is_err());
    }
}
