//! A small OCI distribution (v2) client: pull and push with streaming blob bodies.
//!
//! Plain HTTP is used for `localhost` and loopback addresses (like docker), HTTPS otherwise.
//! Authentication: anonymous, basic, and the bearer token flow announced by
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{
    HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use snapshotter::ContentStore;
use tokio::task::JoinSet;

use crate::image::{
    is_index_media_type, is_manifest_media_type, Descriptor, Index, Manifest, Platform,
    MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::{Reference, DEFAULT_REGISTRY};
use crate::store::{read_json, select_manifest};
use crate::{Error, Result};

mod lazy;

/// Manifests bigger than this are refused (the spec suggests registries accept 4 MiB).
const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// Blobs downloaded or uploaded at the same time.
const PARALLEL_BLOBS: usize = 4;
const BLOB_WRITE_BUFFER: usize = 256 * 1024;

/// Distribution v2 client: anonymous/basic + bearer token flow (WWW-Authenticate: Bearer
/// realm,service,scope), plain HTTP for localhost and 127.0.0.0/8 (like docker), HTTPS otherwise.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// Registry host → (user, password).
    credentials: Arc<HashMap<String, (String, String)>>,
    /// (registry, scope) → how to authorise requests.
    auth: Arc<Mutex<HashMap<(String, String), Authorization>>>,
}

#[derive(Clone)]
enum Authorization {
    Bearer(String),
    Basic,
}

/// Where one repository lives.
#[derive(Clone)]
struct Repository {
    registry: String,
    base: Url,
    name: String,
}

impl Repository {
    fn new(reference: &Reference) -> Result<Self> {
        let host = if reference.registry == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            reference.registry.as_str()
        };
        let scheme = if is_plain_http_host(host) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{host}/")).map_err(|e| Error::Registry {
            registry: reference.registry.clone(),
            message: format!("bad registry address: {e}"),
        })?;
        Ok(Repository {
            registry: reference.registry.clone(),
            base,
            name: reference.repository.clone(),
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(&format!("v2/{}/{path}", self.name))
            .map_err(|e| self.error(format!("bad url for {path}: {e}")))
    }

    fn error(&self, message: String) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            message,
        }
    }
}

