//! Image distribution: the registry client (pull, push, cross-repository mounts, lazy
//! blobs), authentication (docker config.json, credential helpers, token flows), the
//! registry host configuration (mirrors, TLS, plain HTTP), and reading image documents
//! out of the content store. The error type here is the one image handling shares.

pub mod auth;
pub mod blobs;
pub mod config;
mod error;
pub mod login;
pub mod registry;
mod sources;

pub use error::{Error, IoContext, Result};
pub use registry::{PushReport, RegistryClient};
