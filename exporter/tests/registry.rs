//! Push to and pull from a real `docker-registry` on a loopback port.

mod common;

use common::{run, Registry};
use exporter::{ImageStore, Platform, Reference, RegistryClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_into_a_fresh_store_gives_the_same_digests() {
    let registry = Registry::start();
    let source_dir = tempfile::tempdir().unwrap();
    let source = common::content_store(source_dir.path());
    let image = common::import_busybox(&source, "linux/amd64");
    let reference = Reference::parse(&format!("{}/busybox:latest", registry.host())).unwrap();
    let client = RegistryClient::new();
    client.push(&reference, &image, &source).await.unwrap();
    // A second push finds every blob already there.
    client.push(&reference, &image, &source).await.unwrap();

    let inspect = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/busybox:latest", registry.host()),
        ],
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], image.digest.as_str());

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = common::content_store(fresh_dir.path());
    let pulled = RegistryClient::new()
        .pull(&reference, &"linux/amd64".parse().unwrap(), &fresh)
        .await
        .unwrap();
    assert_eq!(pulled.digest, image.digest);
    assert_eq!(pulled.size, image.size);
    assert_eq!(pulled.media_type, image.media_type);
    let store = ImageStore::open(fresh_dir.path(), fresh.clone()).unwrap();
    store.tag(&reference.full_name(), &pulled).unwrap();
    let source_store = ImageStore::open(source_dir.path(), source.clone()).unwrap();
    let host = "linux/amd64".parse::<Platform>().unwrap();
    let (_, pulled_manifest, pulled_config) = store.load_image(&pulled, &host).unwrap();
    let (_, manifest, config) = source_store.load_image(&image, &host).unwrap();
    assert_eq!(pulled_manifest, manifest);
    assert_eq!(pulled_config, config);
    for layer in &manifest.layers {
        assert_eq!(
            fresh.read_blob(&layer.digest).unwrap(),
            source.read_blob(&layer.digest).unwrap()
        );
    }

    // Pulling by digest works and verifies the manifest.
    let by_digest =
        Reference::parse(&format!("{}/busybox@{}", registry.host(), image.digest)).unwrap();
    let again = RegistryClient::new()
        .pull(&by_digest, &host, &fresh)
        .await
        .unwrap();
    assert_eq!(again.digest, image.digest);

    let missing = Reference::parse(&format!("{}/nothing:here", registry.host())).unwrap();
    let err = RegistryClient::new()
        .pull(&missing, &host, &fresh)
        .await
        .unwrap_err();
    assert!(matches!(err, exporter::Error::NotFound(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_of_an_index_picks_the_requested_platform() {
    let registry = Registry::start();
    let source_dir = tempfile::tempdir().unwrap();
    let source = common::content_store(source_dir.path());
    let amd64 = common::import_busybox(&source, "linux/amd64");
    let arm64 = common::import_busybox(&source, "linux/arm64");
    assert_ne!(amd64.digest, arm64.digest);
    let index = exporter::write_index(&source, &[amd64.clone(), arm64.clone()]).unwrap();
    let reference = Reference::parse(&format!("{}/multi:latest", registry.host())).unwrap();
    RegistryClient::new()
        .push(&reference, &index, &source)
        .await
        .unwrap();

    let inspect = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/multi:latest", registry.host()),
        ],
    );
    assert_eq!(exporter::sha256_digest(inspect.as_bytes()), index.digest);

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = common::content_store(fresh_dir.path());
    let arm64_platform: Platform = "linux/arm64/v8".parse().unwrap();
    let pulled = RegistryClient::new()
        .pull(&reference, &arm64_platform, &fresh)
        .await
        .unwrap();
    assert_eq!(pulled.digest, index.digest);
    assert_eq!(pulled.media_type, exporter::image::MEDIA_TYPE_OCI_INDEX);
    assert!(fresh.has(&arm64.digest));
    assert!(
        !fresh.has(&amd64.digest),
        "only the requested platform is pulled"
    );
    let store = ImageStore::open(fresh_dir.path(), fresh.clone()).unwrap();
    let (chosen, _, config) = store.load_image(&pulled, &arm64_platform).unwrap();
    assert_eq!(chosen.digest, arm64.digest);
    assert_eq!(config.architecture, "arm64");

    // The partially pulled index still exports (absent platforms are left out).
    let archive_path = fresh_dir.path().join("multi.tar");
    exporter::export_oci_archive(
        &fresh,
        &pulled,
        Some("multi:latest"),
        std::fs::File::create(&archive_path).unwrap(),
    )
    .unwrap();

    // Pushing it on names the missing platforms rather than one blob digest.
    let copy = Reference::parse(&format!("{}/partial:latest", registry.host())).unwrap();
    let err = RegistryClient::new()
        .push(&copy, &pulled, &fresh)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/amd64") && err.contains("--platform"),
        "{err}"
    );
    assert!(!err.contains("linux/arm64"), "{err}");

    let err = RegistryClient::new()
        .pull(&reference, &"linux/s390x".parse().unwrap(), &fresh)
        .await
        .unwrap_err();
    assert!(
        matches!(err, exporter::Error::PlatformNotFound { .. }),
        "{err}"
    );
}
