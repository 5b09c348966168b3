//! The solver: build-graph types, scheduling, cache keys and the cache index.

pub mod context;
pub mod fileop;
pub mod graph;
pub mod mounts;
pub mod progress;
pub mod solve;
mod ssh_proxy;

pub use graph::{Definition, Op, Vertex};
pub use mounts::{ExecConfig, SecretSource};
pub use solve::{Ref, SolveError, SolveOutput, Solver, SolverConfig};