/// True for `localhost` and loopback IPs, with or without a port.
fn is_plain_http_host(host: &str) -> bool {
    let without_port = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    without_port == "localhost"
        || without_port
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl Default for RegistryClient {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistryClient {
    /// A client with no credentials (anonymous pulls and token flows).
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("builder/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        RegistryClient {
            http,
            credentials: Arc::new(HashMap::new()),
            auth: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Adds a user and password for `registry` (as in a reference, e.g. "docker.io",
    /// "localhost:5000"), used for basic auth and for fetching bearer tokens.
    pub fn with_credentials(mut self, registry: &str, user: &str, password: &str) -> Self {
        Arc::make_mut(&mut self.credentials).insert(
            registry.to_string(),
            (user.to_string(), password.to_string()),
        );
        self
    }

    /// Pulls the manifest (following an index to `platform`), config and layers into the
    /// content store (blobs already present are skipped; digests verified while streaming),
    /// returns the top-level descriptor as resolved from the registry (tag it in the ImageStore).
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        content: &ContentStore,
    ) -> Result<Descriptor> {
        let repository = Repository::new(reference)?;
        let scope = format!("repository:{}:pull", repository.name);
        let top = self
            .fetch_manifest(
                &repository,
                &scope,
                reference.manifest_reference(),
                reference.digest.as_deref(),
                content,
            )
            .await?;
        let manifest_descriptor = if is_index_media_type(&top.media_type) {
            let index: Index = read_json(content, &top)?;
            let chosen = select_manifest(&index, &top.digest, platform)?;
            if !content.has(&chosen.digest) {
                let fetched = self
                    .fetch_manifest(
                        &repository,
                        &scope,
                        &chosen.digest,
                        Some(&chosen.digest),
                        content,
                    )
                    .await?;
                if !is_manifest_media_type(&fetched.media_type) {
                    return Err(Error::UnsupportedMediaType(fetched.media_type));
                }
            }
            chosen
        } else if is_manifest_media_type(&top.media_type) {
            top.clone()
        } else {
            return Err(Error::UnsupportedMediaType(top.media_type));
        };
        let manifest: Manifest = read_json(content, &manifest_descriptor)?;
        let missing: Vec<Descriptor> = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .filter(|blob| !content.has(&blob.digest))
            .cloned()
            .collect();
        let mut tasks = JoinSet::new();
        for blob in missing {
            while tasks.len() >= PARALLEL_BLOBS {
                join_next(&mut tasks).await?;
            }
            let (client, repository, scope, content) = (
                self.clone(),
                repository.clone(),
                scope.clone(),
                content.clone(),
            );
            tasks.spawn(async move {
                client
                    .fetch_blob(&repository, &scope, &blob, &content)
                    .await
            });
        }
        while !tasks.is_empty() {
            join_next(&mut tasks).await?;
        }
        Ok(top)
    }

    /// Pushes a manifest/index with its blobs (skipping blobs the registry has via HEAD),
    /// then tags it (or, for a digest-only reference, pushes it by digest).
    pub async fn push(
        &self,
        reference: &Reference,
        target: &Descriptor,
        content: &ContentStore,
    ) -> Result<()> {
        let repository = Repository::new(reference)?;
        let scope = format!("repository:{}:pull,push", repository.name);
        if is_index_media_type(&target.media_type) {
            let index: Index = read_json(content, target)?;
            for child in &index.manifests {
                if !is_manifest_media_type(&child.media_type) {
                    return Err(Error::UnsupportedMediaType(child.media_type.clone()));
                }
                self.push_image_blobs(&repository, &scope, child, content)
                    .await?;
                self.put_manifest(&repository, &scope, child, &child.digest, content)
                    .await?;
            }
        } else if is_manifest_media_type(&target.media_type) {
            self.push_image_blobs(&repository, &scope, target, content)
                .await?;
        } else {
            return Err(Error::UnsupportedMediaType(target.media_type.clone()));
        }
        if let Some(digest) = &reference.digest {
            if digest != &target.digest {
                return Err(Error::DigestMismatch {
                    what: format!("push of {reference}"),
                    expected: digest.clone(),
                    actual: target.digest.clone(),
                });
            }
        }
        let tag_or_digest = match (&reference.tag, &reference.digest) {
            (None, Some(digest)) => digest.as_str(),
            _ => reference.tag_or_latest(),
        };
        self.put_manifest(&repository, &scope, target, tag_or_digest, content)
            .await
    }

    /// Uploads the config and layers of one image manifest.
    async fn push_image_blobs(
        &self,
        repository: &Repository,
        scope: &str,
        manifest_descriptor: &Descriptor,
        content: &ContentStore,
    ) -> Result<()> {
        let manifest: Manifest = read_json(content, manifest_descriptor)?;
        let mut tasks = JoinSet::new();
        let mut queued = std::collections::BTreeSet::new();
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !queued.insert(blob.digest.clone()) {
                continue;
            }
            while tasks.len() >= PARALLEL_BLOBS {
                join_next(&mut tasks).await?;
            }
            let (client, repository, scope, content, blob) = (
                self.clone(),
                repository.clone(),
                scope.to_string(),
                content.clone(),
                blob.clone(),
            );
            tasks
                .spawn(async move { client.push_blob(&repository, &scope, &blob, &content).await });
        }
        while !tasks.is_empty() {
            join_next(&mut tasks).await?;
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        repository: &Repository,
        scope: &str,
        blob: &Descriptor,
        content: &ContentStore,
    ) -> Result<()> {
        if !content.has(&blob.digest) {
            return Err(Error::NotFound(format!("blob {} to push", blob.digest)));
        }
        let blob_url = repository.url(&format!("blobs/{}", blob.digest))?;
        let head = self
            .send(repository, scope, &|| Ok(self.http.head(blob_url.clone())))
            .await?;
        if head.status().is_success() {
            return Ok(());
        }
        let start_url = repository.url("blobs/uploads/")?;
        let started = self
            .send(repository, scope, &|| {
                Ok(self.http.post(start_url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if started.status() != StatusCode::ACCEPTED {
            return Err(status_error(repository, "starting blob upload", started).await);
        }
        let location = started
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| repository.error("blob upload answer has no Location".into()))?;
        let mut upload_url = started
            .url()
            .join(location)
            .map_err(|e| repository.error(format!("bad upload location {location:?}: {e}")))?;
        upload_url
            .query_pairs_mut()
            .append_pair("digest", &blob.digest);
        let uploaded = self
            .send(repository, scope, &|| {
                let file = content.open_blob(&blob.digest)?;
                Ok(self
                    .http
                    .put(upload_url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, blob.size)
                    .body(reqwest::Body::from(tokio::fs::File::from_std(file))))
            })
            .await?;
        if uploaded.status() != StatusCode::CREATED {
            return Err(status_error(
                repository,
                &format!("uploading blob {}", blob.digest),
                uploaded,
            )
            .await);
        }
        Ok(())
    }

    async fn put_manifest(
        &self,
        repository: &Repository,
        scope: &str,
        descriptor: &Descriptor,
        tag_or_digest: &str,
        content: &ContentStore,
    ) -> Result<()> {
        if !content.has(&descriptor.digest) {
            return Err(Error::NotFound(format!(
                "manifest {} to push",
                descriptor.digest
            )));
        }
        let bytes = content.read_blob(&descriptor.digest)?;
        let url = repository.url(&format!("manifests/{tag_or_digest}"))?;
        let response = self
            .send(repository, scope, &|| {
                Ok(self
                    .http
                    .put(url.clone())
                    .header(CONTENT_TYPE, descriptor.media_type.as_str())
                    .body(bytes.clone()))
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(status_error(
                repository,
                &format!("putting manifest {tag_or_digest}"),
                response,
            )
            .await);
        }
        Ok(())
    }

    /// GETs a manifest, verifies it against `expected_digest` if pinned, stores it and
    /// returns its descriptor.
    async fn fetch_manifest(
        &self,
        repository: &Repository,
        scope: &str,
        tag_or_digest: &str,
        expected_digest: Option<&str>,
        content: &ContentStore,
    ) -> Result<Descriptor> {
        let url = repository.url(&format!("manifests/{tag_or_digest}"))?;
        let accept = [
            MEDIA_TYPE_OCI_INDEX,
            MEDIA_TYPE_OCI_MANIFEST,
            MEDIA_TYPE_DOCKER_MANIFEST_LIST,
            MEDIA_TYPE_DOCKER_MANIFEST,
        ]
        .join(", ");
        let mut response = self
            .send(repository, scope, &|| {
                Ok(self.http.get(url.clone()).header(ACCEPT, accept.as_str()))
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(format!(
                "manifest {tag_or_digest} in {}/{}",
                repository.registry, repository.name
            )));
        }
        if !response.status().is_success() {
            return Err(status_error(
                repository,
                &format!("fetching manifest {tag_or_digest}"),
                response,
            )
            .await);
        }
        let header_media_type = media_type_of(response.headers());
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if bytes.len() + chunk.len() > MAX_MANIFEST_SIZE {
                return Err(repository.error(format!(
                    "manifest {tag_or_digest} is larger than {MAX_MANIFEST_SIZE} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = crate::sha256_digest(&bytes);
        if let Some(expected) = expected_digest {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {tag_or_digest}"),
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct MediaTypeField {
            #[serde(default)]
            media_type: String,
        }
        let body_media_type = serde_json::from_slice::<MediaTypeField>(&bytes)
            .map(|field| field.media_type)
            .unwrap_or_default();
        // The body's own mediaType wins; registries may answer with a generic content type.
        let media_type = if body_media_type.is_empty() {
            header_media_type
        } else {
            body_media_type
        };
        if !is_index_media_type(&media_type) && !is_manifest_media_type(&media_type) {
            return Err(Error::UnsupportedMediaType(media_type));
        }
        content.put_bytes(&bytes)?;
        Ok(Descriptor::new(&media_type, &digest, bytes.len() as u64))
    }

    /// Streams one blob into the content store, verifying size and digest.
    async fn fetch_blob(
        &self,
        repository: &Repository,
        scope: &str,
        blob: &Descriptor,
        content: &ContentStore,
    ) -> Result<()> {
        let url = repository.url(&format!("blobs/{}", blob.digest))?;
        let mut response = self
            .send(repository, scope, &|| Ok(self.http.get(url.clone())))
            .await?;
        if !response.status().is_success() {
            return Err(status_error(
                repository,
                &format!("fetching blob {}", blob.digest),
                response,
            )
            .await);
        }
        let mut writer = BufWriter::with_capacity(BLOB_WRITE_BUFFER, content.writer()?);
        let mut received: u64 = 0;
        while let Some(chunk) = response.chunk().await? {
            received += chunk.len() as u64;
            if received > blob.size {
                return Err(repository.error(format!(
                    "blob {} is larger than its descriptor's {} bytes",
                    blob.digest, blob.size
                )));
            }
            writer.write_all(&chunk)?;
        }
        if received != blob.size {
            return Err(repository.error(format!(
                "blob {} ended after {received} of {} bytes",
                blob.digest, blob.size
            )));
        }
        let writer = writer.into_inner().map_err(|e| e.into_error())?;
        writer.commit(Some(&blob.digest))?;
        Ok(())
    }

    /// Sends a request, answering one authentication challenge if the registry asks.
    /// `make` builds the request afresh so bodies can be re-sent after the challenge.
    async fn send(
        &self,
        repository: &Repository,
        scope: &str,
        make: &(dyn Fn() -> Result<RequestBuilder> + Sync),
    ) -> Result<Response> {
        let response = self.authorize(make()?, repository, scope).send().await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.authenticate(repository, scope, &challenge).await?;
        let retried = self.authorize(make()?, repository, scope).send().await?;
        if retried.status() == StatusCode::UNAUTHORIZED {
            return Err(repository.error(format!(
                "unauthorized for {scope}; log in with credentials that allow it"
            )));
        }
        Ok(retried)
    }

    fn authorize(
        &self,
        request: RequestBuilder,
        repository: &Repository,
        scope: &str,
    ) -> RequestBuilder {
        let key = (repository.registry.clone(), scope.to_string());
        let authorization = self
            .auth
            .lock()
            .map(|auth| auth.get(&key).cloned())
            .unwrap_or(None);
        match authorization {
            Some(Authorization::Bearer(token)) => request.bearer_auth(token),
            Some(Authorization::Basic) => match self.credentials.get(&repository.registry) {
                Some((user, password)) => request.basic_auth(user, Some(password)),
                None => request,
            },
            None => request,
        }
    }

    /// Answers a `WWW-Authenticate` challenge and remembers the result for this scope.
    async fn authenticate(
        &self,
        repository: &Repository,
        scope: &str,
        challenge: &str,
    ) -> Result<()> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let authorization = if scheme.eq_ignore_ascii_case("basic") {
            if !self.credentials.contains_key(&repository.registry) {
                return Err(repository
                    .error("registry requires a user name and password (basic auth)".into()));
            }
            Authorization::Basic
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let params = parse_challenge_params(params);
            let realm = params
                .get("realm")
                .ok_or_else(|| repository.error("bearer challenge without realm".into()))?;
            let mut token_url = Url::parse(realm)
                .map_err(|e| repository.error(format!("bad token realm {realm:?}: {e}")))?;
            {
                let mut query = token_url.query_pairs_mut();
                if let Some(service) = params.get("service") {
                    query.append_pair("service", service);
                }
                query.append_pair("scope", scope);
            }
            let mut request = self.http.get(token_url);
            if let Some((user, password)) = self.credentials.get(&repository.registry) {
                request = request.basic_auth(user, Some(password));
            }
            let response = request.send().await?;
            if !response.status().is_success() {
                return Err(status_error(repository, "fetching a bearer token", response).await);
            }
            let token: TokenResponse = response.json().await?;
            let token = token
                .token
                .or(token.access_token)
                .filter(|token| !token.is_empty())
                .ok_or_else(|| repository.error("token endpoint returned no token".into()))?;
            Authorization::Bearer(token)
        } else {
            return Err(repository.error(format!(
                "unsupported authentication challenge {challenge:?}"
            )));
        };
        if let Ok(mut auth) = self.auth.lock() {
            auth.insert(
                (repository.registry.clone(), scope.to_string()),
                authorization,
            );
        }
        Ok(())
    }
}

async fn join_next(tasks: &mut JoinSet<Result<()>>) -> Result<()> {
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(join_error)) => Err(Error::Registry {
            registry: String::new(),
            message: format!("transfer task failed: {join_error}"),
        }),
        None => Ok(()),
    }
}

/// `key="value", key2=value2` pairs of a `WWW-Authenticate` challenge.
fn parse_challenge_params(params: &str) -> HashMap<String, String> {
    let mut result = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after_key)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, remaining) = if let Some(quoted) = after_key.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after_key.find(',') {
                Some(end) => (&after_key[..end], &after_key[end..]),
                None => (after_key, ""),
            }
        };
        result.insert(key, value.trim().to_string());
        rest = remaining.trim_start_matches([',', ' ']);
    }
    result
}

fn media_type_of(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or(value).trim().to_string())
        .unwrap_or_default()
}

async fn status_error(repository: &Repository, action: &str, response: Response) -> Error {
    let status = response.status();
    let method_hint = if status == StatusCode::METHOD_NOT_ALLOWED {
        " (is the registry read-only?)"
    } else {
        ""
    };
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(500).collect();
    repository.error(format!("{action}: {status}{method_hint}: {}", body.trim()))
}

#[cfg(test)]
mod tests {
    use super::{is_plain_http_host, parse_challenge_params};

    #[test]
    fn loopback_hosts_use_plain_http() {
        assert!(is_plain_http_host("localhost:5000"));
        assert!(is_plain_http_host("127.0.0.1:5000"));
        assert!(is_plain_http_host("127.5.6.7"));
        assert!(is_plain_http_host("[::1]:5000"));
        assert!(!is_plain_http_host("registry-1.docker.io"));
        assert!(!is_plain_http_host("10.0.0.1:5000"));
    }

    #[test]
    fn parses_bearer_challenge() {
        let params = parse_challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(params["realm"], "https://auth.docker.io/token");
        assert_eq!(params["service"], "registry.docker.io");
        assert_eq!(params["scope"], "repository:library/busybox:pull");
    }
}
