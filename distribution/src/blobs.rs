//! Reading image documents (manifests, indexes, configs) out of the content store.

use oci::{Descriptor, Index, Platform};
use snapshotter::ContentStore;

use crate::{Error, Result};

/// Reads and parses a JSON blob.
pub fn read_json<T: serde::de::DeserializeOwned>(
    content: &ContentStore,
    descriptor: &Descriptor,
) -> Result<T> {
    if !content.has(&descriptor.digest) {
        return Err(Error::NotFound(format!(
            "blob {} ({})",
            descriptor.digest, descriptor.media_type
        )));
    }
    let bytes = content.read_blob(&descriptor.digest)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidImage(format!(
            "{} ({}) is not valid: {e}",
            descriptor.digest, descriptor.media_type
        ))
    })
}

/// Picks the manifest for `platform` out of `index` or reports what is available.
pub fn select_manifest(
    index: &Index,
    index_digest: &str,
    platform: &Platform,
) -> Result<Descriptor> {
    index
        .find_platform(platform)
        .cloned()
        .ok_or_else(|| Error::PlatformNotFound {
            platform: platform.to_string(),
            digest: index_digest.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}
