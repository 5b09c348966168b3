//! Images for running: a stored image's config and a snapshot of its filesystem to base a
//! container's rootfs on (`builder run`, `create`, compose).

use anyhow::{anyhow, Result};
use exporter::image::ImageConfig;
use solver::graph::{Definition, Op, Vertex};
use solver::{Ref, Solver, SolverConfig};
use std::collections::HashMap;
use std::path::Path;

/// An image ready to run.
pub struct PreparedImage {
    /// Where container snapshots are made (on `parent`).
    pub snapshots: snapshotter::Snapshotter,
    /// The manifest digest.
    pub image_id: String,
    pub config: ImageConfig,
    /// The committed snapshot of the image's filesystem (None for an empty image).
    pub parent: Option<String>,
}

/// Resolves `reference` in the store under `root`, checks it against `platform` (the
/// `--platform` flag; without it a foreign image runs anyway, emulated when binfmt_misc
/// allows) and unpacks its layers into a snapshot.
pub async fn prepare(
    root: &Path,
    reference: &str,
    platform: Option<&str>,
) -> Result<PreparedImage> {
    let solver = std::sync::Arc::new(Solver::new(SolverConfig {
        root: root.to_path_buf(),
        executor: executor::Executor::current_exe()?,
        locals: HashMap::new(),
        no_cache: false,
        progress: solver::progress::Progress::discard(),
        exec: Default::default(),
        layer_export: Default::default(),
    })?);
    let target = solver
        .images
        .resolve(reference)?
        .ok_or_else(|| anyhow!("no such image: {reference} (see `builder images`)"))?;
    let wanted = crate::platforms::run_platform(platform)?;
    let (manifest, _, config) = solver.images.load_image(&target, &wanted)?;
    crate::platforms::check_image_platform(reference, &config, &wanted, platform.is_some())?;
    let name = exporter::reference::Reference::parse(reference)
        .map(|r| exporter::reference::Reference { digest: None, ..r }.full_name())
        .unwrap_or(reference.to_string());
    let def = Definition {
        vertices: vec![Vertex {
            op: Op::Image {
                reference: format!("{name}@{}", manifest.digest),
                platform: config.platform().to_string(),
            },
            inputs: vec![],
            name: "image".into(),
            ignore_cache: false,
        }],
        output: Some(0),
    };
    let solved = solver
        .solve(&def, &executor::CancelToken::new())
        .await
        .map_err(|e| anyhow!("preparing {reference}: {e}"))?;
    let parent = match &solved.output {
        Ref::Snapshot(s) => Some(s.clone()),
        _ => None,
    };
    Ok(PreparedImage {
        snapshots: solver.snapshots.clone(),
        image_id: manifest.digest.clone(),
        config,
        parent,
    })
}

/// Makes a container's root filesystem from a snapshot key (`runtime::RootfsMaker`).
pub type RootfsMaker = dyn Fn(&str) -> Result<Vec<executor::Mount>> + Send + Sync;

/// Makes a managed container's root filesystem (`run -d`, compose): a new snapshot on
/// `parent`, as mounts (see `solver::solve::managed_rootfs`).
pub fn managed_rootfs(
    snapshots: snapshotter::Snapshotter,
    parent: Option<String>,
) -> Box<RootfsMaker> {
    Box::new(move |key| {
        let mounts = snapshots.prepare(key, parent.as_deref())?;
        solver::solve::managed_rootfs(&mounts)
    })
}
