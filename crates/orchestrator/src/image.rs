//! The sidecar image: `bot-bottle-sidecars:<content-hash>`, built through the Docker API from a
//! tar context assembled here (the Dockerfile from `docker/` plus the daemon binaries).
//!
//! The tag is a hash of everything that goes into the image — the Dockerfile, the base image's
//! ID and every binary — so an unchanged build is a no-op and a changed binary always gets a
//! new tag (a running bottle keeps the image it started with).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::cli::{ImageBuildArgs, ImageCmd};

/// Repository part of the sidecar image reference.
pub const REPOSITORY: &str = "bot-bottle-sidecars";
/// The binaries the image carries, all copied to `/usr/local/bin`.
pub const BINARIES: [&str; 4] = ["bundle-init", "egress-proxy", "git-gate", "supervise"];
/// The Dockerfile, compiled in so that the `bot-bottle` binary is self-contained.
pub const DOCKERFILE: &str = include_str!("../../../docker/Dockerfile");
/// Default base image; it must exist locally (`docker/make-base-image` creates it).
pub const DEFAULT_BASE_IMAGE: &str = "debian:bookworm-slim";

/// What the image builder needs from a container engine. The real one is [`DockerImages`];
/// tests use a recording fake.
#[async_trait::async_trait]
pub trait Images {
    /// The image's ID, or `None` when no image has that reference.
    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>>;
    /// Builds `context` (a tar) as `tag` with the given build args, reporting progress lines.
    async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        build_args: &HashMap<String, String>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> anyhow::Result<()>;
}

/// [`Images`] over the Docker Engine API.
pub struct DockerImages(pub bollard::Docker);

impl DockerImages {
    /// Connects with the usual defaults (`DOCKER_HOST` or the local socket) and checks the
    /// engine answers, so that a missing engine is reported once, clearly.
    pub async fn connect() -> anyhow::Result<DockerImages> {
        let docker = bollard::Docker::connect_with_local_defaults().context("connecting to the Docker engine")?;
        docker.ping().await.context(
            "the Docker engine does not answer (is dockerd running? `bot-bottle doctor` tells what is missing)",
        )?;
        Ok(DockerImages(docker))
    }
}

#[async_trait::async_trait]
impl Images for DockerImages {
    async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
        match self.0.inspect_image(reference).await {
            Ok(img) => Ok(Some(img.id.unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting image {reference}")),
        }
    }

    async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        build_args: &HashMap<String, String>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> anyhow::Result<()> {
        let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(build_args)
            .build();
        let mut stream = self.0.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            let info = item.with_context(|| format!("building {tag}"))?;
            if let Some(detail) = info.error_detail {
                bail!("building {tag}: {}", detail.message.unwrap_or_default().trim());
            }
            if let Some(line) = info.stream.as_deref().map(str::trim_end).filter(|l| !l.is_empty()) {
                progress(line.to_string());
            }
        }
        Ok(())
    }
}

/// A build context ready to send, with the tag it hashes to.
pub struct BuildContext {
    pub tag: String,
    pub tar: Vec<u8>,
}

/// Assembles the build context from `bin_dir` and computes the tag. `base_image_id` takes part
/// in the hash so a re-created base image yields a new tag.
pub fn context(bin_dir: &Path, base_image: &str, base_image_id: &str) -> anyhow::Result<BuildContext> {
    let mut hasher = Sha256::new();
    hasher.update(b"bot-bottle sidecar image v1\0");
    hasher.update(DOCKERFILE.as_bytes());
    hasher.update(b"\0");
    hasher.update(base_image.as_bytes());
    hasher.update(b"\0");
    hasher.update(base_image_id.as_bytes());
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, "Dockerfile", DOCKERFILE.as_bytes(), 0o644)?;
    for name in BINARIES {
        let path = bin_dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (build the daemons first: cargo build --release --workspace --bins, or pass --bin-dir)",
                path.display()
            )
        })?;
        hasher.update(b"\0");
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        hasher.update(&bytes);
        append(&mut builder, &format!("bin/{name}"), &bytes, 0o755)?;
    }
    let tar = builder.into_inner().context("assembling the build context")?;
    let digest = hex::encode(hasher.finalize());
    Ok(BuildContext { tag: format!("{REPOSITORY}:{}", &digest[..16]), tar })
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    builder.append_data(&mut header, path, bytes).with_context(|| format!("adding {path} to the build context"))
}

/// The outcome of [`ensure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub tag: String,
    /// False when the image with this tag already existed (nothing was built).
    pub built: bool,
}

