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

/// What the image builder needs from a container engine. The real one is
/// [`crate::engine::docker::DockerEngine`];
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
        let bytes = std::fs::read(&path).with_context(|| missing(&path))?;
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

/// The base image's ID, or a clear error when the engine does not have it.
async fn base_id(images: &dyn Images, base_image: &str) -> anyhow::Result<String> {
    images.image_id(base_image).await?.with_context(|| {
        format!(
            "base image {base_image} is not in the local Docker engine; create it with docker/make-base-image \
             (no registry is reachable to pull it)"
        )
    })
}

/// What the tag of these binaries' image is. With a `cache` directory, the tag of binaries whose
/// size, mtime and inode are unchanged is read back instead of hashing them again (debug
/// binaries run to hundreds of megabytes, and a launch asks for the tag every time).
pub async fn tag(
    images: &dyn Images,
    bin_dir: &Path,
    base_image: &str,
    cache: Option<&Path>,
) -> anyhow::Result<String> {
    let base = base_id(images, base_image).await?;
    let key = fingerprint(bin_dir, base_image, &base)?;
    let file = cache.map(|c| c.join("sidecar-tag.json"));
    if let Some(file) = &file
        && let Ok(bytes) = std::fs::read(file)
        && let Ok((k, t)) = serde_json::from_slice::<(String, String)>(&bytes)
        && k == key
    {
        return Ok(t);
    }
    let tag = context(bin_dir, base_image, &base)?.tag;
    if let Some(file) = &file {
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = common::atomic::write_json(file, &(key, &tag));
    }
    Ok(tag)
}

/// Size, mtime and inode of every binary, the Dockerfile and the base image: what the tag
/// depends on, cheaply.
fn fingerprint(bin_dir: &Path, base_image: &str, base_id: &str) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut h = Sha256::new();
    h.update(DOCKERFILE.as_bytes());
    h.update(base_image.as_bytes());
    h.update(base_id.as_bytes());
    for name in BINARIES {
        let path = bin_dir.join(name);
        let m = std::fs::metadata(&path).with_context(|| missing(&path))?;
        h.update(format!("{name} {} {} {} {}", m.len(), m.mtime(), m.mtime_nsec(), m.ino()).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

fn missing(path: &Path) -> String {
    format!(
        "reading {} (build the daemons first: cargo build --release --workspace --bins, or pass --bin-dir)",
        path.display()
    )
}

/// Makes sure the sidecar image for these binaries exists, building it only when its tag is
/// missing. Progress lines go to `progress`.
pub async fn ensure(
    images: &dyn Images,
    bin_dir: &Path,
    base_image: &str,
    cache: Option<&Path>,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Built> {
    let tag = tag(images, bin_dir, base_image, cache).await?;
    if images.image_id(&tag).await?.is_some() {
        return Ok(Built { tag, built: false });
    }
    let ctx = context(bin_dir, base_image, &base_id(images, base_image).await?)?;
    progress(format!("building the sidecar image {}", ctx.tag));
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
pub async fn run(cmd: ImageCmd, home: &crate::home::Home) -> anyhow::Result<()> {
    let ImageCmd::Build(ImageBuildArgs { bin_dir, base_image }) = cmd;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => default_bin_dir()?,
    };
    let engine = crate::engine::docker::DockerEngine::connect().await?;
    let mut progress = |line: String| {
        let _ = writeln!(std::io::stderr(), "  {line}");
    };
    let built = ensure(&engine, &bin_dir, &base_image, Some(&home.cache_dir()), &mut progress).await?;
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
        let first = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, None, &mut |l: String| lines.push(l)).await.unwrap();
        assert!(first.built);
        assert!(first.tag.starts_with("bot-bottle-sidecars:"));
        assert_eq!(lines, [format!("building the sidecar image {}", first.tag), "Step 1/1".to_string()]);
        let second = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, None, &mut |_: String| {}).await.unwrap();
        assert_eq!(second, Built { tag: first.tag.clone(), built: false });
        assert_eq!(fake.builds.lock().unwrap().len(), 1);
        assert_eq!(fake.builds.lock().unwrap()[0].args["BASE_IMAGE"], DEFAULT_BASE_IMAGE);
        assert_eq!(fake.builds.lock().unwrap()[0].tag, first.tag);

        std::fs::write(dir.path().join("git-gate"), "git-gate v2").unwrap();
        let third = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, None, &mut |_: String| {}).await.unwrap();
        assert!(third.built);
        assert_ne!(third.tag, first.tag);
    }

    #[tokio::test]
    async fn missing_base_image_and_binary_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeImages::default();
        let err = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, None, &mut |_: String| {}).await.unwrap_err();
        assert!(err.to_string().contains("docker/make-base-image"), "{err}");
        fake.present.lock().unwrap().insert(DEFAULT_BASE_IMAGE.into(), "sha256:base".into());
        let err = ensure(&fake, dir.path(), DEFAULT_BASE_IMAGE, None, &mut |_: String| {}).await.unwrap_err();
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
