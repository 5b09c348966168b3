//! Decoding images that docker 20.10, buildah and skopeo wrote (testdata/images, made by
//! scripts/make-fixtures.sh): Go writes nil maps and slices as `null`.

use std::path::PathBuf;

use oci::image::{is_index_media_type, ImageConfig, Index, Manifest};
use oci::Platform;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/images")
        .join(name)
}

fn read(name: &str, file: &str) -> Vec<u8> {
    let path = fixture(name).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The image manifest and config of a `skopeo copy dir:` fixture (an index is followed to
/// the host's platform).
fn image(name: &str) -> (Manifest, ImageConfig) {
    let top = read(name, "manifest.json");
    let media_type = serde_json::from_slice::<serde_json::Value>(&top).unwrap()["mediaType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest_bytes = if is_index_media_type(&media_type) {
        let index: Index = serde_json::from_slice(&top).unwrap();
        let chosen = index.find_platform(&Platform::host()).expect("host image");
        let hex = chosen.digest.strip_prefix("sha256:").unwrap();
        read(name, &format!("{hex}.manifest.json"))
    } else {
        top
    };
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).unwrap();
    let hex = manifest.config.digest.strip_prefix("sha256:").unwrap();
    let config: ImageConfig = serde_json::from_slice(&read(name, hex))
        .unwrap_or_else(|e| panic!("{name}: config {hex}: {e}"));
    (manifest, config)
}

#[test]
fn docker_import_nulls_read_as_unset() {
    let raw = String::from_utf8(read("docker-import", "manifest.json")).unwrap();
    assert!(raw.contains("application/vnd.docker.distribution.manifest.v2+json"));
    let (manifest, config) = image("docker-import");
    let hex = manifest.config.digest.strip_prefix("sha256:").unwrap();
    let config_text = String::from_utf8(read("docker-import", hex)).unwrap();
    // The fixture really has the nulls this test is about.
    for field in [
        "\"Env\":null",
        "\"Volumes\":null",
        "\"OnBuild\":null",
        "\"Labels\":null",
    ] {
        assert!(config_text.contains(field), "{field} not in {config_text}");
    }
    assert!(config.config.env.is_empty() && config.config.volumes.is_empty());
    assert!(config.config.labels.is_empty() && config.config.on_build.is_empty());
    assert_eq!(config.config.entrypoint, None);
    assert_eq!(config.config.cmd, None);
    assert_eq!(config.rootfs.diff_ids.len(), manifest.layers.len());
    assert_eq!(config.platform().to_string(), "linux/amd64");
}

#[test]
fn classic_builder_volumes_onbuild_and_history() {
    let (manifest, config) = image("docker-classic");
    assert_eq!(manifest.layers.len(), 2);
    assert!(config.config.volumes.contains_key("/data"));
    assert_eq!(config.config.on_build, ["RUN echo onbuild >/onbuild.txt"]);
    assert_eq!(
        config.config.cmd.as_deref(),
        Some(&["cat".to_string(), "/classic.txt".into()][..])
    );
    assert_eq!(config.config.labels["org.example.fixture"], "classic");
    assert!(config.history.iter().filter(|h| h.empty_layer).count() >= 4);
}

#[test]
fn every_fixture_decodes() {
    for name in [
        "docker-import",
        "docker-commit",
        "docker-classic",
        "buildah-oci",
        "buildah-docker",
        "skopeo-oci",
        "skopeo-v2s2",
        "attested",
        "docker-list",
    ] {
        let (manifest, config) = image(name);
        assert_eq!(
            config.rootfs.diff_ids.len(),
            manifest.layers.len(),
            "{name}: layers and diff_ids"
        );
        assert!(!manifest.layers.is_empty(), "{name}");
    }
}

#[test]
fn attestation_manifest_is_skipped_by_platform_selection() {
    let index: Index = serde_json::from_slice(&read("attested", "manifest.json")).unwrap();
    assert_eq!(index.manifests.len(), 2);
    let attestation = index
        .manifests
        .iter()
        .find(|m| oci::platform::is_attestation(m))
        .expect("an attestation entry");
    assert_eq!(
        attestation.platform.as_ref().unwrap().to_string(),
        "unknown/unknown"
    );
    let chosen = index.find_platform(&Platform::host()).unwrap();
    assert!(!oci::platform::is_attestation(chosen));
    let of: Vec<_> = oci::platform::attestations_of(&index.manifests, &chosen.digest).collect();
    assert_eq!(of, [attestation]);
    let unknown: Platform = "unknown/unknown".parse().unwrap();
    assert!(index.find_platform(&unknown).is_none());
}

#[test]
fn skopeo_layout_index_decodes() {
    let index: Index = serde_json::from_slice(&read("skopeo-layout", "index.json")).unwrap();
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(
        index.manifests[0].annotations["org.opencontainers.image.ref.name"],
        "classic"
    );
}
