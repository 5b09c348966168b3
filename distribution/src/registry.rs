//! A small OCI distribution (v2) client: pull and push with streaming blob bodies.
//!
//! Plain HTTP is used for `localhost` and loopback addresses (like docker), HTTPS otherwise.
//! Authentication: anonymous, basic, and the bearer token flow announced by
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{
    HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use snapshotter::ContentStore;
use tokio::task::JoinSet;

use crate::auth::{Credential, DockerConfig};
use crate::blobs::{read_json, select_manifest};
use crate::config::RegistryConfig;
use crate::sources::{known_sources, record_source};
use crate::{Error, Result};
use oci::image::{
    is_index_media_type, is_manifest_media_type, Descriptor, Index, Manifest, Platform,
    MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use oci::reference::{Reference, DEFAULT_REGISTRY};

mod lazy;

/// Manifests bigger than this are refused (the spec suggests registries accept 4 MiB).
const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// Blobs downloaded or uploaded at the same time.
const PARALLEL_BLOBS: usize = 4;
const BLOB_WRITE_BUFFER: usize = 256 * 1024;
/// Tries per request on connection errors, 5xx and 429 (backoff 200, 400, 800 ms).
const MAX_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A registry's `Retry-After` is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Distribution v2 client: anonymous/basic + bearer token flow (WWW-Authenticate: Bearer
/// realm,service,scope; tokens cached per scope), credentials from `~/.docker/config.json`
/// (or given explicitly), host settings (mirrors, http/insecure, CAs) from the builder config.
#[derive(Clone)]
pub struct RegistryClient {
    /// Host settings; a config file that failed to load is reported by every operation.
    config: Arc<std::result::Result<RegistryConfig, String>>,
    /// Docker credentials file, read when a registry first asks for credentials.
    docker_config: Arc<Mutex<Option<std::result::Result<DockerConfig, String>>>>,
    /// Registry host → credentials given with `with_credentials` (win over config.json).
    credentials: Arc<HashMap<String, (String, String)>>,
    /// Registry host → credentials resolved from config.json / helpers (None: anonymous).
    resolved: Arc<Mutex<HashMap<String, Option<Credential>>>>,
    /// Registry host → HTTP client with that host's TLS settings.
    http_clients: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    /// (registry, scope) → how to authorise requests.
    auth: Arc<Mutex<HashMap<(String, String), Authorization>>>,
}

#[derive(Clone)]
enum Authorization {
    Bearer(String),
    Basic(String, String),
}

/// What a push did with each distinct blob (config and layers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Blobs sent over the wire.
    pub uploaded: Vec<String>,
    /// Blobs the repository already had (HEAD), not sent.
    pub existing: Vec<String>,
    /// Blobs mounted from another repository on the same registry, not sent.
    pub mounted: Vec<String>,
}

impl PushReport {
    fn merge(&mut self, other: PushReport) {
        self.uploaded.extend(other.uploaded);
        self.existing.extend(other.existing);
        self.mounted.extend(other.mounted);
    }
}

impl std::fmt::Display for PushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blobs uploaded, {} already present, {} mounted",
            self.uploaded.len(),
            self.existing.len(),
            self.mounted.len()
        )
    }
}

/// Where one repository lives.
#[derive(Clone)]
struct Repository {
    /// Host as in references ("docker.io", "host:port"): key for credentials and tokens.
    registry: String,
    base: Url,
    name: String,
    http: reqwest::Client,
}

impl Repository {
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
    /// A client with the host settings of `BUILDER_CONFIG` (or /etc/builder/builder.toml)
    /// and credentials from `$DOCKER_CONFIG/config.json` (or ~/.docker/config.json).
    pub fn new() -> Self {
        Self::with_config(RegistryConfig::load().map_err(|e| e.to_string()))
    }

