//! Content digests (`algorithm:encoded`, e.g. `sha256:<64 hex>`) and the one rule that says
//! which strings are digests. Everything that turns a digest into a path or trusts one from
//! outside (content store, archives, references, registries) checks it here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::Error;

/// A validated content digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Checks `s` against the OCI digest grammar (sha256 and sha512 must be lowercase hex
    /// of their exact length; other algorithms need at least 32 encoded characters).
    pub fn parse(s: &str) -> Result<Self, Error> {
        validate(s).map_err(|reason| Error::InvalidDigest {
            digest: s.to_string(),
            reason: reason.to_string(),
        })?;
        Ok(Digest(s.to_string()))
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        Digest(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(data))
        ))
    }

    /// The sha256 digest whose hash is `hash`.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the colon, e.g. `sha256`.
    pub fn algorithm(&self) -> &str {
        self.0
            .split_once(':')
            .map_or("", |(algorithm, _)| algorithm)
    }

    /// The part after the colon (the hex of a sha256 digest).
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, encoded)| encoded)
    }
}

/// The 64 hex digits of a sha256 digest: the only algorithm blobs are stored under, so a
/// digest of any other algorithm is an error here even when it is well formed.
pub fn sha256_hex(digest: &str) -> Result<&str, Error> {
    let invalid = |reason: &str| Error::InvalidDigest {
        digest: digest.to_string(),
        reason: reason.to_string(),
    };
    validate(digest).map_err(invalid)?;
    digest
        .strip_prefix("sha256:")
        .ok_or_else(|| invalid("unsupported algorithm, want sha256:<64 lowercase hex digits>"))
}

/// Whether `digest` is a well-formed digest (see [`Digest::parse`]).
pub fn is_valid_digest(digest: &str) -> bool {
    validate(digest).is_ok()
}

/// `sha256:<hex>` of `data`, as a string.
pub fn sha256_digest(data: &[u8]) -> String {
    Digest::sha256_of(data).0
}

/// The one digest validator; the error says what is wrong.
fn validate(digest: &str) -> Result<(), &'static str> {
    let (algorithm, encoded) = digest
        .split_once(':')
        .ok_or("want algorithm:encoded, e.g. sha256:<64 lowercase hex digits>")?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match algorithm {
        "sha256" if encoded.len() == 64 && lower_hex(encoded) => Ok(()),
        "sha256" => Err("sha256 wants 64 lowercase hex digits"),
        "sha512" if encoded.len() == 128 && lower_hex(encoded) => Ok(()),
        "sha512" => Err("sha512 wants 128 lowercase hex digits"),
        _ if !valid_algorithm(algorithm) => Err("malformed algorithm"),
        _ if encoded.len() < 32
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b)) =>
        {
            Err("malformed encoded part")
        }
        _ => Ok(()),
    }
}

/// `[a-z0-9]+` components joined by one of `+._-`.
fn valid_algorithm(algorithm: &str) -> bool {
    algorithm.split(['+', '.', '_', '-']).all(|component| {
        !component.is_empty()
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn sha256_of_matches_known_vector() {
        let d = Digest::sha256_of(b"hello");
        assert_eq!(d.as_str(), format!("sha256:{HEX}"));
        assert_eq!((d.algorithm(), d.encoded()), ("sha256", HEX));
        assert_eq!(sha256_hex(d.as_str()).unwrap(), HEX);
    }

    #[test]
    fn sha256_must_be_64_lowercase_hex() {
        for bad in [
            format!("sha256:{}", HEX.to_uppercase()),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            format!("sha256:../{}", &HEX[3..]),
            HEX.to_string(),
            format!("SHA256:{HEX}"),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?} accepted");
            assert!(sha256_hex(&bad).is_err(), "{bad:?} accepted as a blob name");
        }
    }

    #[test]
    fn other_algorithms_are_digests_but_not_blob_names() {
        let sha512 = format!("sha512:{HEX}{HEX}");
        assert!(is_valid_digest(&sha512));
        let err = sha256_hex(&sha512).unwrap_err().to_string();
        assert!(err.contains("unsupported algorithm"), "{err}");
        assert!(!is_valid_digest(&format!("sha512:{HEX}")));
        assert!(is_valid_digest(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"
        ));
        assert!(!is_valid_digest("sha+:0123456789abcdef0123456789abcdef"));
        assert!(!is_valid_digest("foo:short"));
    }

    #[test]
    fn serde_validates() {
        let json = format!("\"sha256:{HEX}\"");
        let d: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
        assert!(serde_json::from_str::<Digest>("\"sha256:nothex\"").is_err());
    }
}
