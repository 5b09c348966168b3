//! The solver: build-graph types, scheduling, cache keys and the cache index.

pub mod archive;
pub mod cache;
pub mod chmod;
pub mod context;
pub mod fileop;
pub mod gc;
pub mod gha;
mod git;
mod http;
pub mod inflight;
mod merge;
pub mod mounts;
pub mod multi;
pub mod progress;
pub mod rebase;
pub mod solve;
mod ssh_proxy;
mod staging;

// The graph types and the pattern matcher live in the `llb` leaf crate; these paths stay.
pub use llb::{graph, patterns};
pub use llb::{Definition, Op, Vertex};
pub use mounts::{ExecConfig, ProvidedSecret, SecretSource};
pub use multi::MultiSolveOutput;
pub use solve::{Ref, SolveError, SolveOutput, Solver, SolverConfig};