    fn with_config(config: std::result::Result<RegistryConfig, String>) -> Self {
        RegistryClient {
            config: Arc::new(config),
            docker_config: Arc::new(Mutex::new(None)),
            credentials: Arc::new(HashMap::new()),
            resolved: Arc::new(Mutex::new(HashMap::new())),
            http_clients: Arc::new(Mutex::new(HashMap::new())),
            auth: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A client with explicit host settings (and credentials still from config.json).
    pub fn with_registry_config(config: RegistryConfig) -> Self {
        Self::with_config(Ok(config))
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

    fn config(&self) -> Result<&RegistryConfig> {
        self.config
            .as_ref()
            .as_ref()
            .map_err(|message| Error::Config(message.clone()))
    }

    /// The HTTP client for `host`, built once with its CAs / verification setting.
    fn http_for(
        &self,
        host: &str,
        transport: &crate::config::Transport,
    ) -> Result<reqwest::Client> {
        if let Some(client) = self
            .http_clients
            .lock()
            .ok()
            .and_then(|c| c.get(host).cloned())
        {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("builder/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30));
        for ca in &transport.ca_files {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::Config(format!(
                    "reading CA certificate {} for {host}: {e}",
                    ca.display()
                ))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!("CA certificate {} for {host}: {e}", ca.display()))
            })?;
            if certificates.is_empty() {
                return Err(Error::Config(format!(
                    "CA certificate {} for {host}: no PEM certificate in it",
                    ca.display()
                )));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if transport.skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| Error::Registry {
            registry: host.to_string(),
            message: format!("setting up HTTP client: {e}"),
        })?;
        if let Ok(mut clients) = self.http_clients.lock() {
            clients.insert(host.to_string(), client.clone());
        }
        Ok(client)
    }

    /// `repository` on the registry `host` (as in references; "docker.io" means Docker Hub).
    fn repository(&self, host: &str, repository: &str) -> Result<Repository> {
        let network_host = if host == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            host
        };
        let transport = self.config()?.transport(host);
        let scheme = if transport.plain_http {
            "http"
        } else {
            "https"
        };
        let base =
            Url::parse(&format!("{scheme}://{network_host}/")).map_err(|e| Error::Registry {
                registry: host.to_string(),
                message: format!("bad registry address: {e}"),
            })?;
        Ok(Repository {
            registry: host.to_string(),
            base,
            name: repository.to_string(),
            http: self.http_for(host, &transport)?,
        })
    }

    /// Credentials for `registry`: explicit ones, else config.json / credential helpers.
    async fn credentials_for(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some((user, password)) = self.credentials.get(registry) {
            return Ok(Some(Credential::Password {
                user: user.clone(),
                password: password.clone(),
            }));
        }
        if let Some(found) = self
            .resolved
            .lock()
            .ok()
            .and_then(|r| r.get(registry).cloned())
        {
            return Ok(found);
        }
        let (client, host) = (self.clone(), registry.to_string());
        // Reading the file and running helpers blocks; keep it off the async workers.
        let found = tokio::task::spawn_blocking(move || -> Result<Option<Credential>> {
            let mut docker_config = client
                .docker_config
                .lock()
                .map_err(|_| Error::Config("credentials lock poisoned".into()))?;
            let loaded = docker_config
                .get_or_insert_with(|| DockerConfig::load().map_err(|e| e.to_string()));
            match loaded {
                Ok(config) => config.credentials(&host),
                Err(message) => Err(Error::Config(message.clone())),
            }
        })
        .await
        .map_err(|e| Error::Config(format!("reading credentials: {e}")))??;
        if let Ok(mut resolved) = self.resolved.lock() {
            resolved.insert(registry.to_string(), found.clone());
        }
        Ok(found)
    }

    /// Checks that the credentials given with `with_credentials` (or stored) for `registry`
    /// are accepted: `GET /v2/` answering its challenge, as `docker login` does.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let repository = self.repository(registry, "")?;
        let url = repository
            .base
            .join("v2/")
            .map_err(|e| repository.error(format!("bad url: {e}")))?;
        let response = self
            .send(&repository, "", &|| Ok(repository.http.get(url.clone())))
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(status_error(&repository, "checking credentials", response).await)
    }

    /// Pulls the manifest (following an index to `platform`), config and layers into the
    /// content store (blobs already present are skipped; digests verified while streaming),
    /// returns the top-level descriptor as resolved from the registry (tag it in the ImageStore).
    /// Mirrors configured for the registry are tried first, then the registry itself.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        content: &ContentStore,
    ) -> Result<Descriptor> {
        let mut mirror_failures = Vec::new();
        for mirror in self.config()?.mirrors(&reference.registry) {
            let repository = self.repository(&mirror, &reference.repository)?;
            match self
                .pull_from(&repository, reference, platform, content)
                .await
            {
                Ok(top) => return Ok(top),
                Err(e) => mirror_failures.push(format!("mirror {mirror}: {e}")),
            }
        }
        let repository = self.repository(&reference.registry, &reference.repository)?;
        match self
            .pull_from(&repository, reference, platform, content)
            .await
        {
            Ok(top) => Ok(top),
            Err(e) if mirror_failures.is_empty() => Err(e),
            Err(e) => Err(repository.error(format!("{e} (after {})", mirror_failures.join("; ")))),
        }
    }

