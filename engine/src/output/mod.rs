//! Outputs of a build: the buildx-style `--output` specs, the [`Exporter`] trait every
//! output type implements (image store and registry push, OCI/docker archives, local
//! directory or tar, Docker `--load`), and the export phase that makes each image format
//! once and hands it to the outputs that want it.

mod exporters;
mod images;

pub use exporters::{DockerArchive, DockerLoad, ImageStore, LocalDir, OciLayout, RootfsTar};

use anyhow::{anyhow, bail, Context as _, Result};
use exporter::image::{Descriptor, ImageConfig, Platform};
use exporter::{Compression, CompressionKind, LayerExportOptions};
use solver::{Ref, Solver};
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One output type of a build.
pub trait Exporter: Send + Sync + std::fmt::Debug {
    /// How the image this output takes must be made; None for an output of the result's
    /// filesystem (it gets no image).
    fn image_format(&self, source_date_epoch: Option<u64>) -> Result<Option<ImageFormat>>;
    /// Whether it names the image in the local store (then `-t` adds no store output).
    fn is_image_store(&self) -> bool {
        false
    }
    /// Whether it pushes to a registry (provenance then defaults to on).
    fn pushes(&self) -> bool {
        false
    }
    /// Refuses, before anything is built, what the output cannot hold.
    fn check(&self, _platforms: usize) -> Result<()> {
        Ok(())
    }
    /// Performs the output; `image` is the image made in this output's format.
    fn export<'a>(
        &'a self,
        cx: &'a ExportContext,
        image: Option<Descriptor>,
    ) -> BoxFuture<'a, Result<Exported>>;
}

/// What an output did.
#[derive(Default)]
pub struct Exported {
    /// The image, when the output makes it the build's main image (the store's).
    pub main: Option<Descriptor>,
    /// Lines for the user (`pushed NAME`).
    pub notes: Vec<String>,
}

/// What every output of one build can use.
pub struct ExportContext {
    /// The storage root (scratch space for rootfs tars).
    pub root: PathBuf,
    pub solver: Arc<Solver>,
    /// One target per platform.
    pub targets: Arc<Vec<ExportTarget>>,
    /// The `-t` names.
    pub tags: Vec<String>,
}

/// Where a file output goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Dest {
    Stdout,
    Path(PathBuf),
}

impl Dest {
    pub fn parse(value: &str) -> Dest {
        if value == "-" {
            Dest::Stdout
        } else {
            Dest::Path(PathBuf::from(value))
        }
    }

