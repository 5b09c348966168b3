//! What a build is asked to do, and what it gives back.

use crate::attest::AttestFlags;
use crate::output::Exporter;
use crate::secrets::{SecretProvider, SshProvider};
use crate::settings::Call;
use exporter::image::{Descriptor, Platform};
use frontend::checks::CheckWarning;
use frontend::run_flags::RunDefaults;
use solver::cache::{CacheExport, CacheFrom, CacheTo};
use solver::context::LocalSource;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the Dockerfile comes from.
#[derive(Clone, Debug)]
pub enum Dockerfile {
    /// A file on this machine.
    Path(PathBuf),
    /// The Dockerfile's bytes (e.g. uploaded), with the name messages give it.
    Bytes { name: String, source: Vec<u8> },
}

/// A named context (`--build-context NAME=...`): what `FROM NAME`, `COPY --from=NAME` and
/// `RUN --mount=from=NAME` use before stages and images.
#[derive(Clone)]
pub enum NamedSource {
    /// A directory tree (a local directory, or an upload a server unpacked).
    Local(Arc<dyn LocalSource>),
    /// `docker-image://REF`.
    Image(String),
    /// `oci-layout://PATH[@sha256:...|:TAG]`, loaded into the content store.
    OciLayout(String),
}

/// One build: everything `docker buildx build` can be told, typed.
#[derive(Clone)]
pub struct BuildRequest {
    pub dockerfile: Dockerfile,
    /// The main context. Requests of one [`crate::build_many`] that pass the same `Arc`
    /// share its steps.
    pub context: Arc<dyn LocalSource>,
    /// Named contexts by lower-case name.
    pub named_contexts: BTreeMap<String, NamedSource>,
    pub build_args: BTreeMap<String, String>,
    /// Labels set on the final image over the Dockerfile's.
    pub labels: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Target platforms; empty means this machine's (and no explicit `--platform`).
    pub platforms: Vec<Platform>,
    /// Image names (`-t`): the default image-store output and registry names.
    pub tags: Vec<String>,
    /// Where results go; an image-store output is added when `tags` are given and none is.
    pub outputs: Vec<Arc<dyn Exporter>>,
    pub cache_from: Vec<CacheFrom>,
    pub cache_to: Vec<CacheTo>,
    pub no_cache: bool,
    /// Stages whose steps must not come from the cache.
    pub no_cache_stages: BTreeSet<String>,
    /// Resolve base images against their registry even when the store has them.
    pub pull: bool,
    pub secrets: Arc<dyn SecretProvider>,
    pub ssh: Arc<dyn SshProvider>,
    /// Open a shell in a failed RUN step's container.
    pub on_error_shell: bool,
    /// Network, entitlements, extra hosts, ulimits and /dev/shm for RUN steps.
    pub run: RunDefaults,
    pub annotations: exporter::Annotations,
    pub attestations: AttestFlags,
    /// Build, or only check / outline / list targets.
    pub call: Call,
    /// Stop after lowering and answer with the build graph.
    pub print_graph: bool,
}

impl BuildRequest {
    /// A request to build `dockerfile` in `context` for this machine, into nothing but the
    /// default image; set the other fields as needed.
    pub fn new(dockerfile: Dockerfile, context: Arc<dyn LocalSource>) -> Self {
        BuildRequest {
            dockerfile,
            context,
            named_contexts: BTreeMap::new(),
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            target: None,
            platforms: Vec::new(),
            tags: Vec::new(),
            outputs: Vec::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            no_cache: false,
            no_cache_stages: BTreeSet::new(),
            pull: false,
            secrets: Arc::new(crate::secrets::NoSecrets),
            ssh: Arc::new(crate::secrets::NoSecrets),
            on_error_shell: false,
            run: RunDefaults::default(),
            annotations: Default::default(),
            attestations: AttestFlags::default(),
            call: Call::Build,
            print_graph: false,
        }
    }
}

/// How a request ended when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    Built(Box<BuildResult>),
    /// `--call=outline|targets`: the answer, ready to print.
    Answer(String),
    /// `--call=check`: the warnings found.
    Checked(CheckReport),
    /// `print_graph`: the lowered (merged) build graph.
    Graph(String),
}

/// Check warnings with what a report needs to quote the Dockerfile.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub warnings: Vec<CheckWarning>,
    /// The Dockerfile's name, e.g. `Dockerfile`.
    pub file: String,
    pub source: Vec<u8>,
}

/// One platform's image of a build.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: Platform,
    /// The manifest's descriptor (None when nothing was exported as an image).
    pub manifest: Option<Descriptor>,
    /// The digest of the image config the manifest names.
    pub config_digest: Option<String>,
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The main image: a manifest, or the index over several platforms (or attestations).
    pub image: Descriptor,
    /// The image id buildx reports (`--iidfile`, `-q`): the config digest of a
    /// single-platform image, else the index digest.
    pub image_id: String,
    pub platforms: Vec<PlatformImage>,
    /// Whether the build had several target platforms.
    pub multi_platform: bool,
    /// buildx's `--metadata-file` document.
    pub metadata: serde_json::Value,
    pub cache_exports: Vec<CacheExport>,
    /// Steps that ran, and steps answered from the cache.
    pub executed: usize,
    pub cached: usize,
    /// Lines for the user about what the outputs did (`pushed NAME`, a `--load`).
    pub notes: Vec<String>,
}

impl BuildResult {
    /// What a finished build prints on stderr (locally, and streamed from a build server): its
    /// notes, the `built ...` line and one `naming to TAG` line per tag.
    pub fn summary(&self, tags: &[String]) -> String {
        let mut text = String::new();
        for note in &self.notes {
            text.push_str(&format!("{note}\n"));
        }
        let for_platforms = if self.multi_platform {
            let names: Vec<String> = self
                .platforms
                .iter()
                .map(|p| p.platform.to_string())
                .collect();
            format!(" for {}", names.join(", "))
        } else {
            String::new()
        };
        text.push_str(&format!(
            "built {}{for_platforms} ({} steps run, {} cached)\n",
            self.image.digest, self.executed, self.cached
        ));
        for t in tags {
            text.push_str(&format!("naming to {t}\n"));
        }
        text
    }

    /// Writes the metadata document (`--metadata-file`) atomically.
    pub fn write_metadata(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let json = serde_json::to_vec_pretty(&self.metadata)?;
        solver::context::write_atomic_with_mode(path, &json, 0o644)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum BuildError {
    /// The Dockerfile is wrong: `FILE:LINE:COL: message` and an excerpt. For
    /// `--call=check`, the syntax warnings found before the error.
    Dockerfile {
        message: String,
        check: Option<CheckReport>,
    },
    /// `# check=error=true` and the checks found something.
    Lint(String),
    /// A step failed: the step, its Dockerfile line, and why.
    Solve(String),
    /// The build was cancelled (Ctrl-C) before a step failed.
    Cancelled,
    Other(anyhow::Error),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Dockerfile { message, .. } => f.write_str(message),
            BuildError::Lint(m) | BuildError::Solve(m) => f.write_str(m),
            BuildError::Cancelled => f.write_str("build cancelled"),
            BuildError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<anyhow::Error> for BuildError {
    fn from(e: anyhow::Error) -> Self {
        BuildError::Other(e)
    }
}
