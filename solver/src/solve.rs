//! The scheduler: walks a build graph, computes each vertex's cache key through its op,
//! answers it from the cache index (or imported caches) when it can, runs it otherwise,
//! and runs independent vertices concurrently, each identical vertex once. What an op does
//! is its `ops` module's; the stores and services it runs against are the `Worker`'s.

use crate::context::{write_atomic, LocalSource};
use crate::graph::{Definition, Op};
use crate::mounts::ExecConfig;
use crate::multi::MultiSolveOutput;
use crate::ops::{self, Caching, Input, Step};
use crate::progress::{now, Event, Progress};
use crate::worker::Worker;
use anyhow::{anyhow, bail, Result};
use executor::{CancelToken, Executor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::ops::exec::{managed_rootfs, rootfs_mounts, RootfsView};

/// The result of one vertex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    /// An empty filesystem.
    Scratch,
    /// A committed snapshot.
    Snapshot(String),
    /// A client directory, by name.
    Local(String),
}

/// Why a solve failed, and at which vertex.
#[derive(Debug)]
pub struct SolveError {
    pub vertex: Option<usize>,
    pub error: anyhow::Error,
}

impl std::fmt::Display for SolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for SolveError {}

/// What a solve produced.
#[derive(Debug)]
pub struct SolveOutput {
    pub output: Ref,
    /// Vertices that really ran.
    pub executed: usize,
    /// Vertices answered from the cache.
    pub cached: usize,
    /// Each vertex's result and cache key (None for vertices the output does not need).
    pub results: Vec<Option<(Ref, String)>>,
}

/// Everything a solver needs from its surroundings.
pub struct SolverConfig {
    pub root: PathBuf,
    pub executor: Executor,
    pub locals: HashMap<String, Arc<dyn LocalSource>>,
    pub no_cache: bool,
    pub progress: Progress,
    /// Secrets, SSH agents and failure handling for exec ops.
    pub exec: ExecConfig,
    /// What the build's image export asks of built layers: layers made before the export
    /// (a copy stacked on a base, made as a blob) are made this way, so the export reuses them.
    pub layer_export: exporter::LayerExportOptions,
}

/// The scheduler over a [`Worker`]; it dereferences to its worker, so the stores and the
/// export of results are reached through it.
pub struct Solver {
    worker: Worker,
    no_cache: bool,
    /// Compresses the layers below the outputs while the build goes on (image outputs only).
    background: Option<crate::background::BackgroundLayers>,
}

impl std::ops::Deref for Solver {
    type Target = Worker;

    fn deref(&self) -> &Worker {
        &self.worker
    }
}

/// Each output must be a valid root of `def` (no cycles, inputs in range).
fn validate_outputs(def: &Definition, outputs: &[usize]) -> Result<(), SolveError> {
    let mut checked = def.clone();
    for &o in outputs {
        checked.output = Some(o);
        checked.validate().map_err(|e| SolveError {
            vertex: None,
            error: anyhow!(e),
        })?;
    }
    Ok(())
}

