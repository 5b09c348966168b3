//! The GitHub Actions cache service, protocol v2 (`--cache-to/--cache-from type=gha`).
//!
//! Entries are made and found through three Twirp JSON calls on `$ACTIONS_RESULTS_URL`
//! (`CreateCacheEntry`, `FinalizeCacheEntryUpload`, `GetCacheEntryDownloadURL`); their bytes
//! travel to and from the signed Azure Blob URLs those calls return (block upload: a PUT per
//! block, then the block list). Entries are immutable, so a scope's index is a new entry per
//! export, found again by key prefix (the service answers the newest match).

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::json;
use sha2::Digest as _;
use snapshotter::ContentStore;
use std::io::Read;
use std::time::Duration;

const SERVICE: &str = "twirp/github.actions.results.api.v1.CacheService";
/// Entries of another format (or actions/cache's) never match ours: the version is part of a
/// lookup, as in actions/toolkit.
const VERSION_SEED: &str = "builder-gha-cache-v1";
/// Azure takes blocks up to 4000 MiB; smaller ones keep memory low and retries cheap.
const BLOCK_SIZE: usize = 32 << 20;
const ATTEMPTS: u32 = 6;
/// A signed URL may expire between the call that made it and its use: get a fresh one.
const FRESH_URL_ATTEMPTS: u32 = 3;

/// Where a `type=gha` cache lives; the token is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct GhaSettings {
    /// `$ACTIONS_RESULTS_URL` (or `url=`).
    pub url: String,
    /// `$ACTIONS_RUNTIME_TOKEN` (or `token=`).
    pub token: String,
    pub scope: String,
    /// Per request.
    pub timeout: Duration,
}

impl std::fmt::Debug for GhaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhaSettings")
            .field("url", &self.url)
            .field("scope", &self.scope)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GhaSettings {
    pub fn describe(&self) -> String {
        format!("type=gha,scope={}", self.scope)
    }

    /// The key prefix of this scope's index entries.
    fn index_prefix(&self) -> String {
        format!("builder-index-1-{}#", self.scope)
    }
}

/// The key of a blob's entry: blobs are shared between scopes, as in BuildKit.
pub fn blob_key(digest: &str) -> String {
    format!("builder-blob-1-{digest}")
}

/// A client of one cache service.
#[derive(Clone)]
pub struct GhaCache {
    http: reqwest::Client,
    base: Url,
    settings: GhaSettings,
    version: String,
}

#[derive(Deserialize)]
struct CreateResponse {
    #[serde(default)]
    ok: bool,
    #[serde(default, alias = "signedUploadUrl")]
    signed_upload_url: String,
}

#[derive(Deserialize)]
struct FinalizeResponse {
    #[serde(default)]
    ok: bool,
}

#[derive(Deserialize)]
struct DownloadResponse {
    #[serde(default)]
    ok: bool,
    #[serde(default, alias = "signedDownloadUrl")]
    signed_download_url: String,
    #[serde(default, alias = "matchedKey")]
    matched_key: String,
}

/// A failed Twirp call; `code` is Twirp's error code (`already_exists`, ...).
#[derive(Debug)]
struct TwirpError {
    status: StatusCode,
    code: String,
    msg: String,
}

impl std::fmt::Display for TwirpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cache service: {} {}: {}",
            self.status, self.code, self.msg
        )
    }
}

impl std::error::Error for TwirpError {}

