//! `builder build --push`: pushes the built image (or multi-platform index) under each tag.

use anyhow::{bail, Context as _, Result};
use exporter::image::Descriptor;

/// Refuses `--push` without a name to push to, before anything is built.
pub fn check(push: bool, tags: &[String]) -> Result<()> {
    if push && tags.is_empty() {
        bail!("--push needs a name to push to; add -t registry.example.com/repo:tag");
    }
    Ok(())
}

/// Pushes `target` with its blobs to the registry of every tag.
pub async fn push_tags(
    content: &exporter::ContentStore,
    tags: &[String],
    target: &Descriptor,
) -> Result<()> {
    let client = exporter::RegistryClient::new();
    for tag in tags {
        let reference = exporter::Reference::parse(tag)?;
        client
            .push(&reference, target, content)
            .await
            .with_context(|| format!("pushing {}", reference.full_name()))?;
        eprintln!("pushed {} {}", reference.full_name(), target.digest);
    }
    Ok(())
}
