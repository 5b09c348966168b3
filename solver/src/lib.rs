//! The solver: build-graph types, scheduling, cache keys and the cache index.

pub mod archive;
pub mod chmod;
pub mod context;
pub mod fileop;
mod git;
pub mod graph;
mod http;
mod merge;
pub mod patterns;
pub mod progress;
pub mod solve;

pub use graph::{Definition, Op, Vertex};
pub use solve::{Ref, SolveError, SolveOutput, Solver, SolverConfig};
