//! `builder build`'s flags; `engine::command` turns them into a request and renders the
//! build.

use anyhow::Result;
use std::path::{Path, PathBuf};

#[derive(clap::Args, serde::Serialize)]
pub struct BuildArgs {
    /// Name (and tag) for the image; may be repeated.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Path of the Dockerfile (default: PATH/Dockerfile); may be outside the context.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable, KEY=VALUE (or KEY to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Label for the image, KEY=VALUE (KEY alone: an empty value); may be repeated.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Build only up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Output, buildx style: type=image|registry|oci|docker|local|tar[,dest=PATH][,compression=gzip|zstd|uncompressed]...; `-` = rootfs tar on stdout.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Push the image (or multi-platform index) to the registry of each -t name
    /// (shorthand for --output type=registry).
    #[arg(long)]
    pub push: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print something instead of building: `graph` prints the lowered build graph.
    #[arg(long)]
    pub print: Option<String>,
    /// Target platform(s), comma-separated for a multi-platform image index (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Write the image (config) digest to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Export the build cache: type=local,dest=DIR | type=registry,ref=REF | type=inline |
    /// type=gha[,scope=S][,url=U][,token=T][,timeout=10m] [,mode=min|max][,mounts=true]; may be repeated.
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Import a build cache: type=local,src=DIR | type=registry,ref=REF (or just REF) |
    /// type=gha[,scope=S]; may be repeated.
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Do not use the cache for these stages (comma-separated; may be repeated).
    #[arg(long = "no-cache-filter")]
    pub no_cache_filter: Vec<String>,
    /// Write build result metadata (image digest, descriptor, names, cache) as JSON here.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR][,type=file|env].
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: `default` ($SSH_AUTH_SOCK) or ID=SOCKET.
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// What to do when a RUN fails: `fail` (default) or `shell` (open /bin/sh in its container).
    #[arg(long = "on-error", value_name = "fail|shell")]
    pub on_error: Option<String>,
    /// Named context, name=DIR|docker-image://REF|oci-layout://PATH; may be repeated.
    #[arg(long = "build-context")]
    pub build_contexts: Vec<String>,
    /// Run the build checks only, without building; exits non-zero on any warning.
    #[arg(long)]
    pub check: bool,
    /// Print only the image id on stdout (no progress); errors still go to stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Network for RUN steps: default, none, or host (needs --allow network.host).
    #[arg(long, value_name = "default|none|host")]
    pub network: Option<String>,
    /// Grant an entitlement: network.host or security.insecure; may be repeated.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Add NAME:IP (or NAME=IP; IP may be host-gateway) to RUN's /etc/hosts; may be repeated.
    #[arg(long = "add-host")]
    pub add_hosts: Vec<String>,
    /// Resource limit for RUN, NAME=SOFT[:HARD] (e.g. nofile=1024:2048); may be repeated.
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// Size of RUN's /dev/shm (e.g. 128m, 2g, bytes; default 64m).
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Annotation [TYPE[,TYPE][PLATFORM]:]KEY=VALUE, TYPE = manifest (default), index,
    /// manifest-descriptor or index-descriptor; may be repeated.
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// Load the image into the local Docker engine (DOCKER_HOST or /var/run/docker.sock).
    #[arg(long)]
    pub load: bool,
    /// Resolve base images against their registry even when the store has them.
    #[arg(long)]
    pub pull: bool,
    /// What to do: build (default), check, outline or targets [,format=json].
    #[arg(long = "call", value_name = "build|check|outline|targets")]
    pub call: Option<String>,
    /// SLSA provenance attestation: true|false|mode=min|max[,builder-id=URI]
    /// (default: mode=min when pushing).
    #[arg(long)]
    pub provenance: Option<String>,
    /// SBOM attestation (SPDX 2.3 JSON of the packages in the image): true|false.
    #[arg(long)]
    pub sbom: Option<String>,
    /// Attestation: type=provenance[,mode=min|max][,builder-id=URI] | type=sbom
    /// [,disabled=true]; may be repeated.
    #[arg(long = "attest")]
    pub attest: Vec<String>,
    /// Build on a remote builder: tcp://HOST:PORT[,tcp://HOST2:PORT2...], unix:///PATH, or the
    /// name of one made with `builder builder create`.
    #[arg(long, env = "BUILDER_HOST")]
    pub builder: Option<String>,
    /// The build context directory; `-` reads a tar context (or a lone Dockerfile) from stdin.
    pub context: PathBuf,
}

/// `--progress`'s values (read by `engine::render::ProgressMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

pub async fn build(root: &Path, args: BuildArgs) -> Result<i32> {
    engine::command::build(root, crate::cli::typed(args)?).await
}
