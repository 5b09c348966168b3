//! The Compose Specification model: loading, interpolation, merging,
//! validation and normalisation of `compose.yaml` files.

pub mod yaml;
pub mod dotenv;
pub mod ports;
pub mod schema;
pub mod template;
pub mod volumes;
pub mod emit;
pub mod graph;
pub mod interpolate;
pub mod loader;
pub mod merge;
pub mod normalize;

pub use loader::{load, LoadError, Options, Project};