impl GhaCache {
    pub fn new(settings: &GhaSettings) -> Result<Self> {
        let mut base = settings.url.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let base = Url::parse(&base)
            .with_context(|| format!("type=gha: invalid cache service URL {:?}", settings.url))?;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("builder/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base,
            settings: settings.clone(),
            version: hex::encode(sha2::Sha256::digest(VERSION_SEED)),
        })
    }

    pub fn settings(&self) -> &GhaSettings {
        &self.settings
    }

    /// One Twirp call, retried on 429, 5xx and connection errors.
    async fn twirp<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<T> {
        let url = self.base.join(&format!("{SERVICE}/{method}"))?;
        let resp = send_with_retry(|| {
            self.http
                .post(url.clone())
                .bearer_auth(&self.settings.token)
                .json(&body)
        })
        .await
        .with_context(|| format!("cache service {method}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let text = |k: &str| {
                err.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            return Err(TwirpError {
                status,
                code: text("code"),
                msg: text("msg"),
            })
            .with_context(|| format!("cache service {method}"));
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("cache service {method}: unexpected answer"))
    }

    /// The signed download URL of the entry `key` (or, with `prefix`, of the newest entry
    /// whose key starts with it) and the key it matched.
    async fn lookup(&self, key: &str, prefix: Option<&str>) -> Result<Option<(String, String)>> {
        let restore: Vec<&str> = prefix.into_iter().collect();
        let r: DownloadResponse = self
            .twirp(
                "GetCacheEntryDownloadURL",
                json!({ "key": key, "restore_keys": restore, "version": self.version }),
            )
            .await?;
        Ok((r.ok && !r.signed_download_url.is_empty())
            .then_some((r.signed_download_url, r.matched_key)))
    }

    pub async fn has(&self, key: &str) -> Result<bool> {
        Ok(self.lookup(key, None).await?.is_some())
    }

    /// Downloads an entry into `sink`; false when there is no such entry.
    async fn download(
        &self,
        key: &str,
        prefix: Option<&str>,
        sink: &mut dyn FnMut(Option<&[u8]>) -> Result<()>,
    ) -> Result<bool> {
        for _ in 0..FRESH_URL_ATTEMPTS {
            let Some((url, matched)) = self.lookup(key, prefix).await? else {
                return Ok(false);
            };
            let mut resp = send_with_retry(|| self.http.get(&url))
                .await
                .with_context(|| format!("downloading cache entry {matched}"))?;
            if resp.status() == StatusCode::FORBIDDEN {
                continue; // expired URL
            }
            if !resp.status().is_success() {
                bail!("downloading cache entry {matched}: {}", resp.status());
            }
            sink(None)?;
            while let Some(chunk) = resp.chunk().await? {
                sink(Some(&chunk))?;
            }
            return Ok(true);
        }
        bail!(
            "downloading cache entry {key}: the blob store refused {FRESH_URL_ATTEMPTS} fresh URLs"
        )
    }

    /// The newest index of this scope.
    pub async fn download_index(&self) -> Result<Option<Vec<u8>>> {
        let prefix = self.settings.index_prefix();
        let exact = prefix.trim_end_matches('#');
        let mut out = Vec::new();
        let found = self
            .download(exact, Some(&prefix), &mut |chunk| {
                match chunk {
                    None => out.clear(),
                    Some(c) => out.extend_from_slice(c),
                }
                Ok(())
            })
            .await?;
        Ok(found.then_some(out))
    }

    /// Fetches a blob's entry into the content store, verifying its digest.
    pub async fn download_blob(&self, content: &ContentStore, digest: &str) -> Result<()> {
        let mut writer = None;
        let found = self
            .download(&blob_key(digest), None, &mut |chunk| {
                match chunk {
                    None => writer = Some(content.writer()?),
                    Some(c) => std::io::Write::write_all(writer.as_mut().expect("started"), c)?,
                }
                Ok(())
            })
            .await?;
        if !found {
            bail!("cache blob {digest} is not in the cache service");
        }
        writer.expect("started").commit(Some(digest))?;
        Ok(())
    }

    /// Writes this export's index (a new entry; the newest one is what imports read).
    pub async fn upload_index(&self, bytes: &[u8]) -> Result<String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = format!(
            "{}{nanos:x}-{:x}",
            self.settings.index_prefix(),
            std::process::id()
        );
        let data = bytes.to_vec();
        self.upload(&key, &mut || {
            Ok(Box::new(std::io::Cursor::new(data.clone())))
        })
        .await?;
        Ok(key)
    }

    /// Uploads a content-store blob unless its entry exists; true when it was uploaded.
    pub async fn upload_blob(&self, content: &ContentStore, digest: &str) -> Result<bool> {
        let key = blob_key(digest);
        if self.has(&key).await? {
            return Ok(false);
        }
        self.upload(&key, &mut || Ok(Box::new(content.open_blob(digest)?)))
            .await
    }

    /// Creates, fills and finalizes one entry; false when another job made it first.
    async fn upload(
        &self,
        key: &str,
        open: &mut (dyn FnMut() -> Result<Box<dyn Read + Send>> + Send),
    ) -> Result<bool> {
        for _ in 0..FRESH_URL_ATTEMPTS {
            let created: CreateResponse = match self
                .twirp(
                    "CreateCacheEntry",
                    json!({ "key": key, "version": self.version }),
                )
                .await
            {
                Ok(r) => r,
                Err(e) if is_conflict(&e) => return Ok(false),
                Err(e) => return Err(e),
            };
            if !created.ok || created.signed_upload_url.is_empty() {
                return Ok(false);
            }
            let Some(size) = self
                .put_blocks(&created.signed_upload_url, open()?)
                .await
                .with_context(|| format!("uploading cache entry {key}"))?
            else {
                continue; // expired URL: create again for a fresh one
            };
            let done: FinalizeResponse = self
                .twirp(
                    "FinalizeCacheEntryUpload",
                    json!({ "key": key, "size_bytes": size.to_string(), "version": self.version }),
                )
                .await?;
            if !done.ok {
                bail!("cache service did not finalize entry {key}");
            }
            return Ok(true);
        }
        bail!("uploading cache entry {key}: the blob store refused {FRESH_URL_ATTEMPTS} fresh URLs")
    }

    /// Azure block upload: one PUT per block, then the block list. None on 403 (expired URL).
    async fn put_blocks(
        &self,
        signed: &str,
        mut reader: Box<dyn Read + Send>,
    ) -> Result<Option<u64>> {
        let base = Url::parse(signed).context("invalid signed upload URL")?;
        let mut ids = Vec::new();
        let mut size = 0u64;
        loop {
            let mut block = Vec::with_capacity(BLOCK_SIZE.min(1 << 20));
            (&mut reader)
                .take(BLOCK_SIZE as u64)
                .read_to_end(&mut block)?;
            if block.is_empty() && !ids.is_empty() {
                break;
            }
            let id =
                base64::engine::general_purpose::STANDARD.encode(format!("block-{:08}", ids.len()));
            let mut url = base.clone();
            url.query_pairs_mut()
                .append_pair("comp", "block")
                .append_pair("blockid", &id);
            size += block.len() as u64;
            let last = block.len() < BLOCK_SIZE;
            let body = bytes::Bytes::from(block);
            let resp =
                send_with_retry(|| azure(self.http.put(url.clone())).body(body.clone())).await?;
            match check_blob_store(resp, "block").await? {
                true => ids.push(id),
                false => return Ok(None),
            }
            if last {
                break;
            }
        }
        let mut list = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for id in &ids {
            list.push_str(&format!("<Latest>{id}</Latest>"));
        }
        list.push_str("</BlockList>");
        let mut url = base;
        url.query_pairs_mut().append_pair("comp", "blocklist");
        let resp = send_with_retry(|| {
            azure(self.http.put(url.clone()))
                .header("content-type", "application/xml")
                .body(list.clone())
        })
        .await?;
        Ok(check_blob_store(resp, "block list").await?.then_some(size))
    }
}

