//! Attestations: the `--provenance`, `--sbom` and `--attest` specs (which to attach), and
//! the provenance facts gathered from the build.

use anyhow::{bail, Result};
use exporter::attestation::{AttestationRequest, Predicate, PREDICATE_SLSA_V1};
use exporter::provenance::{Material, ProvenanceInput, ProvenanceMode};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::Path;

/// The attestations asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttestFlags {
    pub provenance: Option<(ProvenanceMode, Option<String>)>,
    pub sbom: bool,
}

fn boolean(flag: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("{flag}: {v:?} is not true or false"),
    }
}

/// `mode=min|max`, `builder-id=URI`, `disabled=true` (or a bare true/false/min/max).
fn provenance_spec(flag: &str, spec: &str) -> Result<Option<(ProvenanceMode, Option<String>)>> {
    let mut mode = ProvenanceMode::Min;
    let mut builder_id = None;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or(("mode", part));
        match (k, v) {
            ("type", "provenance") => {}
            ("mode", "min") => mode = ProvenanceMode::Min,
            ("mode", "max") => mode = ProvenanceMode::Max,
            ("mode", "true") => {}
            ("mode", "false") | ("disabled", "true") => return Ok(None),
            ("disabled", "false") => {}
            ("builder-id", id) if !id.is_empty() => builder_id = Some(id.to_string()),
            _ => bail!(
                "{flag} {spec:?}: {part:?} is not mode=min|max, builder-id=URI or disabled=true"
            ),
        }
    }
    Ok(Some((mode, builder_id)))
}

/// Parses the flags; provenance defaults to mode=min when pushing, as buildx does.
pub fn parse(
    provenance: Option<&str>,
    sbom: Option<&str>,
    attest: &[String],
    pushing: bool,
) -> Result<AttestFlags> {
    let mut flags = AttestFlags {
        provenance: pushing.then_some((ProvenanceMode::Min, None)),
        sbom: false,
    };
    if let Some(p) = provenance {
        flags.provenance = provenance_spec("--provenance", p)?;
    }
    if let Some(s) = sbom {
        flags.sbom = match s.split_once('=') {
            Some(("generator", _)) => true,
            _ => boolean("--sbom", s)?,
        };
    }
    for a in attest {
        match a.split(',').find_map(|p| p.trim().strip_prefix("type=")) {
            Some("provenance") => flags.provenance = provenance_spec("--attest", a)?,
            Some("sbom") => flags.sbom = !a.contains("disabled=true"),
            Some(t) => bail!("--attest {a:?}: unknown type {t:?}; supported: provenance, sbom"),
            None => bail!("--attest {a:?}: type= is required (provenance or sbom)"),
        }
    }
    Ok(flags)
}

/// Facts about a build that its provenance records.
pub struct BuildFacts<'a> {
    pub graph: &'a solver::Definition,
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub dockerfile_name: &'a str,
    pub dockerfile: &'a [u8],
    pub context: &'a Path,
    /// Ids of the secrets and SSH agents provided (never their sources or values).
    pub secret_ids: Vec<String>,
    pub ssh_ids: Vec<String>,
    pub started: String,
    pub source_date_epoch: Option<u64>,
}

/// The attestation request for the exporter; None when nothing is to be attached.
pub fn request(
    flags: &AttestFlags,
    facts: &BuildFacts,
    names: &[String],
) -> Result<Option<AttestationRequest>> {
    if flags.provenance.is_none() && !flags.sbom {
        return Ok(None);
    }
    let now = facts
        .source_date_epoch
        .map(|e| exporter::format_rfc3339(e as i64))
        .unwrap_or_else(exporter::now_rfc3339);
    let provenance = flags.provenance.as_ref().map(|(mode, id)| Predicate {
        predicate_type: PREDICATE_SLSA_V1.into(),
        predicate: exporter::provenance::slsa_v1(&provenance_input(*mode, id, facts, &now)),
    });
    Ok(Some(AttestationRequest {
        provenance,
        sbom: flags.sbom,
        names: names.to_vec(),
        created: now,
    }))
}

