/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of image handling: fetching, storing, reading and moving images.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// No image or blob by that name or digest.
    #[error("not found: {0}")]
    NotFound(String),
    /// A malformed reference, platform or digest.
    #[error(transparent)]
    Oci(#[from] oci::Error),
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
pub trait IoContext<T> {
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