fn azure(req: RequestBuilder) -> RequestBuilder {
    req.header("x-ms-version", "2023-11-03")
}

/// Ok(false) on 403 (an expired signature), an error on any other failure.
async fn check_blob_store(resp: Response, what: &str) -> Result<bool> {
    let status = resp.status();
    if status == StatusCode::FORBIDDEN {
        return Ok(false);
    }
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("blob store refused the {what}: {status} {}", text.trim());
    }
    Ok(true)
}

fn is_conflict(e: &anyhow::Error) -> bool {
    e.downcast_ref::<TwirpError>()
        .is_some_and(|t| t.status == StatusCode::CONFLICT || t.code == "already_exists")
}

/// Sends a request, retrying connection errors, 429 and 5xx with exponential backoff or the
/// server's `Retry-After` (seconds, capped), as the toolkit's clients do.
async fn send_with_retry(make: impl Fn() -> RequestBuilder) -> Result<Response> {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        let last = attempt == ATTEMPTS;
        match make().send().await {
            Ok(resp) if !retryable(resp.status()) || last => return Ok(resp),
            Ok(resp) => {
                let wait = retry_after(&resp).unwrap_or(delay);
                tokio::time::sleep(wait).await;
            }
            Err(e) if last || !(e.is_connect() || e.is_timeout() || e.is_request()) => {
                return Err(e.into())
            }
            Err(_) => tokio::time::sleep(delay).await,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    Err(anyhow!("unreachable: retries exhausted"))
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_debug_hide_the_token() {
        let s = GhaSettings {
            url: "http://x/".into(),
            token: "SECRET".into(),
            scope: "app".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{s:?}").contains("SECRET"));
        assert_eq!(s.index_prefix(), "builder-index-1-app#");
        assert_eq!(blob_key("sha256:ab"), "builder-blob-1-sha256:ab");
        assert_eq!(s.describe(), "type=gha,scope=app");
    }
}
