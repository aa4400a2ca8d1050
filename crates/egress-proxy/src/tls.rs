//! TLS on both sides of the proxy, with the ring provider only.
//!
//! Agent side: [`Mint`] signs a leaf certificate for the CONNECT target (never for whatever the
//! client puts in SNI) with the bottle CA and caches one `ServerConfig` per host; IP targets get
//! an IP SAN. Upstream side: [`client_config`] trusts the system roots plus `--upstream-ca`;
//! verification is never disabled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Most leaf configs kept; the cache is cleared when full (a bottle talks to few hosts).
const MAX_CACHED_HOSTS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {what}", path.display())]
    Bad { path: PathBuf, what: String },
    #[error("minting a certificate for {host}: {what}")]
    Mint { host: String, what: String },
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The bottle CA and the leaf configs minted from it.
pub(crate) struct Mint {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// One key for every leaf (minting is then one signature).
    leaf_key: KeyPair,
    /// Stateless TLS 1.3 session tickets (rotating key), shared by every leaf config, so a
    /// client reconnecting resumes without a full handshake.
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for Mint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mint")
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

impl Mint {
    /// Loads the CA certificate and key (PEM).
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Mint, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let ca_key = KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::Bad { path: key.to_path_buf(), what: format!("not a usable private key: {e}") })?;
        let ca_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| TlsError::Bad { path: cert.to_path_buf(), what: "no PEM certificate found".into() })?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(|e| TlsError::Bad {
            path: cert.to_path_buf(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::Mint { host: "(leaf key)".into(), what: e.to_string() })?;
        let ticketer = rustls::crypto::ring::Ticketer::new()?;
        let mint = Mint { issuer, ca_der, leaf_key, ticketer, cache: Mutex::new(HashMap::new()) };
        // Prove the pair works before serving anything.
        mint.config_for("startup-check.invalid")?;
        mint.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(mint)
    }

    /// The server config (leaf for `host`, ALPN h2 + http/1.1), minted once per host.
    pub(crate) fn config_for(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        if let Some(c) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(host) {
            return Ok(c.clone());
        }
        let mint_err = |what: String| TlsError::Mint { host: host.to_string(), what };
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(|e| mint_err(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
        params.not_after = (now + std::time::Duration::from_secs(90 * 86_400)).into();
        let cert = params.signed_by(&self.leaf_key, &self.issuer).map_err(|e| mint_err(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = self.ticketer.clone();
        let config = Arc::new(config);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_HOSTS {
            cache.clear();
        }
        cache.insert(host.to_string(), config.clone());
        Ok(config)
    }
}

/// Reads every certificate in a PEM file.
pub(crate) fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Bad { path: path.to_path_buf(), what: format!("bad PEM: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Bad { path: path.to_path_buf(), what: "no PEM certificate found".into() });
    }
    Ok(certs)
}

/// The trust store for upstreams: the system roots plus the extra anchors.
pub(crate) fn root_store(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("system trust store: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system roots loaded");
    for c in extra {
        if let Err(e) = roots.add(c.clone()) {
            tracing::warn!("an --upstream-ca certificate was not accepted as a trust anchor: {e}");
        }
    }
    roots
}

/// Upstream client config with full verification and the given ALPN list.
pub(crate) fn client_config(roots: Arc<RootCertStore>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
