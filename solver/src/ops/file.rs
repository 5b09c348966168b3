//! File ops (`COPY`, `ADD` of local files, `WORKDIR`'s mkdir): actions applied to a
//! writable snapshot of input 0, or, for a copy onto an empty tree that is only ever
//! stacked, to a tmpfs made straight into a layer blob. The copy semantics are `fileop`'s.

use crate::chmod::ModeSpec;
use crate::fileop::{self, CopyOptions, SourceTree};
use crate::graph::{FileAction, FileOp, Op};
use crate::incremental::IncrementalCopy;
use crate::ops::{commit_new, parent_of, Input, Produced, SolveOp, Step};
use crate::patterns::PatternMatcher;
use crate::solve::Ref;
use crate::worker::{
    layer_labels, sha256_hex, unique, MountGuard, MountedView, Worker, LABEL_LAYER_BUILT,
};
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) struct File<'a> {
    /// The vertex's op, serialised into the key.
    pub op: &'a Op,
    pub file: &'a FileOp,
    /// Made straight into a layer blob (see `Solver::layers_made_as_blobs`).
    pub as_blob: bool,
}

impl SolveOp for File<'_> {
    /// The op and its inputs' keys; a context input by the sources it reads.
    fn cache_key(&mut self, w: &Worker, _: &Step, inputs: &[Input]) -> Result<String> {
        let op_json = serde_json::to_vec(self.op)?;
        let mut input_keys = Vec::new();
        for (n, (r, k)) in inputs.iter().enumerate() {
            input_keys.push(match r {
                Ref::Local(local) => local_sources_checksum(w, local, self.file, n)?,
                _ => k.clone(),
            });
        }
        let mut parts: Vec<&[u8]> = vec![b"file", &op_json];
        parts.extend(input_keys.iter().map(|k| k.as_bytes()));
        Ok(sha256_hex(&parts))
    }

    fn run(&mut self, w: &Worker, _: &Step, inputs: &[Input]) -> Result<Produced> {
        if self.as_blob {
            // Anything the staging area cannot hold (size, xattrs) is copied on disk.
            if let Ok(made) = run_file_as_blob(w, self.op, self.file, inputs) {
                return Ok(Produced::built(made));
            }
        }
        run_file(w, self.file, inputs).map(Produced::built)
    }
}

/// Checksum of the files a file op reads from the local input at position `input`.
fn local_sources_checksum(w: &Worker, local: &str, file: &FileOp, input: usize) -> Result<String> {
    let idx = w.context_index(local)?;
    let src = SourceTree {
        root: &idx.root,
        index: Some(&idx),
    };
    let mut paths = Vec::new();
    // Sources copied with --exclude: checksums of only what they copy, so editing an
    // excluded file keeps the cache.
    let mut filtered = Vec::new();
    for a in &file.actions {
        if let FileAction::Copy {
            src_input,
            sources,
            exclude,
            ..
        } = a
        {
            if *src_input == input {
                let matcher = PatternMatcher::new(exclude.iter().map(String::as_str))
                    .map_err(|(n, e)| anyhow!("invalid --exclude #{n}: {e}"))?;
                for s in sources {
                    let m = src
                        .matches(s)
                        .map_err(|e| anyhow!("failed to compute cache key: {e}"))?;
                    if matcher.is_empty() {
                        paths.extend(m);
                    } else {
                        for rel in m {
                            filtered.push(fileop::checksum_excluding(&idx, &rel, &matcher));
                        }
                    }
                }
            }
        }
    }
    let all = idx.checksum(&paths);
    if filtered.is_empty() {
        return Ok(all);
    }
    let mut parts: Vec<&[u8]> = vec![all.as_bytes()];
    parts.extend(filtered.iter().map(|k| k.as_bytes()));
    Ok(sha256_hex(&parts))
}

