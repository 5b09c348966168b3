//! Container ids and generated names.

use anyhow::{bail, Result};
use std::io::Read;

const ADJECTIVES: [&str; 16] = [
    "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nifty", "quirky", "serene", "tender", "vibrant", "zealous",
];
const SURNAMES: [&str; 16] = [
    "babbage", "curie", "darwin", "euler", "fermi", "galois", "hopper", "kepler", "lovelace",
    "meitner", "noether", "pascal", "ritchie", "shannon", "turing", "wozniak",
];

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf
}

/// A 64-hex-digit id, like docker's.
pub fn new_id() -> String {
    random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A docker-style `adjective_surname` name with a number to make collisions rare.
pub fn random_name() -> String {
    let [a, b, c] = random_bytes::<3>();
    format!(
        "{}_{}{}",
        ADJECTIVES[a as usize % ADJECTIVES.len()],
        SURNAMES[b as usize % SURNAMES.len()],
        c % 100
    )
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.len() < 2 || !first_ok || !rest_ok {
        bail!(
            "--name {name:?}: invalid container name, only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_names_are_checked() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
        validate_name(&random_name()).unwrap();
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("-web").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
