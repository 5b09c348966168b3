//! The build graph: the contract between a frontend and the solver. Types only, no I/O:
//! ops and the [`Definition`] that orders them, the [`LocalSource`] contract for
//! client-provided directories, and Docker's path-pattern matcher that both sides apply.

pub mod graph;
pub mod local;
pub mod patterns;

pub use graph::{Definition, Op, Vertex};
pub use local::{LocalSource, PlainDir};
pub use patterns::PatternMatcher;
