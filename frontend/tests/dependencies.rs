//! Parsing a Dockerfile must not compile a container runtime or an HTTP stack: `frontend`
//! depends on the leaf crates `llb` and `oci` only, and they stay leaves. This reads the
//! manifests of the three crates so that a new dependency on the solver, the exporter or
//! tokio fails here rather than silently growing the frontend's build.

use std::path::Path;

/// Everything `frontend`, `llb` and `oci` may depend on (normal dependencies).
const ALLOWED: &[&str] = &[
    "anyhow",
    "thiserror",
    "serde",
    "serde_json",
    "sha2",
    "hex",
    "regex",
    "unicode-general-category",
    "llb",
    "oci",
];

/// The names in the `[dependencies]` table of a Cargo.toml.
fn normal_dependencies(manifest: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn frontend_and_its_leaf_crates_depend_only_on_leaves() {
    let frontend = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = frontend.parent().expect("frontend sits in the workspace");
    let mut seen = Vec::new();
    for krate in ["frontend", "llb", "oci"] {
        let deps = normal_dependencies(&workspace.join(krate).join("Cargo.toml"));
        assert!(!deps.is_empty(), "{krate}: no [dependencies] read");
        for dep in deps {
            assert!(
                ALLOWED.contains(&dep.as_str()),
                "{krate} depends on {dep:?}; the frontend and its leaf crates must not pull in \
                 the solver, exporter, snapshotter, executor or an async/HTTP stack"
            );
            seen.push(dep);
        }
    }
    assert!(seen.iter().any(|d| d == "llb") && seen.iter().any(|d| d == "oci"));
}
