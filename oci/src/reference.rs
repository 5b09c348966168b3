//! Image references (`busybox`, `localhost:5000/a/b:t`, `x@sha256:…`), normalised like docker.

use std::fmt;

pub use crate::digest::is_valid_digest;
use crate::Error;

/// Registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// Parsed image reference, normalised like docker: "busybox" → docker.io/library/busybox:latest;
/// "localhost:5000/a/b:t"; "x@sha256:..".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`. A reference with neither tag nor digest gets the tag `latest`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("empty reference"));
        }
        if s.len() > 4096 {
            return Err(invalid("reference too long"));
        }
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((name, digest)) => {
                if !is_valid_digest(digest) {
                    return Err(invalid("invalid digest"));
                }
                (name, Some(digest.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it is a registry port).
        let (name, tag) = match name_and_tag.rfind(':') {
            Some(colon) if !name_and_tag[colon..].contains('/') => (
                &name_and_tag[..colon],
                Some(name_and_tag[colon + 1..].to_string()),
            ),
            _ => (name_and_tag, None),
        };
        if let Some(tag) = &tag {
            if !is_valid_tag(tag) {
                return Err(invalid("invalid tag"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !is_valid_registry(&registry) {
            return Err(invalid("invalid registry host"));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if !is_valid_repository(&repository) {
            return Err(invalid("invalid repository name"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository[:tag][@digest]`, e.g. "docker.io/library/busybox:latest".
    pub fn full_name(&self) -> String {
        format!("{}/{}{}", self.registry, self.repository, self.suffix())
    }

    /// The short form docker shows: "busybox:latest", "user/app:1", "localhost:5000/a:t".
    pub fn familiar_name(&self) -> String {
        format!("{}{}", self.familiar_repository(), self.suffix())
    }

    /// The repository as docker shows it, without tag or digest: "busybox", "localhost:5000/a".
    pub fn familiar_repository(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The tag, or "latest" when the reference has none.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// What to ask a registry for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .unwrap_or_else(|| self.tag_or_latest())
    }

    fn suffix(&self) -> String {
        let mut suffix = String::new();
        if let Some(tag) = &self.tag {
            suffix.push(':');
            suffix.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            suffix.push('@');
            suffix.push_str(digest);
        }
        suffix
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Reference::parse(s)
    }
}

fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

fn is_valid_registry(registry: &str) -> bool {
    let is_valid_port = |port: &str| {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    };
    if let Some(bracketed) = registry.strip_prefix('[') {
        let Some((ip, rest)) = bracketed.split_once(']') else {
            return false;
        };
        let port_ok = rest.is_empty() || rest.strip_prefix(':').is_some_and(is_valid_port);
        return port_ok && ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let host = match registry.split_once(':') {
        Some((host, port)) => {
            if !is_valid_port(port) {
                return false;
            }
            host
        }
        None => registry,
    };
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by '/'.
fn is_valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(is_valid_path_component)
}

fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !is_alnum(first) || !is_alnum(last) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        let b = bytes[index];
        if is_alnum(b) {
            index += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = index;
        while index < bytes.len() && !is_alnum(bytes[index]) {
            index += 1;
        }
        let separator = &component[start..index];
        let valid = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !valid {
            return false;
        }
    }
    true
}
