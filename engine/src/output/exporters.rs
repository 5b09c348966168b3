//! The output types, one [`Exporter`] each.

use super::{BoxFuture, Dest, ExportContext, Exported, Exporter, ImageFormat, ImageSettings};
use anyhow::{anyhow, bail, Context as _, Result};
use exporter::image::Descriptor;
use std::path::PathBuf;

/// The image, or the error an output that needs one would have.
fn need(image: Option<Descriptor>, what: &str) -> Result<Descriptor> {
    image.ok_or_else(|| anyhow!("{what}: no image was made for this output"))
}

/// The local image store, under `names` (default: the `-t` names); with `push`, also their
/// registries (`type=registry`, `--push`).
#[derive(Clone, Debug, Default)]
pub struct ImageStore {
    pub names: Vec<String>,
    pub push: bool,
    pub image: ImageSettings,
}

impl Exporter for ImageStore {
    fn image_format(&self, epoch: Option<u64>) -> Result<Option<ImageFormat>> {
        self.image.format(epoch).map(Some)
    }
    fn is_image_store(&self) -> bool {
        true
    }
    fn pushes(&self) -> bool {
        self.push
    }
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        image: Option<Descriptor>,
    ) -> BoxFuture<'a, Result<Exported>> {
        Box::pin(async move {
            let descriptor = need(image, "--output type=image")?;
            let names = if self.names.is_empty() {
                &cx.tags
            } else {
                &self.names
            };
            for name in names {
                cx.solver.images.tag(name, &descriptor)?;
            }
            let mut notes = Vec::new();
            if self.push {
                if names.is_empty() {
                    bail!("--output type=registry: no image name; use -t or name=");
                }
                for name in names {
                    let reference = exporter::Reference::parse(name)?;
                    exporter::RegistryClient::new()
                        .push(&reference, &descriptor, &cx.solver.content)
                        .await
                        .with_context(|| format!("pushing {name}"))?;
                    notes.push(format!("pushed {}", reference.full_name()));
                }
            }
            Ok(Exported {
                main: Some(descriptor),
                notes,
            })
        })
    }
}

/// An OCI image layout: a tar (default) or a directory (`tar=false`).
#[derive(Clone, Debug)]
pub struct OciLayout {
    pub dest: Dest,
    pub tar: bool,
    pub names: Vec<String>,
    pub image: ImageSettings,
}

impl Exporter for OciLayout {
    fn image_format(&self, epoch: Option<u64>) -> Result<Option<ImageFormat>> {
        self.image.format(epoch).map(Some)
    }
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        image: Option<Descriptor>,
    ) -> BoxFuture<'a, Result<Exported>> {
        Box::pin(async move {
            let descriptor = need(image, "--output type=oci")?;
            let content = cx.solver.content.clone();
            let (dest, tar) = (self.dest.clone(), self.tar);
            let name = self.names.first().or(cx.tags.first()).cloned();
            tokio::task::spawn_blocking(move || -> Result<()> {
                match (&dest, tar) {
                    (Dest::Path(dir), false) => exporter::export_oci_layout_dir(
                        &content,
                        &descriptor,
                        name.as_deref(),
                        dir,
                    )?,
                    _ => dest.write_with(|out| {
                        exporter::export_oci_archive(&content, &descriptor, name.as_deref(), out)?;
                        Ok(())
                    })?,
                }
                Ok(())
            })
            .await??;
            Ok(Exported::default())
        })
    }
}

/// A `docker load` archive.
#[derive(Clone, Debug)]
pub struct DockerArchive {
    pub dest: Dest,
    pub names: Vec<String>,
    pub image: ImageSettings,
}

impl Exporter for DockerArchive {
    fn image_format(&self, epoch: Option<u64>) -> Result<Option<ImageFormat>> {
        self.image.format(epoch).map(Some)
    }
    fn check(&self, platforms: usize) -> Result<()> {
        if platforms > 1 {
            bail!("--output type=docker holds one image and cannot hold a multi-platform build; use type=oci");
        }
        Ok(())
    }
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        image: Option<Descriptor>,
    ) -> BoxFuture<'a, Result<Exported>> {
        Box::pin(async move {
            let descriptor = need(image, "--output type=docker")?;
            let content = cx.solver.content.clone();
            let dest = self.dest.clone();
            let names = if self.names.is_empty() {
                &cx.tags
            } else {
                &self.names
            };
            let tags = names.to_vec();
            tokio::task::spawn_blocking(move || -> Result<()> {
                dest.write_with(|out| {
                    exporter::export_docker_archive(&content, &descriptor, &tags, out)?;
                    Ok(())
                })
            })
            .await??;
            Ok(Exported::default())
        })
    }
}