/// Makes sure the sidecar image for these binaries exists, building it only when its tag is
/// missing. Progress lines go to `progress`.
pub async fn ensure(
    images: &dyn Images,
    bin_dir: &Path,
    base_image: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Built> {
    let Some(base_id) = images.image_id(base_image).await? else {
        bail!(
            "base image {base_image} is not in the local Docker engine; create it with docker/make-base-image \
             (no registry is reachable to pull it)"
        );
    };
    let ctx = context(bin_dir, base_image, &base_id)?;
    if images.image_id(&ctx.tag).await?.is_some() {
        return Ok(Built { tag: ctx.tag, built: false });
    }
    let args = HashMap::from([("BASE_IMAGE".to_string(), base_image.to_string())]);
    images.build(ctx.tar, &ctx.tag, &args, progress).await?;
    if images.image_id(&ctx.tag).await?.is_none() {
        bail!("the engine reported success but has no image {}", ctx.tag);
    }
    Ok(Built { tag: ctx.tag, built: true })
}

/// The directory of the running executable: where `cargo build` puts the daemons beside it.
pub fn default_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bot-bottle executable")?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// `bot-bottle image build`.
pub fn run(cmd: ImageCmd) -> anyhow::Result<()> {
    let ImageCmd::Build(ImageBuildArgs { bin_dir, base_image }) = cmd;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => default_bin_dir()?,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let built = rt.block_on(async {
        let images = DockerImages::connect().await?;
        let mut progress = |line: String| {
            let _ = writeln!(std::io::stderr(), "  {line}");
        };
        ensure(&images, &bin_dir, &base_image, &mut progress).await
    })?;
    let note = if built.built { "built" } else { "up to date" };
    #[allow(clippy::print_stdout)] // the tag is this command's output
    {
        println!("{}", built.tag);
    }
    eprintln!("{note}: {}", built.tag);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records every call; knows the images it has "built".
    #[derive(Default)]
    struct FakeImages {
        present: Mutex<HashMap<String, String>>,
        builds: Mutex<Vec<BuildCall>>,
    }

    struct BuildCall {
        tag: String,
        args: HashMap<String, String>,
    }

    #[async_trait::async_trait]
    impl Images for FakeImages {
        async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
            Ok(self.present.lock().unwrap().get(reference).cloned())
        }
        async fn build(
            &self,
            context: Vec<u8>,
            tag: &str,
            build_args: &HashMap<String, String>,
            progress: &mut (dyn FnMut(String) + Send),
        ) -> anyhow::Result<()> {
            progress("Step 1/1".to_string());
            assert!(!context.is_empty());
            self.builds.lock().unwrap().push(BuildCall { tag: tag.to_string(), args: build_args.clone() });
            self.present.lock().unwrap().insert(tag.to_string(), format!("sha256:{tag}"));
            Ok(())
        }
    }

    fn bins(dir: &Path, flavour: &str) {
        for b in BINARIES {
            std::fs::write(dir.join(b), format!("{b} {flavour}")).unwrap();
        }
    }

    #[tokio::test]
    async fn unchanged_inputs_build_once_changed_binary_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        bins(dir.path(), "v1");
        let fake = FakeImages::default();
        fake.present.lock().unwrap().insert(DEFAULT_BASE_IMAGE.into(), "sha256:base".into());
        let mut lines = Vec::new();
        let first = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, &mut |l: String| lines.push(l)).await.unwrap();
        assert!(first.built);
        assert!(first.tag.starts_with("bot-bottle-sidecars:"));
        assert_eq!(lines, ["Step 1/1"]);
        let second = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, &mut |_: String| {}).await.unwrap();
        assert_eq!(second, Built { tag: first.tag.clone(), built: false });
        assert_eq!(fake.builds.lock().unwrap().len(), 1);
        assert_eq!(fake.builds.lock().unwrap()[0].args["BASE_IMAGE"], DEFAULT_BASE_IMAGE);
        assert_eq!(fake.builds.lock().unwrap()[0].tag, first.tag);

        std::fs::write(dir.path().join("git-gate"), "git-gate v2").unwrap();
        let third = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, &mut |_: String| {}).await.unwrap();
        assert!(third.built);
        assert_ne!(third.tag, first.tag);
    }

    #[tokio::test]
    async fn missing_base_image_and_binary_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeImages::default();
        let err = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, &mut |_: String| {}).await.unwrap_err();
        assert!(err.to_string().contains("docker/make-base-image"), "{err}");
        fake.present.lock().unwrap().insert(DEFAULT_BASE_IMAGE.into(), "sha256:base".into());
        let err = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, &mut |_: String| {}).await.unwrap_err();
        assert!(format!("{err:#}").contains("bundle-init"), "{err:#}");
    }

    #[test]
    fn context_is_deterministic_and_holds_every_binary() {
        let dir = tempfile::tempdir().unwrap();
        bins(dir.path(), "v1");
        let a = context(dir.path(), "base", "id1").unwrap();
        let b = context(dir.path(), "base", "id1").unwrap();
        assert_eq!(a.tag, b.tag);
        assert_eq!(a.tar, b.tar);
        assert_ne!(context(dir.path(), "base", "id2").unwrap().tag, a.tag);
        let mut archive = tar::Archive::new(a.tar.as_slice());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["Dockerfile", "bin/bundle-init", "bin/egress-proxy", "bin/git-gate", "bin/supervise"]);
    }
}