fn provenance_input(
    mode: ProvenanceMode,
    builder_id: &Option<String>,
    facts: &BuildFacts,
    finished: &str,
) -> ProvenanceInput {
    let mut attrs = BTreeMap::new();
    for (k, v) in facts.build_args {
        attrs.insert(format!("build-arg:{k}"), v.clone());
    }
    for (k, v) in facts.labels {
        attrs.insert(format!("label:{k}"), v.clone());
    }
    if let Some(t) = facts.target {
        attrs.insert("target".into(), t.to_string());
    }
    attrs.insert("filename".into(), facts.dockerfile_name.to_string());
    let materials = materials(facts.graph);
    let max = mode == ProvenanceMode::Max;
    let host = exporter::Platform::host();
    ProvenanceInput {
        mode,
        builder_id: builder_id.clone().unwrap_or_else(default_builder_id),
        invocation_id: invocation_id(&attrs, &materials, facts.source_date_epoch),
        frontend_attrs: attrs,
        dockerfile_path: facts.dockerfile_name.to_string(),
        secret_ids: facts.secret_ids.clone(),
        ssh_ids: facts.ssh_ids.clone(),
        materials,
        git: exporter::provenance::git_source(facts.context),
        builder_platform: format!("{}/{}", host.os, host.architecture),
        started_on: facts.started.clone(),
        finished_on: finished.to_string(),
        dockerfile: max.then(|| facts.dockerfile.to_vec()),
        steps: if max {
            facts
                .graph
                .vertices
                .iter()
                .map(|v| v.name.clone())
                .collect()
        } else {
            vec![]
        },
    }
}

/// The base images of the build, pinned by digest.
fn materials(graph: &solver::Definition) -> Vec<Material> {
    let mut out: Vec<Material> = graph
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            solver::Op::Image {
                reference,
                platform,
            } => {
                let (name, digest) = reference.split_once('@')?;
                Some(Material {
                    reference: name.to_string(),
                    digest: digest.to_string(),
                    platform: platform.clone(),
                })
            }
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| (&a.reference, &a.platform).cmp(&(&b.reference, &b.platform)));
    out.dedup_by(|a, b| a.reference == b.reference && a.platform == b.platform);
    out
}

/// The run's URL in GitHub Actions or GitLab CI, as buildx sets `builder-id` there.
fn default_builder_id() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(server), Some(repo), Some(run)) = (
        env("GITHUB_SERVER_URL"),
        env("GITHUB_REPOSITORY"),
        env("GITHUB_RUN_ID"),
    ) {
        let attempt = env("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
        return format!("{server}/{repo}/actions/runs/{run}/attempts/{attempt}");
    }
    env("CI_JOB_URL").unwrap_or_else(|| "urn:builder:local".into())
}

/// Derived from the inputs under SOURCE_DATE_EPOCH (the index digest then repeats), else unique.
fn invocation_id(
    attrs: &BTreeMap<String, String>,
    materials: &[Material],
    epoch: Option<u64>,
) -> String {
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(attrs).unwrap_or_default());
    for m in materials {
        h.update(m.digest.as_bytes());
    }
    match epoch {
        Some(e) => h.update(e.to_le_bytes()),
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            h.update(format!("{t}-{}", std::process::id()));
        }
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..25].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_buildx() {
        let f = parse(None, None, &[], true).unwrap();
        assert_eq!(f.provenance, Some((ProvenanceMode::Min, None)));
        assert_eq!(
            parse(None, None, &[], false).unwrap(),
            AttestFlags::default()
        );
        let f = parse(Some("false"), Some("true"), &[], true).unwrap();
        assert_eq!((f.provenance, f.sbom), (None, true));
        let f = parse(Some("mode=max,builder-id=https://ci/1"), None, &[], false).unwrap();
        assert_eq!(
            f.provenance,
            Some((ProvenanceMode::Max, Some("https://ci/1".into())))
        );
        let a = [
            "type=provenance,mode=max".to_string(),
            "type=sbom".to_string(),
        ];
        let f = parse(None, None, &a, false).unwrap();
        assert_eq!(f.provenance.unwrap().0, ProvenanceMode::Max);
        assert!(f.sbom);
        for bad in [
            parse(Some("mode=all"), None, &[], false),
            parse(None, Some("maybe"), &[], false),
            parse(None, None, &["type=vex".into()], false),
            parse(None, None, &["mode=max".into()], false),
        ] {
            assert!(bad.is_err());
        }
    }
}
