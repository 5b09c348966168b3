//! Running Compose projects on builder's runtime: `up`, `down` and the per-project views
//! and verbs of `builder compose`. The model comes from the `compose` crate (pure, no side
//! effects); containers, networks and volumes from `runtime`. Images are the caller's
//! concern, through [`ImageProvider`].

mod build_secrets;
mod command;
pub mod config;
mod convert;
mod down;
pub mod images;
mod labels;
mod logs;
mod project;
mod up;
pub mod verbs;
mod wait;

pub use command::{Command, ComposeCommand, UpArgs};
pub use convert::{one_off_stdio, service_spec, SpecContext};
pub use down::{down, DownOptions};
pub use labels::{config_hash, CONFIG_HASH, CONTAINER_NUMBER, ONEOFF, PROJECT, SERVICE};
pub use logs::{stream_logs, LogOptions};
pub use project::{list_projects, Stack};
pub use up::{up, UpOptions};
pub use wait::{wait_ready, DependencyError};

/// What a service's image needs before containers can be made from it.
pub struct BuildRequest {
    pub service: String,
    /// The tag the built image gets (`image:` or `PROJECT-SERVICE`).
    pub tag: String,
    pub build: compose::model::Build,
    /// `--secret` values from `build.secrets` (see [`Stack::build_request`]).
    pub secrets: Vec<String>,
}

/// Images for a stack: the CLI prepares (and builds, pulls) them; the stack makes containers.
pub trait ImageProvider: Send + Sync {
    /// Whether the image is in the local store.
    fn exists(&self, image: &str) -> bool;
    /// Builds every request in one go.
    fn build(&self, requests: &[BuildRequest]) -> anyhow::Result<()>;
    /// Pulls an image into the local store.
    fn pull(&self, image: &str) -> anyhow::Result<()>;
    /// Removes an image name from the local store; whether it was there.
    fn untag(&self, image: &str) -> anyhow::Result<bool>;
    /// The image ready to base containers on.
    fn prepare(&self, image: &str) -> anyhow::Result<runtime::PreparedImage>;
}
