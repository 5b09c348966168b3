//! The crate's error type.

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors returned by the content store, the snapshotter and the layer code.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The named blob, snapshot or path does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The named blob or snapshot already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// An I/O operation failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The request or the input data is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with a description of the failed operation.
    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Adds context to I/O results.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`Error::Io`] with a lazily built context.
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
