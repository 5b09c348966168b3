//! Merge ops (`COPY --link`): the result is input 0 with every other input's
//! layers replayed on top, each keeping its own layer blob. A changed base thus
//! leaves the linked layers' cache entries and blob digests untouched.

use crate::fileop::copy_tree_verbatim;
use crate::ops::{Input, Produced, SolveOp, Step};
use crate::solve::Ref;
use crate::worker::{sha256_hex, unique, Worker};
use anyhow::{bail, Result};

/// Input 0 with every other input's layers replayed on top.
pub(crate) struct Merge;

impl SolveOp for Merge {
    fn cache_key(&mut self, _: &Worker, _: &Step, inputs: &[Input]) -> Result<String> {
        let mut parts: Vec<&[u8]> = vec![b"merge"];
        parts.extend(inputs.iter().map(|(_, k)| k.as_bytes()));
        Ok(sha256_hex(&parts))
    }

    fn run(&mut self, w: &Worker, _: &Step, inputs: &[Input]) -> Result<Produced> {
        run_merge(w, inputs).map(Produced::built)
    }
}

/// Labels that carry a snapshot's layer blob; a replayed layer keeps them.
const LAYER_LABEL_PREFIX: &str = "builder.layer.";

/// The committed snapshots of a chain, base first.
fn chain(w: &Worker, top: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = Some(top.to_string());
    while let Some(key) = cur {
        cur = w.snapshots.stat(&key)?.parent;
        out.push(key);
    }
    out.reverse();
    Ok(out)
}

/// Produces the merged snapshot of `inputs` (input 0 first); returns its name.
pub(crate) fn run_merge(w: &Worker, inputs: &[(Ref, String)]) -> Result<String> {
    let mut top: Option<String> = match inputs.first() {
        None | Some((Ref::Scratch, _)) => None,
        Some((Ref::Snapshot(s), _)) => Some(s.clone()),
        Some((Ref::Local(n), _)) => bail!("local directory {n:?} cannot be merged"),
    };
    for (r, _) in inputs.iter().skip(1) {
        let layer_top = match r {
            Ref::Scratch => continue,
            Ref::Snapshot(s) => s,
            Ref::Local(n) => bail!("local directory {n:?} cannot be merged"),
        };
        // Make sure every layer has its blob (and labels) before replaying it.
        w.export_layers(r)?;
        for layer in chain(w, layer_top)? {
            top = Some(replay(w, top.as_deref(), &layer)?);
        }
    }
    match top {
        Some(t) => Ok(t),
        None => {
            // Nothing to merge at all: an empty committed snapshot.
            let active = unique("merge");
            w.snapshots.prepare(&active, None)?;
            let name = unique("layer");
            w.snapshots.commit(&name, &active)?;
            Ok(name)
        }
    }
}

/// Commits a copy of `layer`'s own dir on top of `parent`, with `layer`'s blob labels. Files are
/// copied, not hard-linked: a RUN on the result would see the shared inode's link count.
fn replay(w: &Worker, parent: Option<&str>, layer: &str) -> Result<String> {
    let snapshots = &w.snapshots;
    let info = snapshots.stat(layer)?;
    let blob_labels = || {
        info.labels
            .iter()
            .filter(|(k, _)| k.starts_with(LAYER_LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
    };
    if info.pending {
        // Its files are not unpacked: the replay is just as pending, on the new parent.
        let name = unique("layer");
        snapshots.create_pending(&name, parent, blob_labels().collect())?;
        return Ok(name);
    }
    let active = unique("merge");
    snapshots.prepare(&active, parent)?;
    let res = (|| -> Result<String> {
        let from = snapshots.upper_dir(layer)?;
        let to = snapshots.upper_dir(&active)?;
        copy_tree_verbatim(&from, &to)?;
        let name = unique("layer");
        snapshots.commit(&name, &active)?;
        snapshots.set_labels(&name, blob_labels())?;
        Ok(name)
    })();
    if res.is_err() {
        let _ = snapshots.remove(&active);
    }
    res
}