/// The result's filesystem copied into a directory (one subdirectory per platform).
#[derive(Clone, Debug)]
pub struct LocalDir {
    pub dest: PathBuf,
}

impl Exporter for LocalDir {
    fn image_format(&self, _epoch: Option<u64>) -> Result<Option<ImageFormat>> {
        Ok(None)
    }
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        _image: Option<Descriptor>,
    ) -> BoxFuture<'a, Result<Exported>> {
        Box::pin(async move {
            let multi = cx.targets.len() > 1;
            for target in cx.targets.iter() {
                // Several platforms: one subdirectory each, named like BuildKit's.
                let dest = match (&target.platform, multi) {
                    (Some(p), true) => self.dest.join(crate::platforms::dir_name(p)),
                    _ => self.dest.clone(),
                };
                let (solver, result) = (cx.solver.clone(), target.result.clone());
                // Like buildx, the files are given to the user who receives them.
                let me = solver::fileop::Owner {
                    uid: rustix::process::geteuid().as_raw(),
                    gid: rustix::process::getegid().as_raw(),
                };
                tokio::task::spawn_blocking(move || {
                    solver.export_local_owned(&result, &dest, Some(me))
                })
                .await??;
            }
            Ok(Exported::default())
        })
    }
}

/// The result's filesystem as one tar.
#[derive(Clone, Debug)]
pub struct RootfsTar {
    pub dest: Dest,
}

impl Exporter for RootfsTar {
    fn image_format(&self, _epoch: Option<u64>) -> Result<Option<ImageFormat>> {
        Ok(None)
    }
    fn check(&self, platforms: usize) -> Result<()> {
        if platforms > 1 {
            bail!(
                "--output type=tar holds one filesystem; use type=local for a multi-platform build"
            );
        }
        Ok(())
    }
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        _image: Option<Descriptor>,
    ) -> BoxFuture<'a, Result<Exported>> {
        Box::pin(async move {
            let (solver, result) = (cx.solver.clone(), cx.targets[0].result.clone());
            let (dest, scratch) = (self.dest.clone(), cx.root.join("tmp"));
            tokio::task::spawn_blocking(move || {
                dest.write_with(|out| {
                    crate::rootfs_tar::write_rootfs_tar(&solver, &result, &scratch, out)
                })
            })
            .await??;
            Ok(Exported::default())
        })
    }
}

/// `--load`: the image as a docker archive into the Docker engine at `DOCKER_HOST` (or
/// /var/run/docker.sock).
#[derive(Clone, Debug, Default)]
pub struct DockerLoad;

impl Exporter for DockerLoad {
    fn image_format(&self, _epoch: Option<u64>) -> Result<Option<ImageFormat>> {
        Ok(Some(ImageFormat::default()))
    }
    fn check(&self, platforms: usize) -> Result<()> {
        // Docker 20.10's image store holds one platform per image.
        if platforms > 1 {
            bail!(
                "--load: a multi-platform image cannot be loaded into the Docker engine (its image \
                 store holds one platform per image); use --push, -o type=oci,dest=FILE.tar, or \
                 one --platform"
            );
        }
        Ok(())
    }
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        image: Option<Descriptor>,
    ) -> BoxFuture<'a, Result<Exported>> {
        Box::pin(async move {
            let descriptor = need(image, "--load")?;
            let (root, content, tags) =
                (cx.root.clone(), cx.solver.content.clone(), cx.tags.clone());
            let loaded = tokio::task::spawn_blocking(move || {
                load_into_docker(&root, &content, &descriptor, &tags)
            })
            .await??;
            Ok(Exported {
                main: None,
                notes: vec![format!("loaded into the Docker engine: {loaded}")],
            })
        })
    }
}

fn load_into_docker(
    root: &std::path::Path,
    content: &exporter::ContentStore,
    image: &Descriptor,
    tags: &[String],
) -> Result<String> {
    let scratch = root.join("tmp");
    std::fs::create_dir_all(&scratch)?;
    let archive = tempfile::NamedTempFile::new_in(&scratch)?;
    let mut out = std::io::BufWriter::new(archive.as_file());
    exporter::export_docker_archive(content, image, tags, &mut out)
        .context("--load: writing the docker archive")?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    let host = exporter::docker_engine::docker_host();
    exporter::docker_engine::load(&host, archive.path()).map_err(|e| anyhow!("--load: {e}"))
}
