//! Docker's detach keys: typed on an attached `-i -t` session, they leave the container
//! running and end the client (`--detach-keys`, `detachKeys` in the docker CLI's
//! `config.json`, Ctrl-P Ctrl-Q by default).

use anyhow::{bail, Context, Result};

/// Docker's default: Ctrl-P Ctrl-Q.
const DEFAULT: &str = "ctrl-p,ctrl-q";

/// The detach sequence: `flag` if given (and not empty), else the docker CLI's configured
/// `detachKeys`, else Ctrl-P Ctrl-Q. A bad value is an error naming where it came from.
pub fn resolve(flag: Option<&str>) -> Result<Vec<u8>> {
    resolve_in(flag, config_path().as_deref())
}

fn resolve_in(flag: Option<&str>, config: Option<&std::path::Path>) -> Result<Vec<u8>> {
    if let Some(keys) = flag.filter(|k| !k.is_empty()) {
        return parse(keys).with_context(|| format!("--detach-keys {keys:?}"));
    }
    if let Some((path, keys)) = config.and_then(|path| Some((path, configured(path)?))) {
        let file = path.display();
        return parse(&keys).with_context(|| format!("detachKeys {keys:?} in {file}"));
    }
    parse(DEFAULT)
}

/// The docker CLI's `config.json` (`$DOCKER_CONFIG`, else `~/.docker`).
fn config_path() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    Some(dir.join("config.json"))
}

/// `detachKeys` of the config file, if it has a non-empty one (a file that is missing or not
/// JSON is the registry code's business, not a reason to refuse to attach).
fn configured(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let config: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let keys = config.get("detachKeys")?.as_str()?;
    (!keys.is_empty()).then(|| keys.to_string())
}

/// Parses docker's syntax: comma-separated keys, each one character or `ctrl-X` with X one
/// of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`.
pub fn parse(keys: &str) -> Result<Vec<u8>> {
    keys.split(',').map(parse_key).collect()
}

fn parse_key(key: &str) -> Result<u8> {
    if let [byte] = key.as_bytes() {
        return Ok(*byte);
    }
    let control = key
        .strip_prefix("ctrl-")
        .and_then(|rest| match rest.as_bytes() {
            [c @ b'a'..=b'z'] => Some(c - b'a' + 1),
            [c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')] => Some(c - b'@'),
            _ => None,
        });
    match control {
        Some(byte) => Ok(byte),
        None => bail!(
            "invalid detach key {key:?}: keys are single characters or ctrl-a..ctrl-z, ctrl-@, \
             ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_, separated by commas"
        ),
    }
}

/// Watches typed input for the detach sequence. Bytes that might start it are held back
/// until it is clear they do not (then they are passed on, as docker's escape proxy does).
pub(crate) struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    pub(crate) fn new(keys: Vec<u8>) -> Self {
        DetachWatch { keys, matched: 0 }
    }

    /// Appends to `out` what of `input` goes to the container; true when the whole
    /// sequence was typed (what follows it is dropped).
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &byte in input {
            if self.keys.get(self.matched) == Some(&byte) {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if self.keys.first() == Some(&byte) {
                self.matched = 1;
                if self.keys.len() == 1 {
                    return true;
                }
            } else {
                out.push(byte);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        assert_eq!(parse("ctrl-p,ctrl-q").unwrap(), vec![0x10, 0x11]);
        assert_eq!(
            parse("a,ctrl-@,ctrl-_,ctrl-\\").unwrap(),
            vec![b'a', 0, 0x1f, 0x1c]
        );
        for bad in ["", "ctrl-", "ctrl-1", "ctrl-pq", "ab", "ctrl-p,,ctrl-q"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let e = resolve(Some("ctrl-1")).unwrap_err();
        assert!(format!("{e:#}").starts_with("--detach-keys \"ctrl-1\": invalid detach key"));
    }

    #[test]
    fn config_json_sets_the_keys_and_the_flag_wins() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        assert_eq!(resolve_in(None, Some(&config)).unwrap(), vec![0x10, 0x11]);
        std::fs::write(&config, r#"{"auths": {}, "detachKeys": "ctrl-e,e"}"#).unwrap();
        assert_eq!(resolve_in(None, Some(&config)).unwrap(), vec![5, b'e']);
        assert_eq!(resolve_in(Some("x"), Some(&config)).unwrap(), vec![b'x']);
        std::fs::write(&config, r#"{"detachKeys": "ctrl-!"}"#).unwrap();
        let e = format!("{:#}", resolve_in(None, Some(&config)).unwrap_err());
        assert!(e.contains("config.json") && e.contains("ctrl-!"), "{e}");
    }

    #[test]
    fn watch_holds_back_a_partial_sequence_and_detaches_on_the_whole() {
        let mut watch = DetachWatch::new(vec![0x10, 0x11]);
        let mut out = Vec::new();
        assert!(!watch.feed(b"ab\x10", &mut out));
        assert_eq!(out, b"ab");
        // A partial sequence not completed goes through as typed.
        assert!(!watch.feed(b"c\x10\x10", &mut out));
        assert_eq!(out, b"ab\x10c\x10");
        assert!(watch.feed(b"\x11rest", &mut out));
        assert_eq!(out, b"ab\x10c\x10");
    }
}
