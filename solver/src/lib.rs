//! The solver: the scheduler (`solve`), the ops it runs (`ops`, one module per kind) and
//! the worker they run against (`worker`), cache keys, the cache index and cache
//! import/export.

pub mod archive;
mod background;
pub mod cache;
pub mod chmod;
pub mod context;
pub mod fileop;
pub mod gc;
pub mod gha;
mod incremental;
pub mod inflight;
pub mod multi;
mod ops;
pub mod progress;
pub mod solve;
mod staging;
pub mod worker;

// The graph types and the pattern matcher live in the `llb` leaf crate; these paths stay.
pub use llb::{graph, patterns};
pub use llb::{Definition, Op, Vertex};
pub use mounts::{ExecConfig, ProvidedSecret, SecretSource};
pub use multi::MultiSolveOutput;
pub use ops::exec::mounts;
pub use ops::rebase;
pub use solve::{Ref, SolveError, SolveOutput, Solver, SolverConfig};
pub use worker::Worker;
