//! The bottle's state directory: the CA minted, and every file of the plan written with the
//! owner and mode its reader needs (bundle-only files 0600, owned by the bundle's uid when
//! bot-bottle runs as root; agent files world-readable — they hold nothing secret).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::Secret;

use crate::plan::{BottlePlan, FileContent, Reader, provision};

/// The bottle CA, PEM.
pub struct Ca {
    pub cert: String,
    pub key: Secret,
}

/// Mints the bottle's egress CA: ECDSA P-256, valid 30 days, for signing leaf certificates only.
pub fn mint_ca(slug: &str) -> anyhow::Result<Ca> {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().context("generating the bottle CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("bot-bottle {slug} egress CA"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(300);
    params.not_after = now + std::time::Duration::from_secs(30 * 24 * 3600);
    let cert = params.self_signed(&key).context("signing the bottle CA")?;
    Ok(Ca { cert: cert.pem(), key: Secret::new(key.serialize_pem()) })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Who owns what: `bundle` is the uid/gid the bundle runs as; ownership is only changed when
/// bot-bottle runs as root (otherwise the bundle runs as the operator).
pub struct Owners {
    pub bundle: (u32, u32),
    pub chown: bool,
}

impl Owners {
    pub fn for_plan(plan: &BottlePlan, euid: u32) -> Owners {
        let (u, g) = plan.bundle.user.split_once(':').unwrap_or(("0", "0"));
        Owners { bundle: (u.parse().unwrap_or(0), g.parse().unwrap_or(0)), chown: euid == 0 }
    }

    fn give(&self, path: &Path, reader: Reader) -> anyhow::Result<()> {
        if self.chown && reader == Reader::Bundle {
            std::os::unix::fs::chown(path, Some(self.bundle.0), Some(self.bundle.1))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }
}

/// Creates `dir` (and parents) with `mode`, owned for `reader`.
pub fn make_dir(dir: &Path, mode: u32, reader: Reader, owners: &Owners) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))?;
    owners.give(dir, reader)
}

/// The state directory's subdirectories, each with its reader.
const DIRS: [(&str, u32, Reader); 7] = [
    ("ca", 0o700, Reader::Bundle),
    ("egress", 0o755, Reader::Bundle),
    ("git-gate", 0o700, Reader::Bundle),
    ("git-gate/creds", 0o700, Reader::Bundle),
    ("supervise", 0o700, Reader::Bundle),
    ("log", 0o755, Reader::Bundle),
    ("agent", 0o755, Reader::Agent),
];

/// Writes every file of the plan into its state directory.
pub fn write_state(
    plan: &BottlePlan,
    ca: &Ca,
    supervise_token: Option<&Secret>,
    owners: &Owners,
) -> anyhow::Result<()> {
    for (dir, mode, reader) in DIRS {
        make_dir(&plan.state_dir.join(dir), mode, reader, owners)?;
    }
    for f in &plan.files {
        if matches!(f.content, FileContent::ProvisionedKey { .. }) {
            continue; // the `keys` step writes it once the forge has the public half
        }
        let path = plan.state_dir.join(&f.path);
        let bytes: Vec<u8> = match &f.content {
            FileContent::Text { text } => text.clone().into_bytes(),
            FileContent::CaCert => ca.cert.clone().into_bytes(),
            FileContent::CaKey => ca.key.expose().as_bytes().to_vec(),
            FileContent::CopyOf { source } => {
                std::fs::read(source).with_context(|| format!("reading {}", source.display()))?
            }
            FileContent::SuperviseToken => token_of(supervise_token)?.expose().as_bytes().to_vec(),
            // Written by `write_endpoint_files` once the bundle's address is known.
            FileContent::McpConfig | FileContent::GitConfig { .. } => continue,
            // Until the image's roots are known, the bottle CA alone; see `write_ca_bundle`.
            FileContent::CaBundle => provision::ca_bundle("", &ca.cert).into_bytes(),
            FileContent::ProvisionedKey { .. } => unreachable!("skipped above"),
        };
        write(&path, &bytes, f.reader, owners)?;
    }
    Ok(())
}

/// The agent's files that name the bundle's ports (its git config and MCP config), written once
/// the ports are known: at once on an internal network, after the bundle starts on a loopback
/// link.
pub fn write_endpoint_files(
    plan: &BottlePlan,
    endpoints: &provision::Endpoints,
    supervise_token: Option<&Secret>,
    owners: &Owners,
) -> anyhow::Result<()> {
    for f in &plan.files {
        let bytes = match &f.content {
            FileContent::McpConfig => {
                provision::mcp_config(&endpoints.supervise, token_of(supervise_token)?.expose()).into_bytes()
            }
            FileContent::GitConfig { name, email, repos } => {
                provision::gitconfig((name, email), &endpoints.gate, repos).into_bytes()
            }
            _ => continue,
        };
        write(&plan.state_dir.join(&f.path), &bytes, f.reader, owners)?;
    }
    Ok(())
}

fn token_of(t: Option<&Secret>) -> anyhow::Result<&Secret> {
    t.context("the plan needs a supervise token but none was minted")
}

/// Writes one file atomically with its reader's mode and owner.
pub fn write(path: &Path, bytes: &[u8], reader: Reader, owners: &Owners) -> anyhow::Result<()> {
    let mode = if reader == Reader::Agent { 0o644 } else { 0o600 };
    common::atomic::write_with_mode(path, bytes, mode).with_context(|| format!("writing {}", path.display()))?;
    owners.give(path, reader)
}

/// Rewrites `agent/ca-bundle.pem` with the image's system roots before the bottle CA. In place
/// (same inode), never by rename: the file may already be bind-mounted.
pub fn write_ca_bundle(plan: &BottlePlan, system_roots: &str, ca_cert: &str) -> anyhow::Result<PathBuf> {
    let path = plan.state_dir.join("agent/ca-bundle.pem");
    std::fs::write(&path, provision::ca_bundle(system_roots, ca_cert))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A fresh random token (256 bits, hex).
pub fn random_token() -> anyhow::Result<Secret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("reading randomness: {e}"))?;
    Ok(Secret::new(hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ca_signs_and_is_a_ca() {
        let ca = mint_ca("demo-abc123").unwrap();
        assert!(ca.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key.expose().contains("PRIVATE KEY"));
        // The egress proxy's loader accepts it.
        let key = rcgen::KeyPair::from_pem(ca.key.expose()).unwrap();
        rcgen::Issuer::from_ca_cert_pem(&ca.cert, key).unwrap();
        assert_ne!(mint_ca("x").unwrap().cert, ca.cert, "fresh each time");
    }

    #[test]
    fn tokens_are_fresh_and_long() {
        let a = random_token().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, random_token().unwrap());
    }
}
