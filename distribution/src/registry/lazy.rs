//! Piecemeal registry access for build-cache import: a manifest without its blobs, and single
//! blobs on demand.

use super::RegistryClient;
use crate::Result;
use oci::image::Descriptor;
use oci::reference::Reference;
use snapshotter::ContentStore;

impl RegistryClient {
    /// Fetches the manifest or index `reference` points at into the content store and
    /// returns its descriptor; no config or layer blobs are fetched.
    pub async fn pull_manifest(
        &self,
        reference: &Reference,
        content: &ContentStore,
    ) -> Result<Descriptor> {
        let repository = self.repository(&reference.registry, &reference.repository)?;
        let scope = format!("repository:{}:pull", repository.name);
        self.fetch_manifest(
            &repository,
            &scope,
            reference.manifest_reference(),
            reference.digest.as_deref(),
            content,
        )
        .await
    }

    /// Fetches one blob of `reference`'s repository into the content store (digest verified),
    /// unless it is there already.
    pub async fn pull_blob(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        content: &ContentStore,
    ) -> Result<()> {
        if content.has(&blob.digest) {
            return Ok(());
        }
        let repository = self.repository(&reference.registry, &reference.repository)?;
        let scope = format!("repository:{}:pull", repository.name);
        self.fetch_blob(&repository, &scope, blob, content).await
    }
}
