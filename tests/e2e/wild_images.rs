//! Images other tools made (testdata/images, by scripts/make-fixtures.sh with docker 20.10,
//! buildah and skopeo), put into a real docker-registry by skopeo: `FROM` each, `run` each,
//! and check that what is pushed keeps the base's blobs byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{context, stderr, stdout, Registry, Store};
use serde_json::Value;

/// Fixtures in `skopeo copy dir:` form, and a file each holds (with its content) besides
/// busybox. `docker-import` has nothing more than the root filesystem.
const FIXTURES: &[(&str, Option<(&str, &str)>)] = &[
    ("docker-import", None),
    ("docker-commit", Some(("/committed.txt", "committed"))),
    ("docker-classic", Some(("/classic.txt", "classic"))),
    ("buildah-oci", Some(("/buildah.txt", "buildah"))),
    ("buildah-docker", Some(("/buildah.txt", "buildah"))),
    ("skopeo-oci", Some(("/committed.txt", "committed"))),
    ("skopeo-v2s2", Some(("/buildah.txt", "buildah"))),
    ("attested", Some(("/buildah.txt", "buildah"))),
    ("docker-list", Some(("/buildah.txt", "buildah"))),
];

fn fixture(name: &str) -> PathBuf {
    crate::common::repo().join("testdata/images").join(name)
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(out.status.success(), "skopeo {args:?}: {}", stderr(&out));
    out.stdout
}

/// Puts a fixture into the registry as `wild/NAME:latest`, every byte as the tool wrote it.
fn push_fixture(registry: &Registry, name: &str) -> String {
    let reference = format!("{}/wild/{name}:latest", registry.addr);
    let src = format!("dir:{}", fixture(name).display());
    let dest = format!("docker://{reference}");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src,
        &dest,
    ]);
    reference
}

/// The manifest the registry holds for `reference`, as raw bytes (read by skopeo).
fn registry_manifest(reference: &str) -> Vec<u8> {
    let src = format!("docker://{reference}");
    skopeo(&["inspect", "--raw", "--tls-verify=false", &src])
}

/// The pushed image's manifest; a push attaches provenance by default, so the result is an
/// index whose one non-attestation entry is the image.
fn pushed_image_manifest(reference: &str) -> Value {
    let manifest = json(&registry_manifest(reference));
    let Some(entries) = manifest["manifests"].as_array() else {
        return manifest;
    };
    let image = entries
        .iter()
        .find(|e| e["platform"]["architecture"] != "unknown")
        .unwrap();
    let repo = reference.rsplit_once(':').unwrap().0;
    json(&registry_manifest(&format!(
        "{repo}@{}",
        image["digest"].as_str().unwrap()
    )))
}

fn registry_config(reference: &str) -> Value {
    let src = format!("docker://{reference}");
    serde_json::from_slice(&skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &src,
    ]))
    .unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// A fixture's image manifest (an index followed to its one linux/amd64 image) and config.
fn fixture_image(name: &str) -> (Value, Value) {
    let read = |file: &str| std::fs::read(fixture(name).join(file)).unwrap();
    let mut manifest = json(&read("manifest.json"));
    if let Some(entries) = manifest["manifests"].as_array() {
        let image = entries
            .iter()
            .find(|e| e["platform"]["architecture"] == "amd64")
            .unwrap();
        let hex = image["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        manifest = json(&read(&format!("{hex}.manifest.json")));
    }
    let hex = manifest["config"]["digest"].as_str().unwrap();
    let config = json(&read(hex.trim_start_matches("sha256:")));
    (manifest, config)
}

fn digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The pushed image starts with the base's layers (same blobs, same diff ids) and history.
fn assert_keeps_base(name: &str, pushed: &str) {
    let (base_manifest, base_config) = fixture_image(name);
    let manifest = pushed_image_manifest(pushed);
    let config = registry_config(pushed);
    let base_layers = digests(&base_manifest);
    assert_eq!(
        digests(&manifest)[..base_layers.len()],
        base_layers[..],
        "{name}: base layer blobs"
    );
    let base_diff_ids = base_config["rootfs"]["diff_ids"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert!(diff_ids.len() > base_diff_ids.len(), "{name}: a new layer");
    assert_eq!(
        &diff_ids[..base_diff_ids.len()],
        &base_diff_ids[..],
        "{name}"
    );
    let base_history = base_config["history"].as_array().unwrap();
    let history = config["history"].as_array().unwrap();
    assert_eq!(
        &history[..base_history.len()],
        &base_history[..],
        "{name}: history"
    );
}

fn dockerfile_on(base: &str, name: &str) -> tempfile::TempDir {
    context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN echo built-on-{name} >/built.txt\n"),
    )])
}

