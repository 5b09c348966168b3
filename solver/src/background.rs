//! Built layers compressed in the background, in the image output's compression, while the
//! steps above them still run: the export (and a push) then finds each blob made.
//!
//! The work runs on a pool of niced threads, so the build's own steps keep the CPUs when they
//! need them. A layer is compressed by the same code the export runs, under the same per-layer
//! lock, so digests never depend on whether the background got to a layer first.

use crate::graph::{Definition, Op};
use crate::solve::{Ref, Solver};
use std::sync::{Arc, Condvar, Mutex};

/// Niceness of the background threads: they run when the build leaves a CPU idle.
const NICENESS: i32 = 15;

/// The pool and a count of queued jobs (for [`BackgroundLayers::wait`]).
pub(crate) struct BackgroundLayers {
    pool: rayon::ThreadPool,
    queued: Arc<(Mutex<usize>, Condvar)>,
}

impl BackgroundLayers {
    pub(crate) fn new() -> Option<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|n| format!("layer-compress-{n}"))
            // Linux nice values are per thread; threads these spawn (zstd's) inherit it.
            .start_handler(|_| {
                let _ = rustix::process::setpriority_process(None, NICENESS);
            })
            .build()
            .ok()?;
        Some(Self {
            pool,
            queued: Default::default(),
        })
    }

    /// Queues the blobs of `r`'s layers (those not made yet) to be made.
    pub(crate) fn queue(&self, solver: &Arc<Solver>, r: &Ref) {
        let (solver, r, queued) = (solver.clone(), r.clone(), self.queued.clone());
        *queued.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.pool.spawn(move || {
            // A failure here is the export's to report, when it makes the blob itself.
            let _ = solver.export_layers(&r);
            let mut n = queued.0.lock().unwrap_or_else(|e| e.into_inner());
            *n -= 1;
            queued.1.notify_all();
        });
    }

    /// Blocks until every queued layer is done.
    pub(crate) fn wait(&self) {
        let mut n = self.queued.0.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.queued.1.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The vertices whose result is a layer of an output image below its top: the filesystem
/// chain under each output (each op stacks on its input 0), without the outputs themselves,
/// whose layers the export needs at once (nothing runs above them to overlap with).
pub(crate) fn layers_below_outputs(def: &Definition, outputs: &[usize]) -> Vec<bool> {
    let mut below = vec![false; def.vertices.len()];
    for &output in outputs {
        let mut cur = parent_layer(def, output);
        while let Some(i) = cur {
            if below[i] {
                break;
            }
            below[i] = true;
            cur = parent_layer(def, i);
        }
    }
    for &output in outputs {
        below[output] = false;
    }
    below
}

/// The vertex whose tree `i` is built on, for ops that add a layer on their input 0.
fn parent_layer(def: &Definition, i: usize) -> Option<usize> {
    let v = &def.vertices[i];
    match v.op {
        Op::Exec(_) | Op::File(_) | Op::Merge | Op::Rebase => v.inputs.first().copied(),
        _ => None,
    }
}