    async fn pull_from(
        &self,
        repository: &Repository,
        reference: &Reference,
        platform: &Platform,
        content: &ContentStore,
    ) -> Result<Descriptor> {
        let scope = format!("repository:{}:pull", repository.name);
        let top = self
            .fetch_manifest(
                repository,
                &scope,
                reference.manifest_reference(),
                reference.digest.as_deref(),
                content,
            )
            .await?;
        let manifests = if is_index_media_type(&top.media_type) {
            let index: Index = read_json(content, &top)?;
            let chosen = select_manifest(&index, &top.digest, platform)?;
            // The image and its attestations (BuildKit's provenance/SBOM manifests), so that
            // the index pushes again as it came.
            std::iter::once(chosen.clone())
                .chain(oci::platform::attestations_of(&index.manifests, &chosen.digest).cloned())
                .collect()
        } else if is_manifest_media_type(&top.media_type) {
            vec![top.clone()]
        } else {
            return Err(Error::UnsupportedMediaType(top.media_type));
        };
        for manifest_descriptor in &manifests {
            if !content.has(&manifest_descriptor.digest) {
                let digest = &manifest_descriptor.digest;
                let fetched = self
                    .fetch_manifest(repository, &scope, digest, Some(digest), content)
                    .await?;
                if !is_manifest_media_type(&fetched.media_type) {
                    return Err(Error::UnsupportedMediaType(fetched.media_type));
                }
            }
            let manifest: Manifest = read_json(content, manifest_descriptor)?;
            self.pull_blobs(repository, &scope, &manifest, content)
                .await?;
        }
        Ok(top)
    }

    /// Fetches the config and layers of `manifest` that the content store lacks, a few at once.
    async fn pull_blobs(
        &self,
        repository: &Repository,
        scope: &str,
        manifest: &Manifest,
        content: &ContentStore,
    ) -> Result<()> {
        let blobs: Vec<Descriptor> = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .cloned()
            .collect();
        let mut tasks = JoinSet::new();
        for blob in blobs.iter().filter(|blob| !content.has(&blob.digest)) {
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
            tasks.spawn(async move {
                client
                    .fetch_blob(&repository, &scope, &blob, &content)
                    .await
            });
        }
        while !tasks.is_empty() {
            join_next(&mut tasks).await?;
        }
        for blob in &blobs {
            record_source(
                content,
                &blob.digest,
                &repository.registry,
                &repository.name,
            );
        }
        Ok(())
    }

    /// Pushes a manifest/index with its blobs (skipping blobs the registry has via HEAD),
    /// then tags it (or, for a digest-only reference, pushes it by digest).
    pub async fn push(
        &self,
        reference: &Reference,
        target: &Descriptor,
        content: &ContentStore,
    ) -> Result<()> {
        self.push_reporting(reference, target, content)
            .await
            .map(|_| ())
    }

    /// Like [`push`](Self::push), and says which blobs were uploaded, already present, or
    /// mounted from another repository of the same registry.
    pub async fn push_reporting(
        &self,
        reference: &Reference,
        target: &Descriptor,
        content: &ContentStore,
    ) -> Result<PushReport> {
        let repository = self.repository(&reference.registry, &reference.repository)?;
        let scope = format!("repository:{}:pull,push", repository.name);
        let mut report = PushReport::default();
        if is_index_media_type(&target.media_type) {
            let index: Index = read_json(content, target)?;
            check_children_present(reference, &index, content)?;
            for child in &index.manifests {
                if !is_manifest_media_type(&child.media_type) {
                    return Err(Error::UnsupportedMediaType(child.media_type.clone()));
                }
                report.merge(
                    self.push_image_blobs(&repository, &scope, child, content)
                        .await?,
                );
                self.put_manifest(&repository, &scope, child, &child.digest, content)
                    .await?;
            }
        } else if is_manifest_media_type(&target.media_type) {
            report = self
                .push_image_blobs(&repository, &scope, target, content)
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
            .await?;
        Ok(report)
    }

    /// Uploads the config and layers of one image manifest, up to PARALLEL_BLOBS at once.
    async fn push_image_blobs(
        &self,
        repository: &Repository,
        scope: &str,
        manifest_descriptor: &Descriptor,
        content: &ContentStore,
    ) -> Result<PushReport> {
        let manifest: Manifest = read_json(content, manifest_descriptor)?;
        let mut tasks = JoinSet::new();
        let mut queued = BTreeSet::new();
        let report = Arc::new(Mutex::new(PushReport::default()));
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !queued.insert(blob.digest.clone()) {
                continue;
            }
            while tasks.len() >= PARALLEL_BLOBS {
                join_next(&mut tasks).await?;
            }
            let (client, repository, scope, content, blob, report) = (
                self.clone(),
                repository.clone(),
                scope.to_string(),
                content.clone(),
                blob.clone(),
                report.clone(),
            );
            tasks.spawn(async move {
                let outcome = client
                    .push_blob(&repository, &scope, &blob, &content)
                    .await?;
                record_source(
                    &content,
                    &blob.digest,
                    &repository.registry,
                    &repository.name,
                );
                if let Ok(mut report) = report.lock() {
                    match outcome {
                        BlobOutcome::Uploaded => report.uploaded.push(blob.digest),
                        BlobOutcome::Existing => report.existing.push(blob.digest),
                        BlobOutcome::Mounted => report.mounted.push(blob.digest),
                    }
                }
                Ok(())
            });
            // The first (small config) blob settles authentication, so the parallel
            // uploads share one cached token instead of each fetching their own.
            if queued.len() == 1 {
                join_next(&mut tasks).await?;
            }
        }
        while !tasks.is_empty() {
            join_next(&mut tasks).await?;
        }
        let report = report.lock().map(|r| r.clone()).unwrap_or_default();
        Ok(report)
    }

