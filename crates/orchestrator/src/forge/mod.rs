//! Provisioned deploy keys: a fresh ed25519 key per bottle (minted in-process with `ssh-key`),
//! registered as a write deploy key on the repository's forge before the bundle starts, and
//! deleted at teardown. Gitea/Forgejo (`POST|DELETE {api}/repos/{owner}/{repo}/keys`) and GitHub
//! (the same paths under `https://api.github.com`), from their documented REST APIs.
//!
//! The forge token travels only in this process (a [`Secret`], sent in the `Authorization`
//! header): never on a command line, in a log line, in the bundle or in the agent. The API must
//! be `https`, except on a loopback address (a forge on this machine).

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use common::Secret;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::manifest::types::ForgeKind;

/// How long one forge call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A minted key pair: the private half in OpenSSH format (for the bundle), the public half as
/// an `authorized_keys` line (for the forge).
pub struct KeyPair {
    pub private_openssh: Secret,
    pub public: String,
}

/// Mints an ed25519 key whose comment is `comment`.
pub fn mint_key(comment: &str) -> anyhow::Result<KeyPair> {
    let mut key = ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .context("generating an ed25519 deploy key")?;
    key.set_comment(comment);
    let private = key.to_openssh(ssh_key::LineEnding::LF).context("encoding the deploy key")?;
    let public = key.public_key().to_openssh().context("encoding the deploy key's public half")?;
    Ok(KeyPair { private_openssh: Secret::new(private.to_string()), public })
}

/// What went wrong with a forge call; each names the forge, the repository and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{forge} {repo}: a deploy key with this title or key already exists (HTTP 422): {detail}")]
    Conflict { forge: String, repo: String, detail: String },
    #[error(
        "{forge} {repo}: the token may not manage the repository's deploy keys (HTTP {status}): {detail} — it needs \
         admin rights on the repository (GitHub: a token allowed to write the repository's administration; \
         Gitea/Forgejo: write:repository)"
    )]
    Permission { forge: String, repo: String, status: u16, detail: String },
    #[error("{forge} {repo}: {method} {url} answered HTTP {status}: {detail}")]
    Status { forge: String, repo: String, method: String, url: String, status: u16, detail: String },
    #[error("{forge} {repo}: {method} {url}: {detail}")]
    Transport { forge: String, repo: String, method: String, url: String, detail: String },
}

/// The outcome of deleting a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Deleted,
    /// The forge no longer had it (404): revoked all the same.
    AlreadyGone,
}

/// One repository on one forge, with the token that manages its deploy keys.
pub struct ForgeClient {
    kind: ForgeKind,
    api: String,
    repo: String,
    token: Secret,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

#[derive(Serialize)]
struct NewKey<'a> {
    title: &'a str,
    key: &'a str,
    read_only: bool,
}

#[derive(Deserialize)]
struct Created {
    id: u64,
}

/// A deploy key as both forges list it.
#[derive(Deserialize)]
struct Listed {
    id: u64,
    #[serde(default)]
    title: String,
}