#[test]
fn every_fixture_builds_runs_and_pushes_with_the_base_blobs() {
    let registry = Registry::start();
    let store = Store::new();
    for (name, file) in FIXTURES {
        let base = push_fixture(&registry, name);
        let ctx = dockerfile_on(&base, name);
        let pushed = format!("{}/out/{name}:latest", registry.addr);
        ok(&store.build(ctx.path(), &["-t", &pushed, "--push"]), name);
        assert_keeps_base(name, &pushed);

        let mut command = vec!["run", "--rm", &pushed, "cat", "/built.txt"];
        if let Some((path, _)) = file {
            command.push(path);
        }
        let printed = ok(&store.run(&command), &format!("run {name}"));
        let expected = match file {
            Some((_, content)) => format!("built-on-{name}\n{content}\n"),
            None => format!("built-on-{name}\n"),
        };
        assert_eq!(printed, expected, "{name}");
        ok(&store.run(&["inspect", &base]), &format!("inspect {name}"));
        ok(&store.run(&["history", &base]), &format!("history {name}"));
    }
}

#[test]
fn classic_builder_image_keeps_its_volume_and_fires_its_onbuild_trigger() {
    let registry = Registry::start();
    let store = Store::new();
    let base = push_fixture(&registry, "docker-classic");
    ok(&store.run(&["pull", &base]), "pull");
    // Its own CMD, from a config full of docker's nulls.
    assert_eq!(ok(&store.run(&["run", "--rm", &base]), "run"), "classic\n");
    let ctx = dockerfile_on(&base, "classic");
    let pushed = format!("{}/out/classic:latest", registry.addr);
    ok(
        &store.build(ctx.path(), &["-t", &pushed, "--push"]),
        "build",
    );
    let printed = ok(
        &store.run(&["run", "--rm", &pushed, "cat", "/onbuild.txt"]),
        "run",
    );
    assert_eq!(printed, "onbuild\n", "the base's ONBUILD RUN ran");
    let config = registry_config(&pushed);
    assert!(config["config"]["Volumes"]["/data"].is_object(), "{config}");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/classic.txt"])
    );
    // Triggers fire once: the child image does not carry them on.
    assert!(config["config"]["OnBuild"].is_null(), "{config}");
}

