//! Making a build's images: each platform's layers, config and manifest in one format,
//! then an index (with annotations and attestations) over several.

use super::{ExportTarget, ImageFormat, InlineCache};
use anyhow::{Context as _, Result};
use exporter::image::{Descriptor, ImageConfig, Platform};
use exporter::{AnnotationKind, Annotations};
use solver::Solver;
use std::sync::Arc;

/// Writes each target's layers, config and manifest in `format`; returns the manifest
/// descriptor, or for several targets the descriptor of an index over their manifests.
pub(super) async fn make_images(
    solver: &Arc<Solver>,
    targets: &Arc<Vec<ExportTarget>>,
    format: ImageFormat,
    recipe: &Recipe,
) -> Result<Descriptor> {
    let Recipe {
        created,
        inline_cache,
        attestations,
        annotations,
    } = recipe;
    // Attestations go only into OCI images, as with BuildKit.
    let attestations = attestations.as_ref().filter(|_| format.oci_media_types);
    let mut made = tokio::task::JoinSet::new();
    for position in 0..targets.len() {
        let (solver, targets, annotations) = (solver.clone(), targets.clone(), annotations.clone());
        let (created, inline_cache) = (created.clone(), inline_cache.clone());
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

/// What every image of a build is made with, whatever its format.
pub(super) struct Recipe {
    /// SOURCE_DATE_EPOCH fixes every time; otherwise each step's layer keeps its own.
    pub created: Option<String>,
    pub inline_cache: Option<InlineCache>,
    pub attestations: Option<exporter::attestation::AttestationRequest>,
    pub annotations: Arc<Annotations>,
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
