//! How the gate talks to a repo's upstream: the transport environment (`GIT_SSH_COMMAND` with
//! the deploy key, pinned known_hosts and no interaction) and the `git push` that forwards a
//! vetted push atomically with a lease on every ref's old value.
//!
//! The identity file is only ever named by path inside `GIT_SSH_COMMAND` (an environment
//! variable of the child, never a command line of a long-lived process, never a log line).

use std::path::{Path, PathBuf};

use common::formats::git_gate::RepoConfig;

/// The all-zero object id git uses for "no such ref" (SHA-1 and SHA-256 lengths).
pub fn is_zero_oid(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}

/// How long an idle multiplexed upstream connection is kept open.
pub const CONTROL_PERSIST_SECS: u32 = 60;

/// `ssh` invocation for git: only this key, only this known_hosts, strict host key checking,
/// never a prompt, bounded connect time, and no user or system ssh config. Connections are
/// multiplexed through control sockets in `control_dir` (gate-private, never served), so the
/// fetch before a push and the push itself share one SSH handshake.
pub fn ssh_command(identity: &Path, known_hosts: &Path, control_dir: &Path) -> String {
    let q = |p: &Path| shell_words::quote(&p.to_string_lossy()).into_owned();
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=15 \
         -o ServerAliveCountMax=4 -o ControlMaster=auto -o ControlPath={} -o ControlPersist={CONTROL_PERSIST_SECS}",
        q(identity),
        q(known_hosts),
        q(&control_dir.join("%C")),
    )
}

/// Where the gate keeps its ssh control sockets: `<home>/ssh` (created 0700).
pub fn control_dir(home: &Path) -> PathBuf {
    let dir = home.join("ssh");
    if std::fs::create_dir_all(&dir).is_ok() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    dir
}

/// Environment for any git child that contacts `repo`'s upstream; `home` is the gate's
/// private `HOME` (see [`control_dir`]).
pub fn transport_env(repo: &RepoConfig, home: &Path) -> Vec<(&'static str, String)> {
    let mut env = vec![("GIT_ALLOW_PROTOCOL", "ssh:file:https:http:git".to_string())];
    if repo.is_ssh()
        && let (Some(id), Some(kh)) = (&repo.identity_file, &repo.known_hosts_file)
    {
        env.push(("GIT_SSH_COMMAND", ssh_command(id, kh, &control_dir(home))));
        env.push(("GIT_SSH_VARIANT", "ssh".to_string()));
    }
    env
}

/// One ref update as git hands it to pre-receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

impl RefUpdate {
    /// Parses a pre-receive stdin line `<old> <new> <ref>`.
    pub fn parse(line: &str) -> Option<RefUpdate> {
        let mut it = line.trim_end_matches(['\n', '\r']).splitn(3, ' ');
        let (old, new, name) = (it.next()?, it.next()?, it.next()?);
        let hex = |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(old) || !hex(new) || !name.starts_with("refs/") || name.contains(char::is_whitespace) {
            return None;
        }
        Some(RefUpdate { old: old.into(), new: new.into(), name: name.into() })
    }

    pub fn is_delete(&self) -> bool {
        is_zero_oid(&self.new)
    }

    pub fn is_create(&self) -> bool {
        is_zero_oid(&self.old)
    }
}

/// Arguments after `git` for forwarding `updates` to `url`: atomic, porcelain, each ref leased
/// on the old value the gate saw (so a concurrent upstream change is refused, never clobbered).
pub fn push_args(url: &str, updates: &[RefUpdate]) -> Vec<String> {
    let mut args = vec!["push".to_string(), "--atomic".into(), "--porcelain".into(), "--no-verify".into()];
    for u in updates {
        let expect = if u.is_create() { String::new() } else { u.old.clone() };
        args.push(format!("--force-with-lease={}:{expect}", u.name));
    }
    args.push("--".into());
    args.push(url.to_string());
    for u in updates {
        if u.is_delete() {
            args.push(format!(":{}", u.name));
        } else {
            args.push(format!("{}:{}", u.new, u.name));
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn parses_pre_receive_lines() {
        let u = RefUpdate::parse(&format!("{A} {B} refs/heads/main\n")).unwrap();
        assert_eq!(u, RefUpdate { old: A.into(), new: B.into(), name: "refs/heads/main".into() });
        assert!(RefUpdate::parse(&format!("{Z} {B} refs/heads/x")).unwrap().is_create());
        assert!(RefUpdate::parse(&format!("{A} {Z} refs/heads/x")).unwrap().is_delete());
        for bad in ["", "x y z", &format!("{A} {B}"), &format!("{A} {B} main"), &format!("{A} {B} refs/a b")] {
            assert!(RefUpdate::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn push_args_lease_every_ref() {
        let ups = [
            RefUpdate { old: A.into(), new: B.into(), name: "refs/heads/main".into() },
            RefUpdate { old: Z.into(), new: A.into(), name: "refs/heads/new".into() },
            RefUpdate { old: B.into(), new: Z.into(), name: "refs/heads/gone".into() },
        ];
        let args = push_args("ssh://git@h/x.git", &ups);
        assert_eq!(
            args,
            [
                "push",
                "--atomic",
                "--porcelain",
                "--no-verify",
                &format!("--force-with-lease=refs/heads/main:{A}"),
                "--force-with-lease=refs/heads/new:",
                &format!("--force-with-lease=refs/heads/gone:{B}"),
                "--",
                "ssh://git@h/x.git",
                &format!("{B}:refs/heads/main"),
                &format!("{A}:refs/heads/new"),
                ":refs/heads/gone",
            ]
        );
    }

    #[test]
    fn ssh_command_is_strict_and_quotes_paths() {
        let c = ssh_command(Path::new("/creds/app key"), Path::new("/creds/kh"), Path::new("/h/ssh"));
        assert!(c.contains("-i '/creds/app key'"), "{c}");
        for o in [
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "ConnectTimeout=10",
            "UserKnownHostsFile=/creds/kh",
        ] {
            assert!(c.contains(o), "{o} missing from {c}");
        }
        assert_eq!(shell_words::split(&c).unwrap()[4], "/creds/app key");
    }

    #[test]
    fn transport_env_only_for_ssh() {
        let mut r = RepoConfig {
            name: "a".into(),
            url: "file:///tmp/x".into(),
            identity_file: Some("/k".into()),
            known_hosts_file: Some("/kh".into()),
            push: Default::default(),
        };
        assert!(!transport_env(&r, &std::env::temp_dir()).iter().any(|(k, _)| *k == "GIT_SSH_COMMAND"));
        r.url = "ssh://git@h/x".into();
        assert!(
            transport_env(&r, &std::env::temp_dir())
                .iter()
                .any(|(k, v)| *k == "GIT_SSH_COMMAND" && v.contains("-i /k"))
        );
    }
}
