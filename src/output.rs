//! `--output`/`-o` of `builder build`: parsing the buildx-style specs and performing the exports
//! (local image store, registry, OCI/docker archives, OCI layout dir, local dir, rootfs tar).

use anyhow::{anyhow, bail, Context as _, Result};
use exporter::image::{Descriptor, ImageConfig, Platform};
use exporter::{AnnotationKind, Annotations, Compression, CompressionKind, LayerExportOptions};
use solver::{Ref, Solver};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a file output goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Dest {
    Stdout,
    Path(PathBuf),
}

impl Dest {
    fn parse(value: &str) -> Dest {
        if value == "-" {
            Dest::Stdout
        } else {
            Dest::Path(PathBuf::from(value))
        }
    }

    /// Runs `write` on a buffered writer for the destination. A file is written under a
    /// temporary name next to it and renamed into place only when complete, so a failed export
    /// never leaves a truncated archive behind.
    fn write_with(&self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
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
    fn image_format(&self) -> ImageFormat {
        ImageFormat {
            layers: LayerExportOptions {
                compression: self.compression,
                mtime_clamp: None,
            },
            oci_media_types: self.oci_media_types.unwrap_or(true),
        }
    }

    fn needs_image(&self) -> bool {
        !matches!(self.kind, OutputKind::Local { .. } | OutputKind::Tar { .. })
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
    let mut compression = Compression::default();
    if let Some(value) = kv.get("compression") {
        compression.kind = value.parse().map_err(|e| anyhow!("{}: {e}", flag()))?;
    }
    if let Some(value) = kv.get("compression-level") {
        let level: i32 = value
            .parse()
            .map_err(|_| anyhow!("{}: compression-level={value:?} is not a number", flag()))?;
        let range = compression.kind.level_range();
        if !range.contains(&level) {
            bail!(
                "{}: compression-level={level} is out of range for {} ({}..={})",
                flag(),
                compression.kind,
                range.start(),
                range.end()
            );
        }
        compression.level = Some(level);
    }
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

/// Checks what can be checked before building: `rewrite-timestamp` needs SOURCE_DATE_EPOCH.
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

pub fn check_outputs(
    outputs: &[OutputSpec],
    source_date_epoch: Option<u64>,
    platforms: usize,
) -> Result<()> {
    for output in outputs {
        format_of(output, source_date_epoch)?;
        if platforms > 1 {
            match output.kind {
                OutputKind::Docker { .. } => bail!(
                    "--output type=docker holds one image and cannot hold a multi-platform build; use type=oci"
                ),
                OutputKind::Tar { .. } => bail!(
                    "--output type=tar holds one filesystem; use type=local for a multi-platform build"
                ),
                _ => {}
            }
        }
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
struct ImageFormat {
    layers: LayerExportOptions,
    oci_media_types: bool,
}

/// Everything an export needs from the build.
/// One platform's build result and the image config lowering made for it.
pub struct ExportTarget {
    /// Set for multi-platform builds: the manifest's platform in the index.
    pub platform: Option<Platform>,
    pub result: Ref,
    pub image: ImageConfig,
}

pub struct ExportRequest<'a> {
    /// The storage root (scratch space for rootfs tars).
    pub root: &'a Path,
    pub solver: Arc<Solver>,
    /// One target for a single-platform build; several make an image index.
    pub targets: Vec<ExportTarget>,
    pub tags: &'a [String],
    pub outputs: Vec<OutputSpec>,
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

/// Performs every output and returns the manifest descriptor of the main image (the one the
/// tags name, or the first image made), for `--iidfile` and the summary line.
pub async fn export(request: ExportRequest<'_>) -> Result<Descriptor> {
    let ExportRequest {
        root,
        solver,
        targets,
        tags,
        mut outputs,
        source_date_epoch,
        inline_cache,
        annotations,
        attestations,
    } = request;
    let annotations = Arc::new(annotations);
    let targets = Arc::new(targets);
    let multi = targets.len() > 1;
    // -t alone means "into the local store", as with docker build.
    let has_image_output = outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::Image { .. }));
    if !has_image_output && !tags.is_empty() {
        outputs.push(OutputSpec {
            kind: OutputKind::Image {
                names: Vec::new(),
                push: false,
            },
            compression: Compression::default(),
            oci_media_types: None,
            rewrite_timestamp: false,
        });
    }
    // SOURCE_DATE_EPOCH fixes every time; otherwise each step's layer keeps its own.
    let created = source_date_epoch.map(|epoch| exporter::format_rfc3339(epoch as i64));
    let mut made: HashMap<ImageFormat, Descriptor> = HashMap::new();
    let mut main: Option<Descriptor> = None;
    // The default image always exists: it is what the summary line and --iidfile report.
    let default_format = OutputSpec {
        kind: OutputKind::Local {
            dest: PathBuf::new(),
        },
        compression: Compression::default(),
        oci_media_types: None,
        rewrite_timestamp: false,
    }
    .image_format();
    let mut formats: Vec<ImageFormat> = outputs
        .iter()
        .filter(|o| o.needs_image())
        .map(|o| format_of(o, source_date_epoch))
        .collect::<Result<_>>()?;
    if formats.is_empty() {
        formats.push(default_format);
    }
    for format in formats {
        if made.contains_key(&format) {
            continue;
        }
        let attest = attestations.as_ref().filter(|_| format.oci_media_types);
        let images = Images {
            created: &created,
            inline_cache: inline_cache.as_ref(),
            attestations: attest,
            annotations: &annotations,
        };
        let descriptor = make_images(&solver, &targets, format, images).await?;
        made.insert(format, descriptor);
    }

    for output in &outputs {
        let descriptor = if output.needs_image() {
            Some(made[&format_of(output, source_date_epoch)?].clone())
        } else {
            None
        };
        match (&output.kind, descriptor) {
            (OutputKind::Image { names, push }, Some(descriptor)) => {
                let names = if names.is_empty() { tags } else { names };
                for name in names {
                    solver.images.tag(name, &descriptor)?;
                }
                if *push {
                    if names.is_empty() {
                        bail!("--output type=registry: no image name; use -t or name=");
                    }
                    for name in names {
                        let reference = exporter::Reference::parse(name)?;
                        exporter::RegistryClient::new()
                            .push(&reference, &descriptor, &solver.content)
                            .await
                            .with_context(|| format!("pushing {name}"))?;
                        eprintln!("pushed {}", reference.full_name());
                    }
                }
                main.get_or_insert(descriptor);
            }
            (OutputKind::Oci { dest, tar, names }, Some(descriptor)) => {
                let content = solver.content.clone();
                let (dest, tar) = (dest.clone(), *tar);
                let name = names.first().or(tags.first()).cloned();
                tokio::task::spawn_blocking(move || -> Result<()> {
                    match (&dest, tar) {
                        (Dest::Path(dir), false) => exporter::export_oci_layout_dir(
                            &content,
                            &descriptor,
                            name.as_deref(),
                            dir,
                        )?,
                        _ => dest.write_with(|out| {
                            exporter::export_oci_archive(
                                &content,
                                &descriptor,
                                name.as_deref(),
                                out,
                            )?;
                            Ok(())
                        })?,
                    }
                    Ok(())
                })
                .await??;
            }
            (OutputKind::Docker { dest, names }, Some(descriptor)) => {
                let content = solver.content.clone();
                let dest = dest.clone();
                let tags = if names.is_empty() { tags } else { names }.to_vec();
                tokio::task::spawn_blocking(move || -> Result<()> {
                    dest.write_with(|out| {
                        exporter::export_docker_archive(&content, &descriptor, &tags, out)?;
                        Ok(())
                    })
                })
                .await??;
            }
            (OutputKind::Local { dest }, _) => {
                for target in targets.iter() {
                    // Several platforms: one subdirectory each, named like BuildKit's.
                    let dest = match (&target.platform, multi) {
                        (Some(p), true) => dest.join(crate::platforms::dir_name(p)),
                        _ => dest.clone(),
                    };
                    let (solver, result) = (solver.clone(), target.result.clone());
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
            }
            (OutputKind::Tar { dest }, _) => {
                let (solver, result, dest) =
                    (solver.clone(), targets[0].result.clone(), dest.clone());
                let scratch = root.join("tmp");
                tokio::task::spawn_blocking(move || {
                    dest.write_with(|out| {
                        crate::rootfs_tar::write_rootfs_tar(&solver, &result, &scratch, out)
                    })
                })
                .await??;
            }
            (kind, None) => unreachable!("{kind:?} makes an image"),
        }
    }
    Ok(main.unwrap_or_else(|| {
        made.get(&default_format)
            .or_else(|| made.values().next())
            .cloned()
            .unwrap_or_default()
    }))
}

/// How the image outputs want built layers (the first one's way; gzip without any), so layers
/// made during the build are made that way once.
pub fn built_layer_options(
    outputs: &[OutputSpec],
    source_date_epoch: Option<u64>,
) -> Result<LayerExportOptions> {
    match outputs.iter().find(|o| o.needs_image()) {
        Some(output) => Ok(format_of(output, source_date_epoch)?.layers),
        None => Ok(LayerExportOptions::default()),
    }
}

fn format_of(output: &OutputSpec, source_date_epoch: Option<u64>) -> Result<ImageFormat> {
    let mut format = output.image_format();
    if output.rewrite_timestamp {
        let epoch = source_date_epoch.ok_or_else(|| {
            anyhow!("--output rewrite-timestamp=true needs SOURCE_DATE_EPOCH (env or --build-arg)")
        })?;
        format.layers.mtime_clamp = Some(epoch);
    }
    Ok(format)
}

/// Writes each target's layers, config and manifest in `format`; returns the manifest
/// descriptor, or for several targets the descriptor of an index over their manifests.
async fn make_images(
    solver: &Arc<Solver>,
    targets: &Arc<Vec<ExportTarget>>,
    format: ImageFormat,
    images: Images<'_>,
) -> Result<Descriptor> {
    let Images {
        created,
        inline_cache,
        attestations,
        annotations,
    } = images;
    let mut made = tokio::task::JoinSet::new();
    for position in 0..targets.len() {
        let (solver, targets, annotations) = (solver.clone(), targets.clone(), annotations.clone());
        let (created, inline_cache) = (created.clone(), inline_cache.cloned());
        let attested = attestations.is_some();
        made.spawn_blocking(move || -> Result<(usize, Descriptor)> {
            let target = &targets[position];
            let mut manifest = make_image(
                &solver,
                target,
                created.as_deref(),
                format,
                inline_cache.as_ref(),
            )?;
            let config = &target.image;
            let own_platform =
                Platform::new(&config.os, &config.architecture, config.variant.as_deref());
            let platform = Some(target.platform.as_ref().unwrap_or(&own_platform));
            let own = annotations.of(AnnotationKind::Manifest, platform);
            manifest = exporter::annotate_document(&solver.content, &manifest, &own)?;
            manifest.annotations = annotations.of(AnnotationKind::ManifestDescriptor, platform);
            if targets.len() > 1 || attested {
                manifest.platform = Some(
                    target
                        .platform
                        .clone()
                        .unwrap_or_else(|| target.image.platform()),
                );
            }
            Ok((position, manifest))
        });
    }
    let mut manifests: Vec<Option<Descriptor>> = vec![None; targets.len()];
    while let Some(joined) = made.join_next().await {
        let (position, manifest) = joined.context("export task")??;
        manifests[position] = Some(manifest);
    }
    let mut manifests: Vec<Descriptor> = manifests.into_iter().flatten().collect();
    if let Some(request) = attestations.cloned() {
        let content = solver.content.clone();
        let index = tokio::task::spawn_blocking(move || {
            exporter::attestation::attach(&content, &manifests, &request)
        })
        .await?
        .context("attaching attestations")?;
        return annotate_index(solver, annotations, index);
    }
    if manifests.len() == 1 {
        return Ok(manifests.remove(0));
    }
    let index = exporter::write_index(&solver.content, &manifests)?;
    annotate_index(solver, annotations, index)
}

/// Applies the `index:` and `index-descriptor:` annotations to an index.
fn annotate_index(
    solver: &Solver,
    annotations: &Annotations,
    index: Descriptor,
) -> Result<Descriptor> {
    let own = annotations.of(AnnotationKind::Index, None);
    let mut index = exporter::annotate_document(&solver.content, &index, &own)?;
    index.annotations = annotations.of(AnnotationKind::IndexDescriptor, None);
    Ok(index)
}

/// What every image of one format is made with.
struct Images<'a> {
    created: &'a Option<String>,
    inline_cache: Option<&'a InlineCache>,
    attestations: Option<&'a exporter::attestation::AttestationRequest>,
    annotations: &'a Arc<Annotations>,
}

/// Whether any output pushes to a registry.
pub fn pushes(outputs: &[OutputSpec]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::Image { push: true, .. }))
}

/// Dates each new history entry by the layer it made and the image by its last entry, as
/// BuildKit's exporter does: an entry without a layer takes the time of the layer before it,
/// or, ahead of the first new layer, the time of that first new layer. A build answered from
/// the cache gives the same config, and so the same image digest.
fn stamp_history(config: &mut ImageConfig, layer_times: &[Option<String>]) {
    // Layers known only from an imported cache have no time: those steps are dated now. An
    // image with no time at all (FROM scratch and metadata only) stays undated, as BuildKit's.
    let now = layer_times
        .iter()
        .any(Option::is_none)
        .then(exporter::now_rfc3339);
    let mut layers = layer_times.iter();
    for h in config.history.iter_mut().filter(|h| !h.empty_layer) {
        let time = layers.next().cloned().flatten();
        if h.created.is_none() {
            h.created = time;
        }
    }
    // The first time found after an undated entry (else the last one before it).
    let mut fill: Option<String> = None;
    let mut seen_undated = false;
    for h in &config.history {
        match &h.created {
            Some(t) => {
                fill = Some(t.clone());
                if seen_undated {
                    break;
                }
            }
            None => seen_undated = true,
        }
    }
    seen_undated = false;
    for h in config.history.iter_mut() {
        match &h.created {
            Some(t) if seen_undated => fill = Some(t.clone()),
            Some(_) => {}
            None => {
                seen_undated = true;
                h.created = fill.clone().or_else(|| now.clone());
            }
        }
    }
    config.created = config
        .history
        .iter()
        .rev()
        .find_map(|h| h.created.clone())
        .or(now);
}

/// Writes one target's layers, config and manifest in `format`.
fn make_image(
    solver: &Solver,
    target: &ExportTarget,
    created: Option<&str>,
    format: ImageFormat,
    inline_cache: Option<&InlineCache>,
) -> Result<Descriptor> {
    let layers = solver.export_layers_with(&target.result, &format.layers)?;
    let mut config = target.image.clone();
    config.rootfs.kind = "layers".into();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    match created {
        Some(created) => {
            config.created = Some(created.to_string());
            for h in config.history.iter_mut().filter(|h| h.created.is_none()) {
                h.created = Some(created.to_string());
            }
        }
        None => stamp_history(&mut config, &solver.layer_times(&target.result)?),
    }
    let descriptors: Vec<_> = layers.iter().map(|l| l.descriptor.clone()).collect();
    if let Some((def, results)) = inline_cache {
        return solver::cache::write_image_with_inline_cache(
            solver,
            &config,
            &descriptors,
            def,
            results,
            format.oci_media_types,
        );
    }
    Ok(exporter::write_image_with(
        &solver.content,
        &config,
        &descriptors,
        format.oci_media_types,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