    async fn push_blob(
        &self,
        repository: &Repository,
        scope: &str,
        blob: &Descriptor,
        content: &ContentStore,
    ) -> Result<BlobOutcome> {
        if !content.has(&blob.digest) {
            return Err(Error::NotFound(format!("blob {} to push", blob.digest)));
        }
        let blob_url = repository.url(&format!("blobs/{}", blob.digest))?;
        let head = self
            .send(repository, scope, &|| {
                Ok(repository.http.head(blob_url.clone()))
            })
            .await?;
        if head.status().is_success() {
            return Ok(BlobOutcome::Existing);
        }
        // A sibling repository on the same registry known to hold the blob: ask to mount it.
        let mount_from = known_sources(content, &blob.digest)
            .into_iter()
            .rev()
            .find(|source| {
                source.registry == repository.registry && source.repository != repository.name
            })
            .map(|source| source.repository);
        let mut start_url = repository.url("blobs/uploads/")?;
        let mut start_scope = scope.to_string();
        if let Some(from) = &mount_from {
            start_url
                .query_pairs_mut()
                .append_pair("mount", &blob.digest)
                .append_pair("from", from);
            start_scope = format!("{scope} repository:{from}:pull");
        }
        let started = self
            .send(repository, &start_scope, &|| {
                Ok(repository
                    .http
                    .post(start_url.clone())
                    .header(CONTENT_LENGTH, 0))
            })
            .await?;
        if mount_from.is_some() && started.status() == StatusCode::CREATED {
            return Ok(BlobOutcome::Mounted);
        }
        // 202 (also for a refused mount): upload into the session it opened.
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
                // Streamed from disk; reopened for each attempt.
                let file = content.open_blob(&blob.digest)?;
                Ok(repository
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
        Ok(BlobOutcome::Uploaded)
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
                Ok(repository
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
                Ok(repository
                    .http
                    .get(url.clone())
                    .header(ACCEPT, accept.as_str()))
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
        let digest = oci::sha256_digest(&bytes);
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
            #[serde(default, deserialize_with = "oci::lenient::null_default")]
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
            .send(repository, scope, &|| Ok(repository.http.get(url.clone())))
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

    /// Sends a request, retrying connection errors, 5xx and 429 with backoff, and answering
    /// one authentication challenge. `make` builds the request afresh for every attempt.
    async fn send(
        &self,
        repository: &Repository,
        scope: &str,
        make: &(dyn Fn() -> Result<RequestBuilder> + Sync),
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send_authorized(repository, scope, make).await;
            let wait = match &result {
                Err(Error::Http(e)) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    Some(backoff(attempt, None))
                }
                Ok(response)
                    if response.status().is_server_error()
                        || response.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    Some(backoff(attempt, retry_after(response.headers())))
                }
                _ => None,
            };
            match wait {
                Some(wait) if attempt < MAX_ATTEMPTS => tokio::time::sleep(wait).await,
                _ => return result,
            }
        }
    }

