//! The end-to-end tests: one test binary (one link) with a module per area, as
//! ripgrep's tests/. Run one area with `cargo test --test e2e AREA::`.

mod common;

mod action;
mod attest;
mod blob_layers;
mod build;
mod build_flags;
mod cache;
mod compat_config;
mod compat_errors;
mod compat_fs;
mod compose_config;
mod compose_stack;
mod confinement;
mod containers;
mod dockerfile_e2e;
mod escapes;
mod frontend_build;
mod gha;
mod gitlab;
mod incremental_copy;
mod limits;
mod mounts;
mod multinet;
mod networking;
mod outputs;
mod platform;
mod progress;
mod prune;
mod realworld;
mod registry;
mod remote;
mod robustness;
mod rootless;
mod stdio;
mod unprivileged;
mod volumes;
mod wild_images;