/// For each needed vertex, how many distinct inputs it waits for; for each vertex, the
/// needed vertices that wait for it.
fn dependency_counts(def: &Definition, needed: &[usize]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = def.vertices.len();
    let mut pending: Vec<usize> = vec![0; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &i in needed {
        let mut inputs = def.vertices[i].inputs.clone();
        inputs.sort_unstable();
        inputs.dedup();
        pending[i] = inputs.len();
        for j in inputs {
            dependents[j].push(i);
        }
    }
    (pending, dependents)
}

/// Steps run and steps answered from the cache.
#[derive(Default)]
struct StepTally {
    executed: usize,
    cached: usize,
}

impl StepTally {
    /// Counts what progress shows as steps, not the empty tree, the context or the
    /// stacking of a rebased copy.
    fn count(&mut self, op: &Op, was_cached: bool) {
        if matches!(op, Op::Scratch | Op::Local { .. } | Op::Rebase) {
            return;
        }
        if was_cached {
            self.cached += 1;
        } else {
            self.executed += 1;
        }
    }
}

impl Solver {
    /// Opens the stores under `cfg.root`. Must be called inside a tokio runtime.
    pub fn new(cfg: SolverConfig) -> Result<Self> {
        let no_cache = cfg.no_cache;
        Ok(Self {
            worker: Worker::open(cfg)?,
            no_cache,
            background: None,
        })
    }

    /// Compress built layers in the background, in the image output's compression, while
    /// the steps above them run (for builds whose outputs are images).
    pub fn with_background_layers(mut self, on: bool) -> Self {
        let wanted = on && self.layer_export.mtime_clamp.is_none();
        self.background = wanted
            .then(crate::background::BackgroundLayers::new)
            .flatten();
        self
    }

    /// Waits until the background has compressed every layer queued so far.
    pub fn wait_background_layers(&self) {
        if let Some(background) = &self.background {
            background.wait();
        }
    }

    /// `--pull`: re-resolve tagged base images against their registry.
    pub fn with_pull_always(mut self, pull: bool) -> Self {
        self.worker.pull_always = pull;
        self
    }

    fn cache_index_path(&self, key: &str) -> PathBuf {
        self.root
            .join("cache")
            .join("keys")
            .join(key.trim_start_matches("sha256:"))
    }

    fn cache_lookup(&self, key: &str) -> Option<String> {
        let name = std::fs::read_to_string(self.cache_index_path(key)).ok()?;
        let info = self.snapshots.stat(&name).ok()?;
        (info.kind == snapshotter::Kind::Committed).then(|| {
            crate::gc::mark_used(&self.cache_index_path(key));
            name
        })
    }

    fn cache_record(&self, key: &str, snapshot: &str) -> Result<()> {
        write_atomic(&self.cache_index_path(key), snapshot.as_bytes())?;
        Ok(())
    }

    /// Solves the output of `def` (and only what it needs).
    pub async fn solve(
        self: &Arc<Self>,
        def: &Definition,
        cancel: &CancelToken,
    ) -> Result<SolveOutput, SolveError> {
        def.validate().map_err(|e| SolveError {
            vertex: None,
            error: anyhow!(e),
        })?;
        let outputs: Vec<usize> = def.output.into_iter().collect();
        let mut solved = self.solve_outputs(def, &outputs, cancel).await?;
        Ok(SolveOutput {
            output: solved.outputs.remove(0),
            executed: solved.executed,
            cached: solved.cached,
            results: solved.results,
        })
    }

    /// Solves several vertices of `def` in one walk (a multi-platform build's per-platform
    /// outputs), so vertices they share run once; `def.output` is ignored.
    pub async fn solve_outputs(
        self: &Arc<Self>,
        def: &Definition,
        outputs: &[usize],
        cancel: &CancelToken,
    ) -> Result<MultiSolveOutput, SolveError> {
        validate_outputs(def, outputs)?;
        let def = Arc::new(def.clone());
        let needed = def.reachable_from(outputs);
        let (mut pending, dependents) = dependency_counts(&def, &needed);
        let mut results: Vec<Option<(Ref, String)>> = vec![None; def.vertices.len()];
        let mut tally = StepTally::default();
        let mut set = tokio::task::JoinSet::new();
        let mut first_error: Option<SolveError> = None;
        let as_blob = Arc::new(self.layers_made_as_blobs(&def, &needed, &dependents));
        let below_outputs = crate::background::layers_below_outputs(&def, outputs);

        let spawn = |set: &mut tokio::task::JoinSet<_>,
                     i: usize,
                     results: &[Option<(Ref, String)>]| {
            let inputs: Vec<(Ref, String)> = def.vertices[i]
                .inputs
                .iter()
                .map(|&j| results[j].clone().expect("inputs solved first"))
                .collect();
            let this = self.clone();
            let def = def.clone();
            let cancel = cancel.clone();
            let as_blob = as_blob[i];
            set.spawn_blocking(move || (i, this.run_vertex(&def, i, &inputs, as_blob, &cancel)));
        };
        for &i in &needed {
            if pending[i] == 0 {
                spawn(&mut set, i, &results);
            }
        }
        while let Some(joined) = set.join_next().await {
            let (i, res) = match joined {
                Ok(x) => x,
                Err(e) => {
                    cancel.cancel();
                    first_error.get_or_insert(SolveError {
                        vertex: None,
                        error: anyhow!("build step panicked: {e}"),
                    });
                    continue;
                }
            };
            match res {
                Ok((r, key, was_cached)) => {
                    tally.count(&def.vertices[i].op, was_cached);
                    if !was_cached {
                        self.export_early_if_stacked(&def, i, &dependents[i], &r);
                    }
                    if let (true, Some(background)) = (below_outputs[i], &self.background) {
                        background.queue(self, &r);
                    }
                    results[i] = Some((r, key));
                    if first_error.is_some() {
                        continue;
                    }
                    for &d in &dependents[i] {
                        pending[d] -= 1;
                        if pending[d] == 0 {
                            spawn(&mut set, d, &results);
                        }
                    }
                }
                Err(e) => {
                    // Stop siblings promptly (their containers are killed) but wait for
                    // them, so their temporary snapshots are cleaned up.
                    cancel.cancel();
                    if first_error.is_none() {
                        first_error = Some(SolveError {
                            vertex: Some(i),
                            error: e,
                        });
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let outputs = outputs
            .iter()
            .map(|&o| {
                results[o].clone().map(|r| r.0).ok_or_else(|| SolveError {
                    vertex: None,
                    error: anyhow!("output was not solved"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MultiSolveOutput {
            outputs,
            executed: tally.executed,
            cached: tally.cached,
            results,
        })
    }

    /// Compresses a fresh layer that a dependent stacks (`COPY --link`, a rebased copy)
    /// while the steps its stacking waits for still run.
    fn export_early_if_stacked(
        self: &Arc<Self>,
        def: &Definition,
        i: usize,
        dependents: &[usize],
        r: &Ref,
    ) {
        if self.layer_export.mtime_clamp.is_none()
            && self.layer_is_stacked_later(def, i, dependents)
        {
            let (this, r) = (self.clone(), r.clone());
            tokio::task::spawn_blocking(move || this.export_layers(&r));
        }
    }

    /// Whether vertex `i`'s layer will be stacked onto another tree by a dependent
    /// (`COPY --link` or a rebased copy), which needs its blob.
    fn layer_is_stacked_later(&self, def: &Definition, i: usize, dependents: &[usize]) -> bool {
        dependents.iter().any(|&d| {
            let v = &def.vertices[d];
            matches!(v.op, Op::Merge | Op::Rebase) && v.inputs.iter().skip(1).any(|&j| j == i)
        })
    }

    /// The file ops to make straight into a layer blob: copies onto an empty tree whose
    /// result is only ever stacked on a base and exported, never mounted. Their files then
    /// never touch the disk unless a later build runs a step on them.
    fn layers_made_as_blobs(
        &self,
        def: &Definition,
        needed: &[usize],
        dependents: &[Vec<usize>],
    ) -> Vec<bool> {
        let mut as_blob = vec![false; def.vertices.len()];
        if self.layer_export.mtime_clamp.is_some() {
            // The export rewrites every built layer anyway.
            return as_blob;
        }
        let mut memo = vec![None; def.vertices.len()];
        for &i in needed {
            let v = &def.vertices[i];
            let on_scratch = v
                .inputs
                .first()
                .is_some_and(|&j| matches!(def.vertices[j].op, Op::Scratch));
            as_blob[i] = matches!(v.op, Op::File(_))
                && on_scratch
                && self.layer_is_stacked_later(def, i, &dependents[i])
                && !tree_is_read(def, i, dependents, &mut memo);
        }
        as_blob
    }

    /// Computes the cache key of a vertex through its op and produces its result, from the
    /// cache if possible.
    fn run_vertex(
        &self,
        def: &Definition,
        i: usize,
        inputs: &[Input],
        as_blob: bool,
        cancel: &CancelToken,
    ) -> Result<(Ref, String, bool)> {
        if cancel.is_cancelled() {
            bail!("cancelled");
        }
        let v = &def.vertices[i];
        let mut op = ops::for_vertex(def, i, as_blob);
        let step = Step {
            vertex: i,
            name: if op.shown() { &v.name } else { "" },
            cancel,
        };
        let w = &self.worker;
        let res = (|| match op.caching() {
            Caching::Own => {
                let key = op.cache_key(w, &step, inputs)?;
                let produced = op.run(w, &step, inputs)?;
                Ok((produced.result, key, produced.cached))
            }
            Caching::Index => {
                let key = op.cache_key(w, &step, inputs)?;
                // Another build of this store producing the same RUN: wait for its result.
                let _claim = matches!(v.op, Op::Exec(_))
                    .then(|| crate::inflight::claim(&self.root, &key, cancel))
                    .transpose()?;
                self.cached_or_run(i, step.name, &key, v.ignore_cache, inputs, || {
                    ops::snapshot_of(op.run(w, &step, inputs)?)
                })
            }
        })();
        op.release(w);
        res
    }

    fn cached_or_run(
        &self,
        i: usize,
        name: &str,
        key: &str,
        ignore_cache: bool,
        inputs: &[(Ref, String)],
        run: impl FnOnce() -> Result<String>,
    ) -> Result<(Ref, String, bool)> {
        if !self.no_cache && !ignore_cache {
            let hit = self
                .cache_lookup(key)
                .or_else(|| self.cache_lookup_imported(key));
            if let Some(snap) = hit {
                self.report(Event::Cached {
                    vertex: i,
                    name: name.to_string(),
                    time: now(),
                });
                return Ok((Ref::Snapshot(snap), key.to_string(), true));
            }
        }
        let snap = self.run_step(i, name, || {
            // Inputs known only from imported cache records are unpacked now that a step
            // needs them.
            inputs.iter().try_for_each(|(r, _)| self.materialize(r))?;
            run()
        })?;
        self.cache_record(key, &snap)?;
        Ok((Ref::Snapshot(snap), key.to_string(), false))
    }
}

/// Whether anything reads the files of vertex `i`'s result (mounts it, copies from it, runs
/// on it), looking through the stacking ops that only pass layers on.
fn tree_is_read(
    def: &Definition,
    i: usize,
    dependents: &[Vec<usize>],
    memo: &mut Vec<Option<bool>>,
) -> bool {
    if let Some(known) = memo[i] {
        return known;
    }
    // Cycles cannot occur (validated graph); mark to be safe against deep recursion on revisits.
    memo[i] = Some(true);
    let read = dependents[i].iter().any(|&d| {
        let v = &def.vertices[d];
        match v.op {
            // A rebase reads its base (the stacking check) and a fallback copy's sources.
            Op::Rebase => {
                v.inputs.iter().position(|&j| j == i) != Some(1)
                    || tree_is_read(def, d, dependents, memo)
            }
            Op::Merge => tree_is_read(def, d, dependents, memo),
            _ => true,
        }
    });
    memo[i] = Some(read);
    read
}
