//! Layers, OCI and docker archives, checked with skopeo, umoci and tar.

mod common;

use std::io::Read;

use common::{path_str, run};
use exporter::{open_layer, ImageStore, Platform};
use sha2::{Digest, Sha256};

#[test]
fn write_layer_hashes_uncompressed_and_compressed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let content = common::content_store(dir.path());
    let tar = common::busybox_rootfs_tar();
    let layer = exporter::write_layer(&content, &mut |out| out.write_all(&tar)).unwrap();
    assert_eq!(
        layer.diff_id,
        format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
    );
    let blob = content.read_blob(&layer.descriptor.digest).unwrap();
    assert_eq!(blob.len() as u64, layer.descriptor.size);
    assert_eq!(&blob[..2], &[0x1f, 0x8b], "layer is gzip");
    assert!(blob.len() < tar.len());
    let mut unpacked = Vec::new();
    open_layer(&content, &layer.descriptor)
        .unwrap()
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, tar);
}

#[test]
fn import_accepts_gzip_rootfs_with_the_same_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    let content = common::content_store(dir.path());
    let tar = common::busybox_rootfs_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let platform = Platform::host();
    let plain =
        exporter::import_rootfs_tar(&content, &tar[..], &platform, Some(common::CREATED)).unwrap();
    let gzipped =
        exporter::import_rootfs_tar(&content, &gz[..], &platform, Some(common::CREATED)).unwrap();
    let store = ImageStore::open(dir.path(), content.clone()).unwrap();
    let (_, plain_manifest, plain_config) = store.load_image(&plain, &platform).unwrap();
    let (_, gzip_manifest, gzip_config) = store.load_image(&gzipped, &platform).unwrap();
    assert_eq!(
        plain_config.rootfs, gzip_config.rootfs,
        "same rootfs, same diff ids"
    );
    assert_eq!(
        plain_manifest.layers, gzip_manifest.layers,
        "same layer blob"
    );
    assert_eq!(plain.digest, gzipped.digest, "same rootfs, same image");
}

#[test]
fn oci_archive_is_readable_by_skopeo_and_umoci() {
    let dir = tempfile::tempdir().unwrap();
    let content = common::content_store(&dir.path().join("content"));
    let image = common::import_busybox(&content, "linux/amd64");
    let archive_path = dir.path().join("busybox-oci.tar");
    let file = std::fs::File::create(&archive_path).unwrap();
    exporter::export_oci_archive(&content, &image, Some("busybox:latest"), file).unwrap();

    let inspect = run(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}", path_str(&archive_path)),
        ],
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], image.digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);

    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(
        "tar",
        &["-xf", path_str(&archive_path), "-C", path_str(&layout)],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "latest");
    assert_eq!(
        annotations["io.containerd.image.name"],
        "docker.io/library/busybox:latest"
    );

    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:latest", path_str(&layout)),
            path_str(&bundle),
        ],
    );
    let busybox = bundle.join("rootfs/bin/busybox");
    assert!(busybox.is_file());
    assert_eq!(
        std::fs::read(busybox).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
        std::path::Path::new("busybox")
    );
}

#[test]
fn docker_archive_is_readable_by_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let content = common::content_store(&dir.path().join("content"));
    let image = common::import_busybox(&content, "linux/amd64");
    let archive_path = dir.path().join("busybox-docker.tar");
    let file = std::fs::File::create(&archive_path).unwrap();
    exporter::export_docker_archive(
        &content,
        &image,
        &[
            "busybox:latest".to_string(),
            "localhost:5000/tools/busybox:1".to_string(),
        ],
        file,
    )
    .unwrap();

    let listing = run("tar", &["-tf", path_str(&archive_path)]);
    for expected in ["manifest.json", "repositories", "index.json", "oci-layout"] {
        assert!(
            listing.lines().any(|line| line == expected),
            "{expected} in {listing}"
        );
    }
    let extracted = dir.path().join("extracted");
    std::fs::create_dir(&extracted).unwrap();
    run(
        "tar",
        &["-xf", path_str(&archive_path), "-C", path_str(&extracted)],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(extracted.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["busybox:latest", "localhost:5000/tools/busybox:1"])
    );
    // Layers are stored uncompressed under their diff id.
    let store = ImageStore::open(dir.path(), content.clone()).unwrap();
    let (_, _, config) = store.load_image(&image, &Platform::host()).unwrap();
    let diff_hex = config.rootfs.diff_ids[0].strip_prefix("sha256:").unwrap();
    assert_eq!(manifest[0]["Layers"][0], format!("blobs/sha256/{diff_hex}"));
    let layer = std::fs::read(extracted.join(format!("blobs/sha256/{diff_hex}"))).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&layer)), diff_hex);
    let repositories: serde_json::Value =
        serde_json::from_slice(&std::fs::read(extracted.join("repositories")).unwrap()).unwrap();
    assert_eq!(repositories["busybox"]["latest"], diff_hex);

    let oci_dir = dir.path().join("copied");
    run(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", path_str(&archive_path)),
            &format!("oci:{}:t", path_str(&oci_dir)),
        ],
    );
    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:t", path_str(&oci_dir)),
            path_str(&bundle),
        ],
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    // The archive's OCI view is a valid layout too.
    run(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:latest", path_str(&archive_path)),
        ],
    );
}

#[test]
fn export_of_missing_blobs_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let content = common::content_store(dir.path());
    let missing = exporter::Descriptor::new(
        exporter::image::MEDIA_TYPE_OCI_MANIFEST,
        &exporter::sha256_digest(b"nothing"),
        7,
    );
    let err = exporter::export_oci_archive(&content, &missing, None, Vec::new()).unwrap_err();
    assert!(matches!(err, exporter::Error::NotFound(_)), "{err}");
    let err = exporter::export_docker_archive(&content, &missing, &[], Vec::new()).unwrap_err();
    assert!(matches!(err, exporter::Error::NotFound(_)), "{err}");
}
