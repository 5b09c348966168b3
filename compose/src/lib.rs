//! The Compose Specification model: loading, interpolation, merging,
//! validation and normalisation of `compose.yaml` files.

pub mod dotenv;
pub mod emit;
pub mod graph;
pub mod interpolate;
pub mod loader;
pub mod merge;
pub mod model;
pub mod normalize;
pub mod ports;
pub mod schema;
pub mod template;
pub mod volumes;
pub mod yaml;

pub use loader::{load, LoadError, Options, Project};

/// Every profile named by a service, sorted.
pub fn project_profiles(model: &yaml::Node) -> Vec<String> {
    let mut out: Vec<String> = model
        .get("services")
        .and_then(yaml::Node::as_map)
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|s| s.get("profiles").and_then(yaml::Node::as_seq))
        .flatten()
        .filter_map(yaml::Node::scalar_text)
        .collect();
    out.sort();
    out.dedup();
    out
}