    async fn send_authorized(
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
            let what = if scope.is_empty() {
                "credentials rejected (wrong user name or password?)".to_string()
            } else {
                format!("unauthorized for {scope}; log in (builder login {}) with credentials that allow it", repository.registry)
            };
            return Err(repository.error(what));
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
            Some(Authorization::Basic(user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Answers a `WWW-Authenticate` challenge and remembers the result for this scope.
    /// `scope` may hold several space-separated scopes (e.g. push plus a mount source).
    async fn authenticate(
        &self,
        repository: &Repository,
        scope: &str,
        challenge: &str,
    ) -> Result<()> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let credential = self.credentials_for(&repository.registry).await?;
        let authorization = if scheme.eq_ignore_ascii_case("basic") {
            match credential {
                Some(Credential::Password { user, password }) => {
                    Authorization::Basic(user, password)
                }
                Some(Credential::IdentityToken(_)) => {
                    return Err(repository.error(
                        "registry wants a user name and password (basic auth) but only an identity token is stored".into(),
                    ))
                }
                None => {
                    return Err(repository.error(format!(
                        "registry requires a user name and password (basic auth); run `builder login {}`",
                        repository.registry
                    )))
                }
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let params = parse_challenge_params(params);
            let realm = params
                .get("realm")
                .ok_or_else(|| repository.error("bearer challenge without realm".into()))?;
            let mut token_url = Url::parse(realm)
                .map_err(|e| repository.error(format!("bad token realm {realm:?}: {e}")))?;
            let service = params.get("service").cloned().unwrap_or_default();
            let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
            let request = match &credential {
                Some(Credential::IdentityToken(refresh_token)) => {
                    // OAuth2 refresh-token grant, as docker does with identity tokens.
                    let mut form = Url::parse("http://form/").expect("static url");
                    {
                        let mut pairs = form.query_pairs_mut();
                        pairs
                            .append_pair("grant_type", "refresh_token")
                            .append_pair("client_id", "builder")
                            .append_pair("service", &service)
                            .append_pair("refresh_token", refresh_token);
                        for scope in &scopes {
                            pairs.append_pair("scope", scope);
                        }
                    }
                    repository
                        .http
                        .post(token_url)
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(form.query().unwrap_or_default().to_string())
                }
                _ => {
                    {
                        let mut query = token_url.query_pairs_mut();
                        if !service.is_empty() {
                            query.append_pair("service", &service);
                        }
                        for scope in &scopes {
                            query.append_pair("scope", scope);
                        }
                    }
                    let request = repository.http.get(token_url);
                    match &credential {
                        Some(Credential::Password { user, password }) => {
                            request.basic_auth(user, Some(password))
                        }
                        _ => request,
                    }
                }
            };
            let response = request.send().await?;
            if !response.status().is_success() {
                return Err(status_error(repository, "fetching a bearer token", response).await);
            }
            let token: TokenResponse = response.json().await?;
            let token = token
                .access_token
                .or(token.token)
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

/// How one blob got into the target repository.
enum BlobOutcome {
    Uploaded,
    Existing,
    Mounted,
}

/// Wait before try `attempt + 1`: the registry's Retry-After (capped), else exponential.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .map(|wait| wait.min(MAX_RETRY_AFTER))
        .unwrap_or_else(|| FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1)))
}

/// `Retry-After: <seconds>` (the HTTP-date form is treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
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
    let tls_hint = if body.contains("HTTP request to an HTTPS server") {
        " (the registry speaks HTTPS: give its CA in certs.d/HOST/ca.crt or `ca = [...]`, \
         or set `insecure = true`, in the builder config)"
    } else {
        ""
    };
    repository.error(format!(
        "{action}: {status}{method_hint}: {}{tls_hint}",
        body.trim()
    ))
}

/// An index pulled for one platform lacks the others' images: say which, and what to do,
/// before anything is uploaded.
fn check_children_present(
    reference: &Reference,
    index: &Index,
    content: &ContentStore,
) -> Result<()> {
    let missing: Vec<String> = index
        .manifests
        .iter()
        .filter(|child| !content.has(&child.digest))
        .map(|child| match &child.platform {
            Some(platform) => format!("{platform} ({})", child.digest),
            None => child.digest.clone(),
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "cannot push {}: it is an index and these of its images were never pulled: {}; \
         pull each with `builder pull --platform OS/ARCH`, or push one platform's image instead",
        reference.familiar_name(),
        missing.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::{backoff, parse_challenge_params, Duration};

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_millis(200));
        assert_eq!(backoff(3, None), Duration::from_millis(800));
        assert_eq!(
            backoff(2, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            backoff(2, Some(Duration::from_secs(3600))),
            Duration::from_secs(10)
        );
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
