//! Images: OCI config/manifest/index types, layer compression, the local image store (tags),
//! OCI layout and docker archives, and registry push/pull.

pub mod annotations;
mod archive;
pub mod attestation;
pub mod auth;
pub mod compression;
pub mod config;
pub mod docker_engine;
pub mod image;
mod layer;
mod lenient;
mod load;
pub mod platform;
pub mod provenance;
pub mod reference;
pub mod registry;
pub mod sbom;
mod sources;
mod store;
mod time;

pub use annotations::{annotate_document, AnnotationKind, Annotations};
pub use archive::{
    export_docker_archive, export_docker_archive_multi, export_oci_archive,
    export_oci_archive_multi, export_oci_layout_dir,
};
pub use compression::{Compression, CompressionKind, LayerExportOptions};
pub use image::{
    ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, Index, Manifest, Platform,
    RootFs,
};
pub use layer::{
    import_rootfs_tar, open_layer, recompress_layer, write_image, write_image_bytes,
    write_image_with, write_index, write_layer, write_layer_with, LayerBlob,
};
pub use load::{load_archive, load_oci_layout, LoadedImage};
pub use reference::Reference;
pub use registry::{PushReport, RegistryClient};
pub use snapshotter::ContentStore;
pub use store::ImageStore;
pub use time::{format_rfc3339, now_rfc3339};

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of image handling.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// No image or blob by that name or digest.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid platform {0:?} (expected os/arch[/variant], e.g. linux/arm64)")]
    InvalidPlatform(String),
    /// An index has no manifest for the requested platform.
    #[error("no image for platform {platform} in {digest} (available: {available})")]
    PlatformNotFound {
        platform: String,
        digest: String,
        available: String,
    },
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// Malformed image content (bad JSON shape, layer count mismatch, wrong size, …).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The registry answered with an error or something unexpected.
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// A bad builder config file, docker config.json, credential helper or CA file.
    #[error("config: {0}")]
    Config(String),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("content store: {0}")]
    Store(#[from] snapshotter::Error),
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            context: "i/o error".to_string(),
            source,
        }
    }
}

/// Adds what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