impl ForgeClient {
    pub fn new(kind: ForgeKind, api: &str, repo: &str, token: Secret) -> anyhow::Result<ForgeClient> {
        let api = api.trim_end_matches('/').to_string();
        let uri: hyper::Uri = api.parse().with_context(|| format!("forge api {api:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(uri.host().unwrap_or_default()) => {}
            _ => bail!("forge api {api:?} must be https (plain http only on a loopback address)"),
        }
        if repo.split('/').filter(|p| !p.is_empty()).count() != 2 {
            bail!("forge repo {repo:?} must be owner/name");
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS settings")?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(ForgeClient { kind, api, repo: repo.to_string(), token, http })
    }

    fn name(&self) -> String {
        match self.kind {
            ForgeKind::Gitea => format!("gitea {}", self.api),
            ForgeKind::Github => format!("github {}", self.api),
        }
    }

    fn keys_url(&self) -> String {
        format!("{}/repos/{}/keys", self.api, self.repo)
    }

    /// What to do by hand when a key could not be deleted.
    pub fn manual_step(&self, id: u64, title: &str) -> String {
        format!(
            "delete deploy key {id} (\"{title}\") of {} by hand: DELETE {}/{id} with the forge token, or remove it \
             in the repository's deploy key settings",
            self.repo,
            self.keys_url()
        )
    }

    async fn call(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, String), ForgeError> {
        let transport = |detail: String| ForgeError::Transport {
            forge: self.name(),
            repo: self.repo.clone(),
            method: method.to_string(),
            url: url.to_string(),
            detail,
        };
        let auth = match self.kind {
            ForgeKind::Github => format!("Bearer {}", self.token.expose()),
            ForgeKind::Gitea => format!("token {}", self.token.expose()),
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(url)
            .header("Authorization", auth)
            .header("User-Agent", concat!("bot-bottle/", env!("CARGO_PKG_VERSION")))
            .header("Accept", "application/json");
        if self.kind == ForgeKind::Github {
            req = req.header("Accept", "application/vnd.github+json").header("X-GitHub-Api-Version", "2022-11-28");
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| transport(e.to_string()))?;
        let resp = tokio::time::timeout(TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| transport(format!("no answer within {TIMEOUT:?}")))?
            .map_err(|e| transport(format!("{e:#}")))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| transport(format!("no answer within {TIMEOUT:?}")))?
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn status_error(&self, method: &str, url: &str, status: StatusCode, detail: String) -> ForgeError {
        let (forge, repo) = (self.name(), self.repo.clone());
        let detail = short(&detail);
        match status.as_u16() {
            422 => ForgeError::Conflict { forge, repo, detail },
            s @ (401 | 403) => ForgeError::Permission { forge, repo, status: s, detail },
            s => ForgeError::Status { forge, repo, method: method.into(), url: url.into(), status: s, detail },
        }
    }

    /// Registers `public` as a write deploy key titled `title`; its forge id.
    pub async fn create_key(&self, title: &str, public: &str) -> Result<u64, ForgeError> {
        let url = self.keys_url();
        let body = serde_json::to_vec(&NewKey { title, key: public, read_only: false }).expect("json");
        let (status, text) = self.call(Method::POST, &url, Some(body)).await?;
        if status == StatusCode::NOT_FOUND {
            // GitHub answers 404 to a token that may not see the repository.
            return Err(ForgeError::Permission {
                forge: self.name(),
                repo: self.repo.clone(),
                status: 404,
                detail: short(&text),
            });
        }
        if !status.is_success() {
            return Err(self.status_error("POST", &url, status, text));
        }
        serde_json::from_str::<Created>(&text).map(|c| c.id).map_err(|e| ForgeError::Status {
            forge: self.name(),
            repo: self.repo.clone(),
            method: "POST".into(),
            url,
            status: status.as_u16(),
            detail: format!("the answer has no key id ({e}): {}", short(&text)),
        })
    }

    /// The id of the repository's deploy key titled `title`, if it has one (both forges list
    /// keys a page at a time: GitHub by `per_page`, Gitea by `limit`; at most 20 pages).
    pub async fn find_key(&self, title: &str) -> Result<Option<u64>, ForgeError> {
        for page in 1..=20 {
            let url = format!("{}?per_page=100&limit=50&page={page}", self.keys_url());
            let (status, text) = self.call(Method::GET, &url, None).await?;
            if !status.is_success() {
                return Err(self.status_error("GET", &url, status, text));
            }
            let keys: Vec<Listed> = serde_json::from_str(&text).map_err(|e| ForgeError::Status {
                forge: self.name(),
                repo: self.repo.clone(),
                method: "GET".into(),
                url: url.clone(),
                status: status.as_u16(),
                detail: format!("the answer is not a list of keys ({e}): {}", short(&text)),
            })?;
            if let Some(k) = keys.iter().find(|k| k.title == title) {
                return Ok(Some(k.id));
            }
            if keys.is_empty() {
                break;
            }
        }
        Ok(None)
    }

    /// Deletes deploy key `id`; a key the forge no longer has counts as revoked.
    pub async fn delete_key(&self, id: u64) -> Result<Revoked, ForgeError> {
        let url = format!("{}/{id}", self.keys_url());
        let (status, text) = self.call(Method::DELETE, &url, None).await?;
        match status {
            s if s.is_success() => Ok(Revoked::Deleted),
            StatusCode::NOT_FOUND => Ok(Revoked::AlreadyGone),
            s => Err(self.status_error("DELETE", &url, s, text)),
        }
    }
}

/// A forge's answer cut short for a message (it never holds our token).
fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_fresh_ed25519_openssh() {
        let a = mint_key("bot-bottle:x:host").unwrap();
        let b = mint_key("bot-bottle:x:host").unwrap();
        assert!(a.private_openssh.expose().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(a.public.starts_with("ssh-ed25519 AAAA") && a.public.ends_with(" bot-bottle:x:host"), "{}", a.public);
        assert_ne!(a.public, b.public);
        let parsed = ssh_key::PrivateKey::from_openssh(a.private_openssh.expose()).unwrap();
        assert_eq!(parsed.public_key().to_openssh().unwrap(), a.public);
    }

    #[test]
    fn api_urls_must_be_https_off_loopback() {
        let t = || Secret::new("t");
        assert!(ForgeClient::new(ForgeKind::Gitea, "https://git.example.com/api/v1", "o/r", t()).is_ok());
        assert!(ForgeClient::new(ForgeKind::Gitea, "http://127.0.0.1:3000/api/v1", "o/r", t()).is_ok());
        assert!(ForgeClient::new(ForgeKind::Gitea, "http://[::1]:3000/api/v1", "o/r", t()).is_ok());
        let err = ForgeClient::new(ForgeKind::Github, "http://api.github.com", "o/r", t()).err().unwrap();
        assert!(err.to_string().contains("must be https"), "{err}");
        assert!(ForgeClient::new(ForgeKind::Github, "https://api.github.com", "just-one", t()).is_err());
    }
}

#[cfg(any(test, feature = "forge-standin"))]
pub mod standin;