    /// Runs `write` on a buffered writer for the destination. A file is written under a
    /// temporary name next to it and renamed into place only when complete, so a failed export
    /// never leaves a truncated archive behind.
    pub fn write_with(&self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        match self {
            Dest::Stdout => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                write(&mut out)?;
                out.flush().context("writing to stdout")
            }
            Dest::Path(path) => {
                let name = path
                    .file_name()
                    .ok_or_else(|| anyhow!("--output dest={}: not a file name", path.display()))?;
                let mut temp_name = std::ffi::OsString::from(".");
                temp_name.push(name);
                temp_name.push(format!(".partial-{}", std::process::id()));
                let temp = path.with_file_name(temp_name);
                let result = (|| -> Result<()> {
                    let file = std::fs::File::create(&temp)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut out = std::io::BufWriter::new(file);
                    write(&mut out)?;
                    let file = out
                        .into_inner()
                        .map_err(|e| e.into_error())
                        .with_context(|| format!("writing {}", path.display()))?;
                    file.sync_all()
                        .with_context(|| format!("writing {}", path.display()))?;
                    std::fs::rename(&temp, path)
                        .with_context(|| format!("renaming into {}", path.display()))
                })();
                if result.is_err() {
                    let _ = std::fs::remove_file(&temp);
                }
                result
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutputKind {
    /// The local image store (and a registry with `push=true` / `type=registry`).
    Image { names: Vec<String>, push: bool },
    /// OCI image layout: a tar, or a directory with `tar=false`.
    Oci {
        dest: Dest,
        tar: bool,
        names: Vec<String>,
    },
    /// A `docker load` archive.
    Docker { dest: Dest, names: Vec<String> },
    /// The result's filesystem copied into a directory.
    Local { dest: PathBuf },
    /// The result's filesystem as a tar.
    Tar { dest: Dest },
}

/// One parsed `-o` value.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub compression: Compression,
    /// None = OCI media types (the default) unless the kind calls for Docker ones.
    pub oci_media_types: Option<bool>,
    pub rewrite_timestamp: bool,
}

impl OutputSpec {
    /// The exporter that performs this output.
    pub fn into_exporter(self) -> Arc<dyn Exporter> {
        let image = ImageSettings {
            compression: self.compression,
            oci_media_types: self.oci_media_types,
            rewrite_timestamp: self.rewrite_timestamp,
        };
        match self.kind {
            OutputKind::Image { names, push } => {
                Arc::new(exporters::ImageStore { names, push, image })
            }
            OutputKind::Oci { dest, tar, names } => Arc::new(exporters::OciLayout {
                dest,
                tar,
                names,
                image,
            }),
            OutputKind::Docker { dest, names } => {
                Arc::new(exporters::DockerArchive { dest, names, image })
            }
            OutputKind::Local { dest } => Arc::new(exporters::LocalDir { dest }),
            OutputKind::Tar { dest } => Arc::new(exporters::RootfsTar { dest }),
        }
    }
}

/// How an image output wants its image made (`compression=`, `oci-mediatypes=`,
/// `rewrite-timestamp=`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageSettings {
    pub compression: Compression,
    /// None = OCI media types (the default) unless the kind calls for Docker ones.
    pub oci_media_types: Option<bool>,
    pub rewrite_timestamp: bool,
}

impl ImageSettings {
    /// The image format; `rewrite-timestamp` needs SOURCE_DATE_EPOCH.
    pub fn format(&self, source_date_epoch: Option<u64>) -> Result<ImageFormat> {
        let mut format = ImageFormat {
            layers: LayerExportOptions {
                compression: self.compression,
                mtime_clamp: None,
            },
            oci_media_types: self.oci_media_types.unwrap_or(true),
        };
        if self.rewrite_timestamp {
            let epoch = source_date_epoch.ok_or_else(|| {
                anyhow!(
                    "--output rewrite-timestamp=true needs SOURCE_DATE_EPOCH (env or --build-arg)"
                )
            })?;
            format.layers.mtime_clamp = Some(epoch);
        }
        Ok(format)
    }
}

/// Keys every image-producing type accepts.
const IMAGE_KEYS: &[&str] = &[
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "rewrite-timestamp",
];

/// Parses one `-o` value: `type=KIND,key=value,...`, `-` (a tar of the filesystem on stdout)
/// or a bare path (the filesystem into that directory), like buildx.
pub fn parse_output(spec: &str) -> Result<OutputSpec> {
    let plain = |kind| OutputSpec {
        kind,
        compression: Compression::default(),
        oci_media_types: None,
        rewrite_timestamp: false,
    };
    if spec == "-" {
        return Ok(plain(OutputKind::Tar { dest: Dest::Stdout }));
    }
    if !spec.contains('=') {
        return Ok(plain(OutputKind::Local {
            dest: PathBuf::from(spec),
        }));
    }
    let flag = || format!("--output {spec:?}");
    let mut kv = key_values("--output", spec)?;
    let kind_name = kv.remove("type").ok_or_else(|| {
        anyhow!(
            "{}: type= is required (image, registry, oci, docker, local or tar)",
            flag()
        )
    })?;
    let allowed: Vec<&str> = match kind_name {
        "image" => ["name", "push"].to_vec(),
        "registry" => ["name"].to_vec(),
        "oci" => ["dest", "tar", "name"].to_vec(),
        "docker" => ["dest", "name"].to_vec(),
        "local" | "tar" => ["dest"].to_vec(),
        other => bail!(
            "{}: unknown type {other:?}; supported: image, registry, oci, docker, local, tar",
            flag()
        ),
    };
    let image_type = !matches!(kind_name, "local" | "tar");
    for key in kv.keys() {
        let known = allowed.contains(key) || (image_type && IMAGE_KEYS.contains(key));
        if !known {
            bail!("{}: unknown key {key:?} for type={kind_name}", flag());
        }
    }
    let boolean = |key: &str| -> Result<Option<bool>> {
        kv.get(key)
            .map(|v| match *v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => bail!("{}: {key}={other:?} is not true or false", flag()),
            })
            .transpose()
    };
    let names = || -> Vec<String> {
        kv.get("name")
            .map(|n| n.split(';').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let dest = || -> Result<Dest> {
        kv.get("dest")
            .map(|d| Dest::parse(d))
            .ok_or_else(|| anyhow!("{}: dest= is required for type={kind_name}", flag()))
    };
    let kind = match kind_name {
        "image" => OutputKind::Image {
            names: names(),
            push: boolean("push")?.unwrap_or(false),
        },
        "registry" => OutputKind::Image {
            names: names(),
            push: true,
        },
        "oci" => OutputKind::Oci {
            dest: dest()?,
            tar: boolean("tar")?.unwrap_or(true),
            names: names(),
        },
        "docker" => OutputKind::Docker {
            dest: dest()?,
            names: names(),
        },
        "local" => match dest()? {
            Dest::Stdout => OutputKind::Tar { dest: Dest::Stdout },
            Dest::Path(dest) => OutputKind::Local { dest },
        },
        _ => OutputKind::Tar { dest: dest()? },
    };
    if let OutputKind::Oci {
        dest: Dest::Stdout,
        tar: false,
        ..
    } = kind
    {
        bail!(
            "{}: an OCI layout directory (tar=false) cannot go to stdout",
            flag()
        );
    }
    let mut compression = compression(&flag(), &kv)?;
    compression.force = boolean("force-compression")?.unwrap_or(false);
    let oci_media_types = boolean("oci-mediatypes")?;
    if compression.kind == CompressionKind::Zstd && oci_media_types == Some(false) {
        bail!(
            "{}: compression=zstd needs OCI media types; drop oci-mediatypes=false",
            flag()
        );
    }
    Ok(OutputSpec {
        kind,
        compression,
        oci_media_types,
        rewrite_timestamp: boolean("rewrite-timestamp")?.unwrap_or(false),
    })
}

/// Splits a buildx-style flag value `k=v,k=v` into its pairs; each key at most once.
pub fn key_values<'a>(flag: &str, spec: &'a str) -> Result<HashMap<&'a str, &'a str>> {
    let mut kv = HashMap::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            anyhow!("{flag} {spec:?}: {part:?} is not key=value, as in type=...,dest=...")
        })?;
        if kv.insert(k.trim(), v.trim()).is_some() {
            bail!("{flag} {spec:?}: {k:?} given twice");
        }
    }
    Ok(kv)
}