pub(crate) fn run_file(w: &Worker, file: &FileOp, inputs: &[(Ref, String)]) -> Result<String> {
    let parent = parent_of(inputs)?;
    let active = unique("active");
    let mounts = w.snapshots.prepare(&active, parent.as_deref())?;
    let res = (|| -> Result<()> {
        let upper = w.snapshots.upper_dir(&active)?;
        let mut dest = FileDest::Overlay {
            view: MountGuard::mount(&w.root, &mounts)?,
            mounts: mounts.clone(),
            upper,
        };
        apply_file_actions(w, file, inputs, &mut dest, None)?;
        if let FileDest::Overlay { view, .. } = dest {
            view.release()?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => commit_new(w, &active),
        Err(e) => {
            let _ = w.snapshots.remove(&active);
            Err(e)
        }
    }
}

/// Runs a file op on an empty tree in a tmpfs and keeps only its layer blob: the result
/// is a pending snapshot whose files are unpacked only if something reads them. A copy of
/// client files that changed only in a few files' content is spliced from its previous
/// layer instead (see `incremental`).
fn run_file_as_blob(
    w: &Worker,
    op: &Op,
    file: &FileOp,
    inputs: &[(Ref, String)],
) -> Result<String> {
    let incremental = IncrementalCopy::of(w, &serde_json::to_vec(op)?, file, inputs)?;
    if let Some(inc) = &incremental {
        let mut made = None;
        let compression = &w.layer_export.compression;
        let spliced = exporter::write_layer_with(&w.content, compression, &mut |out| {
            made = inc.splice(w, out).map_err(std::io::Error::other)?;
            // Nothing written yet: the full copy follows and this blob is never committed.
            made.as_ref()
                .map(|_| ())
                .ok_or_else(|| std::io::Error::other("full copy"))
        });
        if let (Ok(blob), Some((listing, edits))) = (spliced, made) {
            inc.remember_spliced(&blob, edits);
            return pending_layer(w, &blob, listing);
        }
    }
    let staging = crate::staging::Tmpfs::mount(&w.root)?;
    let mut dest = FileDest::Plain(staging.path().to_path_buf());
    // A copy of client files alone stages them sparse: the tar reads their data from the
    // context, so the data is read once instead of copied and read again.
    let sparse = match file.actions.as_slice() {
        [FileAction::Copy {
            src_input,
            unpack: false,
            ..
        }] if matches!(inputs.get(*src_input), Some((Ref::Local(_), _))) => {
            Some(fileop::DataSources::default())
        }
        _ => None,
    };
    apply_file_actions(w, file, inputs, &mut dest, sparse.as_ref())?;
    let diff_options = snapshotter::layer::DiffOptions {
        data_sources: sparse.map(|s| Arc::new(std::mem::take(&mut *s.lock().unwrap()))),
        ..Default::default()
    };
    let compression = w.layer_export.compression;
    let blob = exporter::write_layer_with(&w.content, &compression, &mut |w| {
        snapshotter::layer::write_diff_tar(staging.path(), w, &diff_options)
            .map_err(std::io::Error::other)
    })?;
    if let (Some(inc), Some(sources)) = (&incremental, &diff_options.data_sources) {
        inc.remember(&blob, sources, staging.path());
    }
    // Listing the staged tree now spares the stacking check a read of the whole blob.
    let listing = crate::rebase::tree_entries(staging.path())?;
    pending_layer(w, &blob, listing)
}

/// A pending snapshot for a layer made as a blob, its listing kept for the stacking check.
fn pending_layer(
    w: &Worker,
    blob: &exporter::LayerBlob,
    listing: Vec<crate::rebase::LayerEntry>,
) -> Result<String> {
    let name = unique("layer");
    let mut labels = layer_labels(&blob.descriptor, &blob.diff_id);
    labels.insert(LABEL_LAYER_BUILT.into(), "1".into());
    w.snapshots.create_pending(&name, None, labels)?;
    w.blob_listings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.clone(), Arc::new(listing));
    Ok(name)
}

/// Applies a file op's actions to `dest` (copies sparse, their sources recorded in
/// `sparse`, when given).
fn apply_file_actions(
    w: &Worker,
    file: &FileOp,
    inputs: &[(Ref, String)],
    dest: &mut FileDest,
    sparse: Option<&fileop::DataSources>,
) -> Result<()> {
    // Source views stay mounted across actions; dropped (even on error) at the end.
    let mut views: HashMap<usize, MountedView> = HashMap::new();
    for action in &file.actions {
        match action {
            FileAction::Copy {
                src_input,
                sources,
                dest: to,
                chown,
                chmod,
                exclude,
                parents,
                unpack,
            } => {
                let owner = fileop::resolve_owner_opt(dest.path(), chown.as_ref())?;
                let opts = CopyOptions {
                    owner,
                    chmod: chmod.as_deref().map(ModeSpec::parse).transpose()?,
                    exclude: PatternMatcher::new(exclude.iter().map(String::as_str))
                        .map_err(|(n, e)| anyhow!("invalid --exclude #{n}: {e}"))?,
                    parents: *parents,
                    unpack: *unpack,
                    direct_upper: dest.direct_upper(),
                    sparse_data_from: sparse.cloned(),
                };
                let wrote_direct = match inputs.get(*src_input) {
                    Some((Ref::Local(local), _)) => {
                        let idx = w.context_index(local)?;
                        let src = SourceTree {
                            root: &idx.root,
                            index: Some(&idx),
                        };
                        fileop::copy(&src, sources, dest.path(), to, &opts)?
                    }
                    Some((Ref::Snapshot(snap), _)) => {
                        if !views.contains_key(src_input) {
                            views.insert(*src_input, w.mount_view(snap)?);
                        }
                        let src = SourceTree {
                            root: views[src_input].path(),
                            index: None,
                        };
                        fileop::copy(&src, sources, dest.path(), to, &opts)?
                    }
                    Some((Ref::Scratch, _)) => {
                        let empty = tempfile::tempdir()?;
                        let src = SourceTree {
                            root: empty.path(),
                            index: None,
                        };
                        fileop::copy(&src, sources, dest.path(), to, &opts)?
                    }
                    None => bail!("copy source input {src_input} does not exist"),
                };
                if wrote_direct {
                    dest.refresh(&w.root)?;
                }
            }
            FileAction::Mkdir { path, mode, chown } => {
                let owner = fileop::resolve_owner_opt(dest.path(), chown.as_ref())?;
                fileop::make_dir(dest.path(), path, *mode, owner)?;
            }
            FileAction::Mkfile {
                path,
                data,
                mode,
                chown,
            } => {
                let owner = fileop::resolve_owner_opt(dest.path(), chown.as_ref())?;
                fileop::make_file(dest.path(), path, data, *mode, owner)?;
            }
        }
    }
    Ok(())
}

/// Where a file op writes: an overlay mount of the active snapshot (with its upper dir, which
/// copies may write directly), or a plain directory.
enum FileDest {
    Overlay {
        view: MountGuard,
        mounts: Vec<snapshotter::Mount>,
        upper: PathBuf,
    },
    Plain(PathBuf),
}

impl FileDest {
    fn path(&self) -> &Path {
        match self {
            FileDest::Overlay { view, .. } => &view.0,
            FileDest::Plain(dir) => dir,
        }
    }

    fn upper(&self) -> &Path {
        match self {
            FileDest::Overlay { upper, .. } => upper,
            FileDest::Plain(dir) => dir,
        }
    }

    /// Where copies may write straight to the layer; not under a copied (mountless) view,
    /// whose changes are found by diffing it.
    fn direct_upper(&self) -> Option<PathBuf> {
        match self {
            FileDest::Overlay { .. } if snapshotter::mountless() => None,
            _ => Some(self.upper().to_path_buf()),
        }
    }

    /// After a write straight to the upper dir, overlay must be remounted to see it.
    fn refresh(&mut self, root: &Path) -> Result<()> {
        if let FileDest::Overlay { view, mounts, .. } = self {
            let fresh = MountGuard::mount(root, mounts)?;
            // The old mount goes (unmounted on drop) once the new one is up.
            drop(std::mem::replace(view, fresh));
        }
        Ok(())
    }
}