#[test]
fn docker_import_image_runs_without_cmd_or_env() {
    let registry = Registry::start();
    let store = Store::new();
    let base = push_fixture(&registry, "docker-import");
    ok(&store.run(&["pull", &base]), "pull");
    let printed = ok(
        &store.run(&["run", "--rm", &base, "sh", "-c", "echo $PATH; id -u"]),
        "run",
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert!(lines[0].contains("/bin"), "a default PATH: {printed}");
    assert_eq!(lines[1], "0");
    // As a named context too (`COPY --from` reads its layers through another path).
    let ctx = context(&[(
        "Dockerfile",
        "FROM base\nCOPY --from=imported /etc/passwd /copied\n",
    )]);
    let named = format!("imported=docker-image://{base}");
    let based = format!("base=docker-image://{base}");
    ok(
        &store.build(
            ctx.path(),
            &[
                "--build-context",
                &named,
                "--build-context",
                &based,
                "-t",
                "named",
            ],
        ),
        "build with named contexts",
    );
    let printed = ok(
        &store.run(&["run", "--rm", "named", "cat", "/copied"]),
        "run",
    );
    assert!(printed.starts_with("root:x:0:0:"), "{printed}");
    // No command at all: nothing to run, said plainly (no panic).
    let out = store.run(&["run", "--rm", &base]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no command specified"),
        "{}",
        stderr(&out)
    );
}

/// `pull`, `prune`, `tag`, `push` of a base: the registry gets the very manifest (and for an
/// index, its attestation manifest too) that the tool wrote.
#[test]
fn pulled_images_push_back_byte_identical() {
    let registry = Registry::start();
    let store = Store::new();
    for (name, _) in FIXTURES {
        let base = push_fixture(&registry, name);
        ok(&store.run(&["pull", &base]), &format!("pull {name}"));
    }
    // Garbage collection keeps what the tags reach, attestations included.
    ok(&store.run(&["prune", "-af"]), "prune");
    for (name, _) in FIXTURES {
        let base = format!("{}/wild/{name}:latest", registry.addr);
        let copy = format!("{}/copy/{name}:latest", registry.addr);
        ok(&store.run(&["tag", &base, &copy]), &format!("tag {name}"));
        ok(&store.run(&["push", &copy]), &format!("push {name}"));
        let original = std::fs::read(fixture(name).join("manifest.json")).unwrap();
        assert_eq!(registry_manifest(&copy), original, "{name}: manifest bytes");
        let (manifest, _) = fixture_image(name);
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let pushed_config = registry_config(&copy);
        let fixture_config = std::fs::read(fixture(name).join(&config_digest[7..])).unwrap();
        assert_eq!(pushed_config, json(&fixture_config), "{name}: config");
    }
    // The attestation manifest came along with the image and went back out with it.
    let index = json(&std::fs::read(fixture("attested").join("manifest.json")).unwrap());
    let attestation = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["os"] == "unknown")
        .unwrap();
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    let digest = attestation["digest"].as_str().unwrap();
    let pushed = registry_manifest(&format!("{}/copy/attested@{digest}", registry.addr));
    let hex = &digest[7..];
    assert_eq!(
        pushed,
        std::fs::read(fixture("attested").join(format!("{hex}.manifest.json"))).unwrap()
    );
}

#[test]
fn docker_save_archive_loads_runs_and_saves() {
    let store = Store::new();
    let archive = fixture("docker-save.tar.gz");
    let loaded = ok(
        &store.run(&["load", "-i", archive.to_str().unwrap()]),
        "load",
    );
    assert!(
        loaded.contains("wild-fixture/docker-save:latest"),
        "{loaded}"
    );
    let name = "wild-fixture/docker-save";
    assert_eq!(
        ok(
            &store.run(&["run", "--rm", name, "cat", "/committed.txt"]),
            "run"
        ),
        "committed\n"
    );
    let inspected = json(ok(&store.run(&["inspect", name]), "inspect").as_bytes());
    assert_eq!(
        inspected["Config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let history = ok(&store.run(&["history", name]), "history");
    assert!(history.contains("Imported from -"), "{history}");
    assert!(history.contains("wild fixture"), "{history}");
    // Saved again, docker's config blob is the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    ok(
        &store.run(&["save", name, "-o", saved.to_str().unwrap()]),
        "save",
    );
    let (_, config) = fixture_image("docker-commit");
    let src = format!("docker-archive:{}", saved.display());
    let resaved = json(&skopeo(&["inspect", "--config", "--raw", &src]));
    assert_eq!(resaved, config);
    // And a build on it works offline.
    let ctx = dockerfile_on(name, "saved");
    ok(&store.build(ctx.path(), &["-t", "on-saved"]), "build");
}

#[test]
fn skopeo_oci_layout_is_a_build_context() {
    let store = Store::new();
    let layout = tempfile::tempdir().unwrap();
    copy_dir(&fixture("skopeo-layout"), layout.path());
    let ctx = dockerfile_on("base", "layout");
    let named = format!("base=oci-layout://{}:classic", layout.path().display());
    ok(
        &store.build(ctx.path(), &["--build-context", &named, "-t", "on-layout"]),
        "build",
    );
    let printed = ok(
        &store.run(&[
            "run",
            "--rm",
            "on-layout",
            "cat",
            "/classic.txt",
            "/built.txt",
        ]),
        "run",
    );
    assert_eq!(printed, "classic\nbuilt-on-layout\n");
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}