/// Refuses `--push` without a name to push to, before anything is built.
pub fn check_push(push: bool, tags: &[String]) -> Result<()> {
    if push && tags.is_empty() {
        bail!("--push needs a name to push to; add -t registry.example.com/repo:tag");
    }
    Ok(())
}

/// `compression=` and `compression-level=` of an `--output` (`flag` names it in errors).
fn compression(flag: &str, kv: &HashMap<&str, &str>) -> Result<Compression> {
    let mut compression = Compression::default();
    if let Some(value) = kv.get("compression") {
        compression.kind = value.parse().map_err(|e| anyhow!("{flag}: {e}"))?;
    }
    if let Some(value) = kv.get("compression-level") {
        let level: i32 = value
            .parse()
            .map_err(|_| anyhow!("{flag}: compression-level={value:?} is not a number"))?;
        let range = compression.kind.level_range();
        if !range.contains(&level) {
            bail!(
                "{flag}: compression-level={level} is out of range for {} ({}..={})",
                compression.kind,
                range.start(),
                range.end()
            );
        }
        compression.level = Some(level);
    }
    Ok(compression)
}

/// Checks what can be checked before building: each output's own rules, and
/// `rewrite-timestamp` needs SOURCE_DATE_EPOCH.
pub fn check_outputs(
    outputs: &[Arc<dyn Exporter>],
    source_date_epoch: Option<u64>,
    platforms: usize,
) -> Result<()> {
    for output in outputs {
        output.image_format(source_date_epoch)?;
        output.check(platforms)?;
    }
    Ok(())
}

/// SOURCE_DATE_EPOCH from `--build-arg` (first) or the environment.
pub fn source_date_epoch(
    build_args: &std::collections::BTreeMap<String, String>,
) -> Result<Option<u64>> {
    let value = match build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(v.clone()),
        None => std::env::var("SOURCE_DATE_EPOCH").ok(),
    };
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")),
    }
}

/// How an image is materialised: layer compression/timestamps and manifest media types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageFormat {
    pub layers: LayerExportOptions,
    pub oci_media_types: bool,
}

impl Default for ImageFormat {
    fn default() -> Self {
        ImageFormat {
            layers: LayerExportOptions::default(),
            oci_media_types: true,
        }
    }
}

/// One platform's build result and the image config lowering made for it.
pub struct ExportTarget {
    /// Set for multi-platform builds: the manifest's platform in the index.
    pub platform: Option<Platform>,
    pub result: Ref,
    pub image: ImageConfig,
}

pub struct ExportRequest {
    pub context: ExportContext,
    pub outputs: Vec<Arc<dyn Exporter>>,
    pub source_date_epoch: Option<u64>,
    /// `--cache-to type=inline`: the build graph and its results, whose cache records go
    /// into the image config.
    pub inline_cache: Option<InlineCache>,
    /// `--annotation`s for the manifests, the index and their descriptors.
    pub annotations: exporter::Annotations,
    /// Provenance/SBOM to attach to OCI images (an index is then always made).
    pub attestations: Option<exporter::attestation::AttestationRequest>,
}

/// What an image with inline cache records is made from.
pub type InlineCache = (solver::Definition, Vec<Option<(Ref, String)>>);

/// The export's answer: the main image and what the outputs said.
pub struct ExportDone {
    pub main: Descriptor,
    pub notes: Vec<String>,
}

