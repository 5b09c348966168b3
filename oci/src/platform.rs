//! Choosing an image for a platform the way containerd does: an exact match (after
//! normalisation: `aarch64` is `arm64`, `arm64/v8` is `arm64`, `arm` is `arm/v7`) wins;
//! failing that, an older variant the wanted CPU still runs (`arm/v6` on `arm/v7`,
//! `amd64` on `amd64/v3`).

use crate::image::{Descriptor, Platform};

/// How well an image for `have` suits `wanted`: `Some(0)` for an exact match, larger for
/// an older compatible variant, `None` when it cannot run there.
pub fn rank(have: &Platform, wanted: &Platform) -> Option<u32> {
    if have.matches(wanted) {
        return Some(0);
    }
    let have = have.normalized();
    let wanted = wanted.normalized();
    if have.os != wanted.os || have.architecture != wanted.architecture {
        return None;
    }
    let level = |variant: Option<&str>, default: u32| -> Option<u32> {
        match variant {
            None => Some(default),
            Some(v) => v.strip_prefix('v')?.parse().ok(),
        }
    };
    let (default, lowest) = match have.architecture.as_str() {
        "arm" => (7, 5),
        "amd64" => (1, 1),
        _ => return None,
    };
    let have_level = level(have.variant.as_deref(), default)?;
    let wanted_level = level(wanted.variant.as_deref(), default)?;
    (have_level >= lowest && have_level < wanted_level).then(|| wanted_level - have_level)
}

/// True when an image for `have` runs on `wanted` (exactly or as an older variant).
pub fn compatible(have: &Platform, wanted: &Platform) -> bool {
    rank(have, wanted).is_some()
}

/// Annotation BuildKit (>= 0.11) puts on an index entry that is not an image: its value is
/// `attestation-manifest` for provenance/SBOM manifests.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Annotation naming the image manifest an attestation manifest describes.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// True for an index entry that is BuildKit's attestation manifest, not a runnable image
/// (whatever platform it claims: BuildKit writes `unknown/unknown`).
pub fn is_attestation(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get(ANNOTATION_REFERENCE_TYPE)
        .is_some_and(|kind| kind == "attestation-manifest")
}

/// The attestation manifests among `entries` that describe the image manifest `digest`.
pub fn attestations_of<'a>(
    entries: &'a [Descriptor],
    digest: &'a str,
) -> impl Iterator<Item = &'a Descriptor> + 'a {
    entries.iter().filter(move |entry| {
        is_attestation(entry)
            && crate::image::is_manifest_media_type(&entry.media_type)
            && entry
                .annotations
                .get(ANNOTATION_REFERENCE_DIGEST)
                .map(String::as_str)
                == Some(digest)
    })
}

/// The manifest of `candidates` (an index's entries) best suited to `wanted`; entries
/// without a platform, that are not image manifests, or that are attestations are skipped.
pub fn best_match<'a>(candidates: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    candidates
        .iter()
        .filter(|c| crate::image::is_manifest_media_type(&c.media_type) && !is_attestation(c))
        .filter_map(|c| Some((rank(c.platform.as_ref()?, wanted)?, c)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn entry(platform: &str, digest: &str) -> Descriptor {
        Descriptor {
            platform: Some(p(platform)),
            ..Descriptor::new(crate::image::MEDIA_TYPE_OCI_MANIFEST, digest, 1)
        }
    }

    #[test]
    fn exact_matches_normalise_arm64_variants() {
        assert_eq!(rank(&p("linux/arm64/v8"), &p("linux/aarch64")), Some(0));
        assert_eq!(rank(&p("linux/arm64"), &p("linux/arm64/v8")), Some(0));
        assert_eq!(rank(&p("linux/arm"), &p("linux/arm/v7")), Some(0));
        assert_eq!(rank(&p("linux/amd64"), &p("linux/arm64")), None);
        assert_eq!(rank(&p("linux/arm64"), &p("windows/arm64")), None);
    }

    #[test]
    fn older_arm_variants_run_on_newer_cpus_but_not_the_reverse() {
        assert_eq!(rank(&p("linux/arm/v6"), &p("linux/arm/v7")), Some(1));
        assert_eq!(rank(&p("linux/arm/v5"), &p("linux/arm/v7")), Some(2));
        assert_eq!(rank(&p("linux/arm/v7"), &p("linux/arm/v6")), None);
        assert!(compatible(&p("linux/amd64"), &p("linux/amd64/v3")));
        assert!(!compatible(&p("linux/amd64/v3"), &p("linux/amd64")));
    }

    #[test]
    fn best_match_prefers_the_exact_variant() {
        let entries = [
            entry("linux/arm/v6", "sha256:v6"),
            entry("linux/arm/v7", "sha256:v7"),
            entry("linux/arm64/v8", "sha256:arm64"),
            entry("linux/amd64", "sha256:amd64"),
        ];
        let pick = |w: &str| best_match(&entries, &p(w)).map(|d| d.digest.as_str());
        assert_eq!(pick("linux/arm/v7"), Some("sha256:v7"));
        assert_eq!(pick("linux/arm/v6"), Some("sha256:v6"));
        assert_eq!(pick("linux/arm64"), Some("sha256:arm64"));
        assert_eq!(pick("linux/arm/v8"), Some("sha256:v7"));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            best_match(&entries[..1], &p("linux/arm/v7")).map(|d| d.digest.as_str()),
            Some("sha256:v6")
        );
    }

    #[test]
    fn attestation_manifests_are_never_selected_but_are_found_for_their_image() {
        let attestation = |platform: &str, of: &str| {
            let mut d = entry(platform, "sha256:att");
            d.annotations.insert(
                ANNOTATION_REFERENCE_TYPE.into(),
                "attestation-manifest".into(),
            );
            d.annotations
                .insert(ANNOTATION_REFERENCE_DIGEST.into(), of.into());
            d
        };
        // Even one that claims the wanted platform (and comes first) is not an image.
        let entries = [
            attestation("linux/amd64", "sha256:amd64"),
            entry("linux/amd64", "sha256:amd64"),
            attestation("unknown/unknown", "sha256:amd64"),
        ];
        let pick = best_match(&entries, &p("linux/amd64")).map(|d| d.digest.as_str());
        assert_eq!(pick, Some("sha256:amd64"));
        assert_eq!(best_match(&entries[..1], &p("linux/amd64")), None);
        assert_eq!(attestations_of(&entries, "sha256:amd64").count(), 2);
        assert_eq!(attestations_of(&entries, "sha256:other").count(), 0);
    }
}
