//! Provenance and SBOM attestations end to end: pushed to a real registry as BuildKit lays
//! them out, SPDX validated against the vendored SPDX 2.3 schema, in-toto checked by its
//! fields, and the attested image pulled and run by docker 20.10.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
const SECRET_VALUE: &str = "s3cr3t-value-9f1c";

const DOCKERFILE: &str = "\
FROM busybox
ARG FOO
COPY status /var/lib/dpkg/status
COPY py/ /usr/lib/python3/dist-packages/demo-1.0.dist-info/
COPY node_modules/ /app/node_modules/
RUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo attested-$FOO > /marker
";

/// A git checkout whose package databases were written by the real tools (dpkg's status of
/// this host, a python dist-info METADATA installed by apt, `npm init`).
fn project() -> tempfile::TempDir {
    let ctx = context(&[("Dockerfile", DOCKERFILE)]);
    let dir = ctx.path();
    std::fs::copy("/var/lib/dpkg/status", dir.join("status")).unwrap();
    let dist_info = std::fs::read_dir("/usr/lib/python3/dist-packages")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("jsonschema-") && p.join("METADATA").is_file())
        .expect("python3-jsonschema (scripts/install-deps.sh) provides a dist-info");
    std::fs::create_dir_all(dir.join("py")).unwrap();
    std::fs::copy(dist_info.join("METADATA"), dir.join("py/METADATA")).unwrap();
    let pkg = dir.join("node_modules/demo-pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    run_ok(Command::new("npm").args(["init", "-y"]).current_dir(&pkg));
    git(dir, &["init", "-q"]);
    git(dir, &["add", "."]);
    git(
        dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "x",
        ],
    );
    git(
        dir,
        &[
            "remote",
            "add",
            "origin",
            "https://ci:tok3n@example.com/team/app.git",
        ],
    );
    ctx
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    stdout(&out)
}

fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(Command::new("git").arg("-C").arg(dir).args(args))
}

