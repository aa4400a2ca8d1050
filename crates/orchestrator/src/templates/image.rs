//! A template's agent image: its Dockerfile (compiled into this binary) on the local base image,
//! tagged `bot-bottle-agent-<template>:<hash>` by the Dockerfile, the Node proxy preload, the base
//! image's name and its ID, so a launch with an unchanged template finds the image and a changed one builds anew.
//! Build progress goes to the operator line by line (the first build takes minutes). The context
//! also holds `build-ca.pem` (see [`BUILD_CA_ENV`]), which only the npm step uses.

use std::collections::HashMap;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::agent::Progress;
use crate::image::{DEFAULT_BASE_IMAGE, Images};
use crate::manifest::types::Template;

/// Preloaded into the images' Node processes: `fetch` and `https` through `$HTTPS_PROXY`.
pub const NODE_PROXY: &str = include_str!("../../../../docker/agents/node-proxy.cjs");

/// The tag a template's image has on this base image.
pub fn tag(template: Template, base_image: &str, base_id: &str) -> anyhow::Result<String> {
    let dockerfile = super::dockerfile(template).context("template: command has no image of its own")?;
    let mut h = Sha256::new();
    for part in [dockerfile, NODE_PROXY, base_image, base_id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    Ok(format!(
        "{}-{}:{}",
        crate::agent::docker::AGENT_REPOSITORY,
        super::name(template),
        &hex::encode(h.finalize())[..16]
    ))
}

/// Finds or builds the template's image; its ID.
pub async fn ensure(
    images: &(dyn Images + Send + Sync),
    template: Template,
    progress: Progress<'_>,
) -> anyhow::Result<String> {
    let base = DEFAULT_BASE_IMAGE;
    let base_id = images.image_id(base).await?.with_context(|| {
        format!(
            "base image {base} is not in the local Docker engine; create it with docker/make-base-image \
             (no registry is reachable to pull it)"
        )
    })?;
    let tag = tag(template, base, &base_id)?;
    if let Some(id) = images.image_id(&tag).await? {
        return Ok(id);
    }
    let dockerfile = super::dockerfile(template).expect("checked by tag");
    let build_ca = build_ca()?;
    let mut builder = tar::Builder::new(Vec::new());
    let files = [
        ("Dockerfile", dockerfile.as_bytes()),
        ("node-proxy.cjs", NODE_PROXY.as_bytes()),
        ("build-ca.pem", build_ca.as_slice()),
    ];
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes)?;
    }
    let context = builder.into_inner()?;
    progress(format!(
        "building the {} agent image {tag} (docker/agents/{}/Dockerfile; the first build takes minutes)",
        super::name(template),
        super::name(template)
    ));
    let mut lines = |l: String| progress(format!("  {l}"));
    let args = HashMap::from([("BASE_IMAGE".to_string(), base.to_string())]);
    images.build(context, &tag, &args, &mut lines).await?;
    images.image_id(&tag).await?.with_context(|| format!("the engine built {tag} but does not have it"))
}

/// Set to a PEM file: the CA bundle the image build trusts to fetch the CLI from the npm
/// registry (a registry behind a TLS-inspecting proxy). Default: the host's system bundle.
pub const BUILD_CA_ENV: &str = "BOT_BOTTLE_BUILD_CA";

/// What the build trusts besides the image's roots: `$BOT_BOTTLE_BUILD_CA`, else the host's own
/// system bundle, else nothing. Not part of the tag: it decides how the pinned packages are
/// fetched, not what is installed.
fn build_ca() -> anyhow::Result<Vec<u8>> {
    if let Some(path) = std::env::var_os(BUILD_CA_ENV).filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(path);
        return std::fs::read(&path).with_context(|| format!("reading {BUILD_CA_ENV}={}", path.display()));
    }
    Ok(crate::plan::provision::SYSTEM_CA_BUNDLES.iter().find_map(|p| std::fs::read(p).ok()).unwrap_or_default())
}