/// Performs every output and returns the manifest descriptor of the main image (the one the
/// tags name, or the first image made), for `--iidfile` and the summary line.
pub async fn export(request: ExportRequest) -> Result<ExportDone> {
    let ExportRequest {
        context,
        mut outputs,
        source_date_epoch,
        inline_cache,
        annotations,
        attestations,
    } = request;
    // -t alone means "into the local store", as with docker build.
    if !context.tags.is_empty() && !outputs.iter().any(|o| o.is_image_store()) {
        outputs.push(Arc::new(ImageStore::default()));
    }
    let recipe = images::Recipe {
        created: source_date_epoch.map(|epoch| exporter::format_rfc3339(epoch as i64)),
        inline_cache,
        attestations,
        annotations: Arc::new(annotations),
    };
    let formats: Vec<Option<ImageFormat>> = outputs
        .iter()
        .map(|o| o.image_format(source_date_epoch))
        .collect::<Result<_>>()?;
    // The default image always exists: it is what the summary line and --iidfile report.
    let mut wanted: Vec<ImageFormat> = formats.iter().flatten().copied().collect();
    if wanted.is_empty() {
        wanted.push(ImageFormat::default());
    }
    let mut made: HashMap<ImageFormat, Descriptor> = HashMap::new();
    for format in wanted {
        if let std::collections::hash_map::Entry::Vacant(slot) = made.entry(format) {
            let image = images::make_images(&context.solver, &context.targets, format, &recipe);
            slot.insert(image.await?);
        }
    }
    let (mut main, mut notes) = (None, Vec::new());
    for (output, format) in outputs.iter().zip(&formats) {
        let image = format.map(|f| made[&f].clone());
        let done = output.export(&context, image).await?;
        main = main.or(done.main);
        notes.extend(done.notes);
    }
    let main = main.unwrap_or_else(|| {
        made.get(&ImageFormat::default())
            .or_else(|| made.values().next())
            .cloned()
            .unwrap_or_default()
    });
    Ok(ExportDone { main, notes })
}

/// How the image outputs want built layers (the first one's way; gzip without any), so layers
/// made during the build are made that way once.
pub fn built_layer_options(
    outputs: &[Arc<dyn Exporter>],
    source_date_epoch: Option<u64>,
) -> Result<LayerExportOptions> {
    for output in outputs {
        if let Some(format) = output.image_format(source_date_epoch)? {
            return Ok(format.layers);
        }
    }
    Ok(LayerExportOptions::default())
}

/// Whether any output pushes to a registry.
pub fn pushes(outputs: &[Arc<dyn Exporter>]) -> bool {
    outputs.iter().any(|o| o.pushes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn is_path(dest: &Dest, path: &std::path::Path) -> bool {
        matches!(dest, Dest::Path(p) if p == path)
    }

    #[test]
    fn parses_buildx_style_outputs() {
        let oci = parse_output("type=oci,dest=a.tar,compression=zstd,compression-level=5").unwrap();
        assert!(
            matches!(&oci.kind, OutputKind::Oci { dest, tar: true, .. } if is_path(dest, Path::new("a.tar")))
        );
        assert_eq!(oci.compression.kind, CompressionKind::Zstd);
        assert_eq!(oci.compression.level, Some(5));
        assert_eq!(
            parse_output("-").unwrap().kind,
            OutputKind::Tar { dest: Dest::Stdout }
        );
        assert_eq!(
            parse_output("type=local,dest=-").unwrap().kind,
            OutputKind::Tar { dest: Dest::Stdout }
        );
        assert_eq!(
            parse_output("out").unwrap().kind,
            OutputKind::Local { dest: "out".into() }
        );
        assert_eq!(
            parse_output("type=registry,name=r/a:1").unwrap().kind,
            OutputKind::Image {
                names: vec!["r/a:1".into()],
                push: true
            }
        );
    }

    #[test]
    fn rejects_bad_outputs_naming_the_flag() {
        for (spec, needle) in [
            ("type=zip,dest=a", "unknown type"),
            ("type=oci", "dest= is required"),
            ("type=oci,dest=a,colour=red", "unknown key \"colour\""),
            ("type=local,dest=a,compression=zstd", "unknown key"),
            ("type=oci,dest=a,compression=lz4", "unknown compression"),
            (
                "type=oci,dest=a,compression=gzip,compression-level=42",
                "out of range",
            ),
            (
                "type=oci,dest=a,compression=zstd,oci-mediatypes=false",
                "needs OCI",
            ),
            ("type=oci,dest=-,tar=false", "stdout"),
            ("type=image,push=maybe", "not true or false"),
        ] {
            let err = parse_output(spec).unwrap_err().to_string();
            assert!(
                err.contains("--output") && err.contains(needle),
                "{spec}: {err}"
            );
        }
    }
}
