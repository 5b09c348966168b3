//! One module per kind of op. Each op computes its own cache key and produces its result
//! against the [`Worker`] (stores, executor, local sources, progress); none sees the
//! scheduler, the graph beyond its own vertex, or the cache index: finding a cached result
//! and recording a new one is the scheduler's (`solve`).

pub(crate) mod exec;
pub(crate) mod file;
pub(crate) mod git;
pub(crate) mod http;
pub(crate) mod image;
pub(crate) mod local;
pub(crate) mod merge;
pub mod rebase;

use crate::graph::{Definition, Op};
use crate::solve::Ref;
use crate::worker::{unique, Worker};
use anyhow::{bail, Result};
use executor::CancelToken;

/// A vertex's input: its result and its cache key.
pub(crate) type Input = (Ref, String);

/// The step an op runs as: its vertex and displayed name (empty: not shown), and the
/// build's cancellation.
pub(crate) struct Step<'a> {
    pub vertex: usize,
    pub name: &'a str,
    pub cancel: &'a CancelToken,
}

/// How the scheduler answers an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caching {
    /// Looked up by its key in the cache index (and imported caches); run on a miss as a
    /// reported step, its result recorded under the key.
    Index,
    /// The op finds or makes its result itself and reports its own progress: sources whose
    /// key names their content (the empty tree, the build context, an image's chain id).
    Own,
}

/// What running an op gave.
pub(crate) struct Produced {
    pub result: Ref,
    /// Whether it already existed (a source op's own cache).
    pub cached: bool,
}

impl Produced {
    /// A snapshot just made.
    pub fn built(snapshot: String) -> Self {
        Produced {
            result: Ref::Snapshot(snapshot),
            cached: false,
        }
    }
}

/// One kind of build step.
pub(crate) trait SolveOp {
    fn caching(&self) -> Caching {
        Caching::Index
    }

    /// Whether the step is shown in progress; stacking a copied layer is bookkeeping.
    fn shown(&self) -> bool {
        true
    }

    /// The cache key, from the op and its inputs' results and keys.
    fn cache_key(&mut self, w: &Worker, step: &Step, inputs: &[Input]) -> Result<String>;

    /// Produces the result; for [`Caching::Index`] ops, a new committed snapshot.
    fn run(&mut self, w: &Worker, step: &Step, inputs: &[Input]) -> Result<Produced>;

    /// Called when the scheduler is done with the op, run or answered from the cache: drops
    /// what computing the key prepared and the run did not use.
    fn release(&mut self, _w: &Worker) {}
}

/// The op of vertex `i`. `as_blob`: a file op made straight into a layer blob.
pub(crate) fn for_vertex(def: &Definition, i: usize, as_blob: bool) -> Box<dyn SolveOp + '_> {
    let v = &def.vertices[i];
    match &v.op {
        Op::Scratch => Box::new(Scratch),
        Op::Local { name } => Box::new(local::Local { name }),
        Op::Image {
            reference,
            platform,
        } => Box::new(image::SourceImage::new(reference, platform)),
        Op::Exec(exec) => Box::new(exec::Exec { op: &v.op, exec }),
        Op::File(file) => Box::new(file::File {
            op: &v.op,
            file,
            as_blob,
        }),
        Op::Rebase => Box::new(rebase::Rebase::new(def, i)),
        Op::Merge => Box::new(merge::Merge),
        Op::Http {
            url,
            filename,
            checksum,
        } => Box::new(http::Http::new(url, filename, checksum.as_deref())),
        Op::Git {
            remote,
            reference,
            subdir,
            keep_git_dir,
        } => Box::new(git::Git::new(
            remote,
            reference.as_deref(),
            subdir.as_deref(),
            *keep_git_dir,
        )),
    }
}

/// The empty tree.
struct Scratch;

impl SolveOp for Scratch {
    fn caching(&self) -> Caching {
        Caching::Own
    }

    fn cache_key(&mut self, _: &Worker, _: &Step, _: &[Input]) -> Result<String> {
        Ok("scratch".into())
    }

    fn run(&mut self, _: &Worker, _: &Step, _: &[Input]) -> Result<Produced> {
        Ok(Produced {
            result: Ref::Scratch,
            cached: true,
        })
    }
}

/// The snapshot input 0 names as the root filesystem to build on (None: empty).
pub(crate) fn parent_of(inputs: &[Input]) -> Result<Option<String>> {
    match inputs.first() {
        None | Some((Ref::Scratch, _)) => Ok(None),
        Some((Ref::Snapshot(s), _)) => Ok(Some(s.clone())),
        Some((Ref::Local(n), _)) => {
            bail!("local directory {n:?} cannot be used as a root filesystem")
        }
    }
}

/// Commits an active snapshot under a fresh name.
pub(crate) fn commit_new(w: &Worker, active: &str) -> Result<String> {
    let name = unique("layer");
    w.snapshots.commit(&name, active)?;
    Ok(name)
}

/// The snapshot of an [`Caching::Index`] op's result.
pub(crate) fn snapshot_of(produced: Produced) -> Result<String> {
    match produced.result {
        Ref::Snapshot(s) => Ok(s),
        other => bail!("a step made {other:?}, not a snapshot"),
    }
}
