//! Tags persist in ROOT/images.json across reopen.

mod common;

use exporter::{Descriptor, ImageStore, Platform};

#[test]
fn tags_persist_across_reopen() {
    let root = tempfile::tempdir().unwrap();
    let content = common::content_store(&root.path().join("content"));
    let image = common::import_busybox(&content, "linux/amd64");
    let other = Descriptor::new(
        exporter::image::MEDIA_TYPE_OCI_INDEX,
        &exporter::sha256_digest(b"x"),
        1,
    );

    let store = ImageStore::open(root.path(), content.clone()).unwrap();
    store.tag("busybox", &image).unwrap();
    store.tag("localhost:5000/app:v1", &other).unwrap();
    assert_eq!(
        store.resolve("busybox:latest").unwrap(),
        Some(image.clone())
    );

    let reopened = ImageStore::open(root.path(), content.clone()).unwrap();
    assert_eq!(
        reopened.resolve("docker.io/library/busybox").unwrap(),
        Some(image.clone())
    );
    assert_eq!(
        reopened.resolve("localhost:5000/app:v1").unwrap(),
        Some(other.clone())
    );
    assert_eq!(reopened.resolve("busybox:other").unwrap(), None);
    // Digest prefixes resolve like docker image ids.
    let hex = image.digest.strip_prefix("sha256:").unwrap();
    assert_eq!(reopened.resolve(&hex[..12]).unwrap(), Some(image.clone()));
    assert_eq!(
        reopened.resolve(&image.digest).unwrap(),
        Some(image.clone())
    );
    let names: Vec<String> = reopened
        .list()
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        ["docker.io/library/busybox:latest", "localhost:5000/app:v1"]
    );

    assert!(reopened.untag("busybox").unwrap());
    assert!(!reopened.untag("busybox").unwrap());
    let again = ImageStore::open(root.path(), content).unwrap();
    assert_eq!(again.resolve("busybox").unwrap(), None);
    assert_eq!(again.list().unwrap().len(), 1);
    assert!(again.tag("Not Valid", &image).is_err());
}

#[test]
fn load_image_returns_manifest_and_config() {
    let root = tempfile::tempdir().unwrap();
    let content = common::content_store(root.path());
    let image = common::import_busybox(&content, "linux/arm64");
    let store = ImageStore::open(root.path(), content).unwrap();
    let (manifest_descriptor, manifest, config) = store
        .load_image(&image, &"linux/arm64".parse::<Platform>().unwrap())
        .unwrap();
    assert_eq!(manifest_descriptor, image);
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(config.architecture, "arm64");
    assert_eq!(config.created.as_deref(), Some(common::CREATED));
    assert_eq!(config.rootfs.diff_ids.len(), 1);
}
