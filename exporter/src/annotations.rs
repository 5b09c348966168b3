//! `--annotation` as buildx reads it: `[TYPE[PLATFORM][,TYPE...]:]KEY=VALUE` with the types
//! `manifest` (the default), `index`, `manifest-descriptor` and `index-descriptor`, e.g.
//! `manifest[linux/amd64]:org.opencontainers.image.title=app`.

use crate::image::{Descriptor, Platform};
use crate::{ContentStore, Error, Result};
use std::collections::BTreeMap;

/// Where an annotation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotationKind {
    /// Each image manifest.
    Manifest,
    /// The image index of a multi-platform image.
    Index,
    /// The manifests' descriptors (in the index, or the OCI layout's `index.json`).
    ManifestDescriptor,
    /// The index's descriptor in the OCI layout's `index.json`.
    IndexDescriptor,
}

#[derive(Clone, Debug, PartialEq)]
struct Annotation {
    kind: AnnotationKind,
    /// Only for manifests of this platform.
    platform: Option<Platform>,
    key: String,
    value: String,
}

/// Every `--annotation` of a build.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Annotations(Vec<Annotation>);

impl Annotations {
    /// Parses the flag values; errors name the flag and the value.
    pub fn parse(values: &[String]) -> std::result::Result<Self, String> {
        let mut all = Vec::new();
        for value in values {
            all.extend(parse_one(value)?);
        }
        Ok(Annotations(all))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether annotations of `kind` were given.
    pub fn has(&self, kind: AnnotationKind) -> bool {
        self.0.iter().any(|a| a.kind == kind)
    }

    /// The annotations of `kind` that apply to `platform` (`None`: the only platform).
    pub fn of(
        &self,
        kind: AnnotationKind,
        platform: Option<&Platform>,
    ) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|a| a.kind == kind)
            .filter(|a| match (&a.platform, platform) {
                (Some(want), Some(have)) => have.matches(want),
                (Some(want), None) => Platform::host().matches(want),
                (None, _) => true,
            })
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    }
}

fn parse_one(value: &str) -> std::result::Result<Vec<Annotation>, String> {
    let bad = |why: String| format!("--annotation {value:?}: {why}");
    let (lhs, content) = value
        .split_once('=')
        .ok_or_else(|| bad("want [TYPE:]KEY=VALUE".into()))?;
    // As buildx: a prefix is there only when it is shaped like type names.
    let (types, key) = match lhs.split_once(':') {
        Some((types, key)) if looks_like_types(types) => (types, key),
        _ => ("manifest", lhs),
    };
    if key.is_empty() {
        return Err(bad("the key is empty".into()));
    }
    let mut out = Vec::new();
    for item in types.split(',') {
        let (name, platform) = match item.split_once('[') {
            Some((name, rest)) => {
                let p = rest
                    .strip_suffix(']')
                    .ok_or_else(|| bad(format!("{item:?}: missing ]")))?;
                let platform: Platform = p
                    .parse()
                    .map_err(|_| bad(format!("{p:?} is not a platform (os/arch[/variant])")))?;
                (name, Some(platform))
            }
            None => (item, None),
        };
        let kind = match name {
            "manifest" => AnnotationKind::Manifest,
            "index" => AnnotationKind::Index,
            "manifest-descriptor" => AnnotationKind::ManifestDescriptor,
            "index-descriptor" => AnnotationKind::IndexDescriptor,
            other => {
                return Err(bad(format!(
                    "unknown annotation type {other:?}; use manifest, index, manifest-descriptor or index-descriptor"
                )))
            }
        };
        out.push(Annotation {
            kind,
            platform,
            key: key.to_string(),
            value: content.to_string(),
        });
    }
    Ok(out)
}

fn looks_like_types(prefix: &str) -> bool {
    prefix.split(',').all(|item| {
        let name = item.split('[').next().unwrap_or_default();
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
    })
}

/// Rewrites the manifest or index `target` with `annotations` added to its top-level
/// `annotations`; returns the new document's descriptor (same media type and platform).
pub fn annotate_document(
    content: &ContentStore,
    target: &Descriptor,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor> {
    if annotations.is_empty() {
        return Ok(target.clone());
    }
    let bytes = content.read_blob(&target.digest)?;
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes)?;
    let object = doc
        .as_object_mut()
        .ok_or_else(|| Error::InvalidImage(format!("{} is not a JSON object", target.digest)))?;
    let map = object
        .entry("annotations")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !map.is_object() {
        *map = serde_json::Value::Object(Default::default());
    }
    for (k, v) in annotations {
        map[k] = serde_json::Value::String(v.clone());
    }
    let bytes = serde_json::to_vec(&doc)?;
    let digest = content.put_bytes(&bytes)?;
    Ok(Descriptor {
        digest,
        size: bytes.len() as u64,
        ..target.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> std::result::Result<Annotations, String> {
        Annotations::parse(&values.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn buildx_prefixes() {
        let a = parse(&[
            "plain=1",
            "index:i=2",
            "manifest-descriptor,index-descriptor:d=3",
            "manifest[linux/arm64]:arm=4",
            "org.example:key=x=y",
        ])
        .unwrap();
        let amd = "linux/amd64".parse::<Platform>().unwrap();
        let arm = "linux/arm64".parse::<Platform>().unwrap();
        let on_amd = a.of(AnnotationKind::Manifest, Some(&amd));
        assert_eq!(on_amd.get("plain").map(String::as_str), Some("1"));
        assert!(!on_amd.contains_key("arm"));
        assert_eq!(
            a.of(AnnotationKind::Manifest, Some(&arm))
                .get("arm")
                .map(String::as_str),
            Some("4")
        );
        assert_eq!(a.of(AnnotationKind::Index, None).len(), 1);
        assert_eq!(a.of(AnnotationKind::ManifestDescriptor, None).len(), 1);
        assert_eq!(a.of(AnnotationKind::IndexDescriptor, None).len(), 1);
        // A key may hold a colon when a type comes first.
        assert!(parse(&["manifest:org.example:key=1"]).is_ok());
        let err = parse(&["blob:k=v"]).unwrap_err();
        assert!(
            err.contains("--annotation") && err.contains("unknown annotation type"),
            "{err}"
        );
        assert!(parse(&["novalue"]).is_err());
        assert!(parse(&["manifest[linux/amd64:k=v"]).is_err());
    }
}
