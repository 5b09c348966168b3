//! Attestations as BuildKit attaches them: per image manifest, an attestation manifest
//! (platform `unknown/unknown`) whose layers are in-toto statements, listed in the image index
//! after the images with `vnd.docker.reference.*` annotations. Docker and skopeo skip those
//! entries when picking a platform, so the image still pulls and runs.

use crate::image::{
    Descriptor, ImageConfig, Index, Manifest, Platform, RootFs, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::{ContentStore, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
pub const PREDICATE_SLSA_V1: &str = "https://slsa.dev/provenance/v1";
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";

/// An in-toto predicate to attach: its type URI and body.
#[derive(Clone, Debug)]
pub struct Predicate {
    pub predicate_type: String,
    pub predicate: Value,
}

/// The statement subjects for an image manifest: one per name (BuildKit's purls), or `_`.
pub fn subjects(names: &[String], manifest: &Descriptor, platform: &Platform) -> Vec<Value> {
    let hex = manifest.digest.trim_start_matches("sha256:");
    let platform = platform.to_string().replace('/', "%2F");
    let mut out: Vec<Value> = names
        .iter()
        .filter_map(|n| crate::Reference::parse(n).ok())
        .map(|r| {
            let name = match r.registry.as_str() {
                "docker.io" => r.repository.trim_start_matches("library/").to_string(),
                reg => format!("{reg}/{}", r.repository),
            };
            let tag = r.tag.as_deref().unwrap_or("latest");
            json!({
                "name": format!("pkg:docker/{name}@{tag}?platform={platform}"),
                "digest": { "sha256": hex },
            })
        })
        .collect();
    if out.is_empty() {
        out.push(json!({ "name": "_", "digest": { "sha256": hex } }));
    }
    out
}

/// An in-toto statement about `subjects`.
pub fn statement(predicate: &Predicate, subjects: &[Value]) -> Value {
    json!({
        "_type": STATEMENT_TYPE,
        "predicateType": predicate.predicate_type,
        "subject": subjects,
        "predicate": predicate.predicate,
    })
}

/// Writes the attestation manifest for the image manifest `subject` (its statements as
/// uncompressed layers) and returns its index entry.
pub fn write_attestation_manifest(
    content: &ContentStore,
    subject: &Descriptor,
    statements: &[(String, Value)],
) -> Result<Descriptor> {
    let mut layers = Vec::new();
    for (predicate_type, statement) in statements {
        let bytes = serde_json::to_vec(statement)?;
        let digest = content.put_bytes(&bytes)?;
        let mut d = Descriptor::new(MEDIA_TYPE_IN_TOTO, &digest, bytes.len() as u64);
        d.annotations
            .insert(ANNOTATION_PREDICATE_TYPE.into(), predicate_type.clone());
        layers.push(d);
    }
    let config = ImageConfig {
        architecture: "unknown".into(),
        os: "unknown".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
        },
        ..Default::default()
    };
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = content.put_bytes(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
        config: Descriptor::new(
            MEDIA_TYPE_OCI_CONFIG,
            &config_digest,
            config_bytes.len() as u64,
        ),
        layers,
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = content.put_bytes(&bytes)?;
    let mut d = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, &digest, bytes.len() as u64);
    d.platform = Some(Platform::new("unknown", "unknown", None));
    d.annotations.insert(
        ANNOTATION_REFERENCE_TYPE.into(),
        REFERENCE_TYPE_ATTESTATION.into(),
    );
    d.annotations
        .insert(ANNOTATION_REFERENCE_DIGEST.into(), subject.digest.clone());
    Ok(d)
}

/// Writes an index over `images` (each with its platform) followed by their attestation
/// manifests, as BuildKit orders them.
pub fn write_attested_index(
    content: &ContentStore,
    images: &[Descriptor],
    attestations: &[Descriptor],
) -> Result<Descriptor> {
    let mut manifests = images.to_vec();
    manifests.extend_from_slice(attestations);
    crate::write_index(content, &manifests)
}

/// Whether an index entry is an attestation manifest rather than an image.
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get(ANNOTATION_REFERENCE_TYPE)
        .map(String::as_str)
        == Some(REFERENCE_TYPE_ATTESTATION)
}

/// The attestations of an image index: (image manifest digest, predicate type, statement).
pub fn read_attestations(
    content: &ContentStore,
    index: &Index,
) -> Result<Vec<(String, String, Value)>> {
    let mut out = Vec::new();
    for entry in index.manifests.iter().filter(|d| is_attestation(d)) {
        let subject = entry
            .annotations
            .get(ANNOTATION_REFERENCE_DIGEST)
            .cloned()
            .unwrap_or_default();
        let manifest: Manifest = serde_json::from_slice(&content.read_blob(&entry.digest)?)?;
        // Other tools may store a statement another way (a tar layer), or it may not have
        // been pulled: such a layer is listed with a null statement rather than failing.
        for layer in &manifest.layers {
            let statement = (layer.media_type == MEDIA_TYPE_IN_TOTO)
                .then(|| content.read_blob(&layer.digest).ok())
                .flatten()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or(Value::Null);
            let kind = layer
                .annotations
                .get(ANNOTATION_PREDICATE_TYPE)
                .cloned()
                .unwrap_or_default();
            out.push((subject.clone(), kind, statement));
        }
    }
    Ok(out)
}

/// What to attest about each image of a build.
#[derive(Clone, Debug)]
pub struct AttestationRequest {
    /// The provenance predicate (the same for every platform; subjects differ).
    pub provenance: Option<Predicate>,
    pub sbom: bool,
    /// The image names (subjects).
    pub names: Vec<String>,
    /// RFC 3339: SOURCE_DATE_EPOCH when set, so attested builds stay reproducible.
    pub created: String,
}

/// Writes an attestation manifest for each image (each with its platform set) and the index
/// over both.
pub fn attach(
    content: &ContentStore,
    images: &[Descriptor],
    request: &AttestationRequest,
) -> Result<Descriptor> {
    let mut attestations = Vec::new();
    for image in images {
        let platform = image.platform.clone().unwrap_or_else(Platform::host);
        let subjects = subjects(&request.names, image, &platform);
        let mut statements = Vec::new();
        if let Some(p) = &request.provenance {
            statements.push((p.predicate_type.clone(), statement(p, &subjects)));
        }
        if request.sbom {
            let manifest: Manifest = serde_json::from_slice(&content.read_blob(&image.digest)?)?;
            let scan = crate::sbom::scan_layers(content, &manifest.layers)?;
            let name = request.names.first().map(String::as_str).unwrap_or("image");
            let distro = scan.distro.as_deref().unwrap_or("");
            let doc = crate::sbom::spdx_document(&scan.packages, distro, name, &request.created);
            let p = Predicate {
                predicate_type: PREDICATE_SPDX.into(),
                predicate: doc,
            };
            statements.push((p.predicate_type.clone(), statement(&p, &subjects)));
        }
        attestations.push(write_attestation_manifest(content, image, &statements)?);
    }
    write_attested_index(content, images, &attestations)
}
