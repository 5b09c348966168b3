//! The solver: build-graph types, scheduling, cache keys and the cache index.

pub mod archive;
pub mod chmod;
pub mod cache;
pub mod context;
pub mod fileop;
pub mod graph;
pub mod patterns;
pub mod multi;
pub mod mounts;
pub mod progress;
pub mod rebase;
pub mod solve;
mod ssh_proxy;

pub use graph::{Definition, Op, Vertex};
pub use multi::MultiSolveOutput;
pub use mounts::{ExecConfig, SecretSource};
pub use solve::{Ref, SolveError, SolveOutput, Solver, SolverConfig};
