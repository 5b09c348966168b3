//! HTTP(S) sources (`ADD <url>`): the result is a tree holding the single file
//! `/<filename>` (mode 0600, like BuildKit) whose mtime is the server's
//! `Last-Modified`. The body is streamed into a new snapshot while hashing it, so
//! the cache key can come from the content when no checksum was pinned.

use crate::ops::{Input, Produced, SolveOp, Step};
use crate::worker::{sha256_hex, unique, Worker};
use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

/// A download. A pinned checksum is the key; otherwise the content is, so it is
/// downloaded first (and dropped if the cache answers).
pub(crate) struct Http<'a> {
    url: &'a str,
    filename: &'a str,
    checksum: Option<&'a str>,
    /// Downloaded to compute the key, not yet committed.
    fetched: Option<Fetched>,
}

impl<'a> Http<'a> {
    pub fn new(url: &'a str, filename: &'a str, checksum: Option<&'a str>) -> Self {
        Http {
            url,
            filename,
            checksum,
            fetched: None,
        }
    }
}

impl SolveOp for Http<'_> {
    fn cache_key(&mut self, w: &Worker, _: &Step, _: &[Input]) -> Result<String> {
        if let Some(c) = self.checksum {
            validate_checksum(c)?;
            return Ok(sha256_hex(&[
                b"http",
                self.filename.as_bytes(),
                c.as_bytes(),
            ]));
        }
        let f = self.fetched.insert(fetch(w, self.url, self.filename)?);
        let mtime = f.mtime.unwrap_or(-1).to_string();
        Ok(sha256_hex(&[
            b"http",
            self.filename.as_bytes(),
            f.digest.as_bytes(),
            mtime.as_bytes(),
        ]))
    }

    fn run(&mut self, w: &Worker, _: &Step, _: &[Input]) -> Result<Produced> {
        let f = match self.fetched.take() {
            Some(f) => f,
            None => fetch(w, self.url, self.filename)?,
        };
        commit(w, f, self.url, self.checksum).map(Produced::built)
    }

    /// Answered from the cache: the download was not needed.
    fn release(&mut self, w: &Worker) {
        if let Some(f) = self.fetched.take() {
            let _ = w.snapshots.remove(&f.active);
        }
    }
}

/// A download sitting in an active (uncommitted) snapshot.
pub(crate) struct Fetched {
    pub active: String,
    /// `sha256:<hex>` of the body.
    pub digest: String,
    /// Seconds since the epoch from `Last-Modified`, if the server sent a valid one.
    pub mtime: Option<i64>,
}

/// Checks a `checksum` value (`sha256:<64 hex>`).
pub(crate) fn validate_checksum(checksum: &str) -> Result<()> {
    match oci::sha256_hex(checksum) {
        Ok(_) => Ok(()),
        Err(oci::Error::InvalidDigest { reason, .. }) => {
            bail!("invalid checksum {checksum:?}: {reason}")
        }
        Err(other) => Err(other.into()),
    }
}

fn validate_filename(filename: &str) -> Result<()> {
    if filename.is_empty() || filename == "." || filename == ".." || filename.contains('/') {
        bail!("invalid file name {filename:?} for a downloaded file");
    }
    Ok(())
}

/// Downloads `url` into `/<filename>` of a new active snapshot.
pub(crate) fn fetch(w: &Worker, url: &str, filename: &str) -> Result<Fetched> {
    validate_filename(filename)?;
    let active = unique("http");
    w.snapshots.prepare(&active, None)?;
    let res = (|| -> Result<Fetched> {
        let dir = w.snapshots.upper_dir(&active)?;
        let path = dir.join(filename);
        let url_owned = url.to_string();
        // reqwest's blocking client runs its own runtime; keep it off the solver's threads.
        let (digest, mtime) = std::thread::scope(|s| {
            s.spawn(|| download(&url_owned, &path))
                .join()
                .map_err(|_| anyhow!("download of {url_owned} panicked"))?
        })?;
        if let Some(t) = mtime {
            crate::archive::set_mtime(&path, t)?;
        }
        Ok(Fetched {
            active: active.clone(),
            digest,
            mtime,
        })
    })();
    if res.is_err() {
        let _ = w.snapshots.remove(&active);
    }
    res
}

/// Streams the body of `url` into a new file at `path` (mode 0600); returns its digest and mtime.
fn download(url: &str, path: &std::path::Path) -> Result<(String, Option<i64>)> {
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("builder/", env!("CARGO_PKG_VERSION")))
        .timeout(None)
        .build()?;
    let mut resp = client
        .get(url)
        .send()
        .map_err(|e| anyhow!("downloading {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "downloading {url}: server answered HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
    }
    let mtime = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = resp
            .read(&mut buf)
            .map_err(|e| anyhow!("downloading {url}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), mtime))
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's preferred form).
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Commits a fetched download after checking it against `checksum`; returns the snapshot.
pub(crate) fn commit(
    w: &Worker,
    fetched: Fetched,
    url: &str,
    checksum: Option<&str>,
) -> Result<String> {
    if let Some(expected) = checksum {
        if expected != fetched.digest {
            let _ = w.snapshots.remove(&fetched.active);
            bail!(
                "checksum mismatch for {url}: expected {expected}, got {}",
                fetched.digest
            );
        }
    }
    let name = unique("layer");
    if let Err(e) = w.snapshots.commit(&name, &fetched.active) {
        let _ = w.snapshots.remove(&fetched.active);
        return Err(e.into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn checksums_must_be_sha256_hex() {
        assert!(validate_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(validate_checksum("md5:abc").is_err());
        assert!(validate_checksum("sha256:xyz").is_err());
        // As docker (go-digest): a sha256 digest is lowercase hex.
        assert!(validate_checksum(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
