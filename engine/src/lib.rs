//! The build API: one library entry point that the CLI (`builder build`), `compose build`
//! and a build server call. A [`BuildRequest`] (Dockerfile, contexts, args, platforms,
//! outputs, caches, secret and SSH providers, attestations) goes in; an [`Outcome`] (for a
//! build, the per-platform image descriptors and the metadata) comes out, while typed
//! progress [`Event`]s stream to the caller's [`EventSink`]. [`build_many`] runs several
//! requests as one solve, so the steps they share run once.
//!
//! The crate also owns the buildx-style specs of outputs, caches, secrets, SSH agents,
//! attestations and named contexts ([`output::parse_output`], [`cache::parse_cache_to`], ...),
//! so every client reads them the same way, and [`images::prepare`] for running an image.

pub mod attest;
pub mod cache;
pub mod checks_output;
pub mod command;
pub mod context;
mod events;
pub mod excerpt;
pub mod image_command;
pub mod images;
pub mod isolation;
pub mod output;
mod pipeline;
pub mod platforms;
pub mod prune_command;
pub mod render;
mod request;
mod rootfs_tar;
pub mod secrets;
pub mod settings;
pub mod stdin;

pub use events::{Event, EventSink};
pub use pipeline::{build, build_many};
pub use request::{
    BuildError, BuildRequest, BuildResult, CheckReport, Dockerfile, NamedSource, Outcome,
    PlatformImage,
};
pub use settings::Call;
