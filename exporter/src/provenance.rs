//! SLSA provenance v1 predicates laid out as BuildKit writes them
//! (`buildDefinition.externalParameters.request`, `internalParameters`, `resolvedDependencies`,
//! `runDetails.metadata.buildkit_*`). Secrets and SSH sockets appear by id only.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// BuildKit's build type URI: consumers read the document by its layout.
pub const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvenanceMode {
    Min,
    Max,
}

/// The repository a build context is checked out from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    /// `remote.origin.url`, or the directory when there is no remote.
    pub url: String,
    pub commit: String,
    pub dirty: bool,
}

/// A base image the build used, pinned.
#[derive(Clone, Debug)]
pub struct Material {
    pub reference: String,
    pub digest: String,
    pub platform: String,
}

/// What a provenance predicate says about a build.
#[derive(Clone, Debug)]
pub struct ProvenanceInput {
    pub mode: ProvenanceMode,
    pub builder_id: String,
    /// `build-arg:K`, `label:K`, `target`, ... as BuildKit's frontend attributes.
    pub frontend_attrs: BTreeMap<String, String>,
    pub dockerfile_path: String,
    pub secret_ids: Vec<String>,
    pub ssh_ids: Vec<String>,
    pub materials: Vec<Material>,
    pub git: Option<GitSource>,
    pub builder_platform: String,
    pub invocation_id: String,
    pub started_on: String,
    pub finished_on: String,
    /// mode=max: the Dockerfile, and the build steps in order.
    pub dockerfile: Option<Vec<u8>>,
    pub steps: Vec<String>,
}

/// The `https://slsa.dev/provenance/v1` predicate.
pub fn slsa_v1(input: &ProvenanceInput) -> Value {
    let ids = |ids: &[String]| -> Vec<Value> {
        ids.iter()
            .map(|id| json!({ "id": id, "optional": false }))
            .collect()
    };
    let mut config_source = json!({ "path": input.dockerfile_path });
    let mut dependencies: Vec<Value> = input
        .materials
        .iter()
        .map(|m| {
            json!({
                "uri": material_purl(m),
                "digest": { "sha256": m.digest.trim_start_matches("sha256:") },
            })
        })
        .collect();
    let mut metadata = json!({
        "invocationID": input.invocation_id,
        "startedOn": input.started_on,
        "finishedOn": input.finished_on,
        "buildkit_completeness": { "request": true, "resolvedDependencies": true },
        "buildkit_hermetic": false,
        "buildkit_reproducible": false,
        "buildkit_metadata": {},
    });
    if let Some(git) = &input.git {
        config_source["uri"] = json!(git.url);
        config_source["digest"] = json!({ "sha1": git.commit });
        dependencies.push(json!({ "uri": git.url, "digest": { "sha1": git.commit } }));
        metadata["buildkit_metadata"]["vcs"] = json!({
            "source": git.url,
            "revision": git.commit,
            "dirty": git.dirty,
        });
    }
    let mut internal = json!({ "builderPlatform": input.builder_platform });
    if input.mode == ProvenanceMode::Max {
        internal["buildConfig"] = json!({ "steps": input.steps });
        if let Some(d) = &input.dockerfile {
            metadata["buildkit_metadata"]["source"] = json!({
                "infos": [{
                    "filename": input.dockerfile_path,
                    "language": "Dockerfile",
                    "data": String::from_utf8_lossy(d),
                }],
            });
        }
    }
    let args: Map<String, Value> = input
        .frontend_attrs
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": config_source,
                "request": {
                    "frontend": "dockerfile.v0",
                    "args": args,
                    "secrets": ids(&input.secret_ids),
                    "ssh": ids(&input.ssh_ids),
                },
            },
            "internalParameters": internal,
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": { "id": input.builder_id },
            "metadata": metadata,
        },
    })
}

/// `pkg:docker/busybox@latest?platform=linux%2Famd64`, as BuildKit names base images.
fn material_purl(m: &Material) -> String {
    let name = m.reference.split('@').next().unwrap_or(&m.reference);
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (name, "latest"),
    };
    let repo = repo
        .trim_start_matches("docker.io/")
        .trim_start_matches("library/");
    format!(
        "pkg:docker/{repo}@{tag}?platform={}",
        m.platform.replace('/', "%2F")
    )
}

/// The git checkout `dir` is in, if any (through the `git` binary; none without it).
pub fn git_source(dir: &Path) -> Option<GitSource> {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    let url = git(&["config", "--get", "remote.origin.url"])
        .map(|u| strip_credentials(&u))
        .unwrap_or_else(|| format!("file://{}", dir.display()));
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    Some(GitSource { url, commit, dirty })
}

/// `https://user:token@host/x` → `https://host/x`: a remote's credentials stay out.
fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host))
                if !rest.split('/').next().unwrap_or("").is_empty()
                    && rest.find('@') < rest.find('/') =>
            {
                format!("{scheme}://{host}")
            }
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_and_credentials() {
        let m = Material {
            reference: "docker.io/library/busybox:1.36@sha256:ab".into(),
            digest: "sha256:ab".into(),
            platform: "linux/amd64".into(),
        };
        assert_eq!(
            material_purl(&m),
            "pkg:docker/busybox@1.36?platform=linux%2Famd64"
        );
        assert_eq!(
            strip_credentials("https://x:tok@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            strip_credentials("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
    }
}