fn skopeo_raw(reference: &str) -> Value {
    let out = run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn pushed_image_carries_provenance_and_sbom_and_docker_runs_it() {
    let registry = Registry::start();
    let store = Store::with_busybox();
    let ctx = project();
    let image = format!("{}/attested/app:1", registry.addr);
    let out = store
        .cmd()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("TOK", SECRET_VALUE)
        .args(["build", "--progress=plain", "--push", "-t", &image])
        .args(["--build-arg", "FOO=bar", "--secret", "id=tok,env=TOK"])
        .args(["--provenance=mode=max", "--sbom=true"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", stderr(&out));

    let index = skopeo_raw(&image);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    let (img, att) = (&entries[0], &entries[1]);
    assert_eq!(att["platform"]["os"], "unknown");
    assert_eq!(att["platform"]["architecture"], "unknown");
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        img["digest"]
    );

    let statements = statements_via_builder_inspect(&store, &image);
    let by_type = |t: &str| statements.iter().find(|s| s["predicateType"] == t).cloned();
    let provenance = by_type("https://slsa.dev/provenance/v1").expect("provenance");
    let sbom = by_type("https://spdx.dev/Document").expect("sbom");
    let digest = img["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    for s in [&provenance, &sbom] {
        assert_eq!(s["_type"], "https://in-toto.io/Statement/v0.1");
        assert_eq!(s["subject"][0]["digest"]["sha256"], digest);
        assert!(s["subject"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("pkg:docker/"));
    }
    check_provenance(
        &provenance["predicate"],
        &git(ctx.path(), &["rev-parse", "HEAD"]),
    );
    check_sbom(&sbom["predicate"]);

    // skopeo picks this platform's image out of the index.
    let copied = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:app", copied.path().display());
    let src = format!("docker://{image}");
    run_ok(Command::new("skopeo").args(["copy", "-q", "--src-tls-verify=false", &src, &dest]));

    // docker 20.10 pulls the index (skipping the attestation entry) and runs the image.
    run_ok(Command::new("bash").arg(repo().join("scripts/start-dockerd.sh")));
    run_ok(Command::new("docker").args(["pull", "-q", &image]));
    let marker = run_ok(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "host",
        &image,
        "cat",
        "/marker",
    ]));
    assert_eq!(marker, "attested-bar\n");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

/// The statements `builder inspect` shows for the pushed image.
fn statements_via_builder_inspect(store: &Store, image: &str) -> Vec<Value> {
    let out = store.run(&["inspect", image]);
    assert!(out.status.success(), "inspect: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["Attestations"]
        .as_array()
        .expect("inspect shows attestations")
        .iter()
        .map(|a| a["Statement"].clone())
        .collect()
}

fn check_provenance(p: &Value, commit: &str) {
    let text = p.to_string();
    assert!(
        !text.contains(SECRET_VALUE),
        "a secret value leaked: {text}"
    );
    assert!(!text.contains("tok3n"), "remote credentials leaked: {text}");
    let def = &p["buildDefinition"];
    assert_eq!(
        def["buildType"],
        "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
    );
    let request = &def["externalParameters"]["request"];
    assert_eq!(request["args"]["build-arg:FOO"], "bar");
    assert_eq!(request["secrets"][0]["id"], "tok");
    let source = &def["externalParameters"]["configSource"];
    assert_eq!(source["uri"], "https://example.com/team/app.git");
    assert_eq!(source["digest"]["sha1"], commit.trim());
    assert_eq!(source["path"], "Dockerfile");
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let base = deps
        .iter()
        .find(|d| {
            d["uri"]
                .as_str()
                .unwrap()
                .starts_with("pkg:docker/busybox@latest?platform=")
        })
        .expect("the base image is a material");
    assert_eq!(base["digest"]["sha256"].as_str().unwrap().len(), 64);
    let meta = &p["runDetails"]["metadata"];
    assert_eq!(meta["startedOn"], EPOCH_RFC3339);
    assert_eq!(meta["finishedOn"], EPOCH_RFC3339);
    assert_eq!(meta["buildkit_metadata"]["vcs"]["revision"], commit.trim());
    assert!(p["runDetails"]["builder"]["id"].as_str().is_some());
    // mode=max: the build steps and the Dockerfile.
    let steps = def["internalParameters"]["buildConfig"]["steps"].to_string();
    assert!(steps.contains("RUN --mount=type=secret"), "{steps}");
}

fn check_sbom(doc: &Value) {
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], EPOCH_RFC3339);
    let schema = repo().join("testdata/spdx/spdx-schema-2.3.json");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("python3");
    let check = "import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))";
    run_ok(
        Command::new(python)
            .args(["-c", check])
            .arg(file.path())
            .arg(&schema),
    );
    let purls: Vec<String> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let has = |prefix: &str| purls.iter().any(|p| p.starts_with(prefix));
    assert!(has("pkg:deb/") && has("pkg:deb/debian/dpkg@"), "{purls:?}");
    assert!(has("pkg:pypi/jsonschema@"), "{purls:?}");
    assert!(has("pkg:npm/demo-pkg@1.0.0"), "{purls:?}");
}

#[test]
fn no_attestations_unless_asked_or_pushing() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo x > /x\n")]);
    let top_entry = |extra: &[&str]| -> Value {
        let dir = tempfile::tempdir().unwrap();
        let dest = format!("type=oci,tar=false,dest={}", dir.path().join("l").display());
        let out = store
            .cmd()
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["build", "--progress=plain", "-o", &dest])
            .args(extra)
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "build: {}", stderr(&out));
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("l/index.json")).unwrap())
                .unwrap();
        index["manifests"][0].clone()
    };
    let top = |extra: &[&str]| top_entry(extra)["mediaType"].as_str().unwrap().to_string();
    // Under SOURCE_DATE_EPOCH the attested index itself repeats.
    let both = ["--provenance=true", "--sbom=true"];
    assert_eq!(top_entry(&both)["digest"], top_entry(&both)["digest"]);
    let manifest = "application/vnd.oci.image.manifest.v1+json";
    assert_eq!(top(&[]), manifest);
    assert_eq!(
        top(&["--sbom=true"]),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        top(&["--sbom=true", "--attest", "type=sbom,disabled=true"]),
        manifest
    );
    let bad = store.build(ctx.path(), &["--provenance=mode=all"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--provenance"), "{}", stderr(&bad));
}
