//! `builder serve`, `builder builder create|ls|rm`, and `builder build --builder ...` as
//! library calls: the CLI's flags (read by field name) in, the server run or the remote
//! build's request assembled (endpoints, named builders, contexts, outputs, secrets).

use crate::builders::NamedBuilder;
use crate::client::{Dest, LocalContext, RemoteBuild};
use crate::proto::{Context, Flag, Output, Secret, Start};
use crate::{Address, TlsFiles};
use anyhow::{bail, Context as _, Result};
use engine::command::BuildFlags as BuildArgs;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `builder serve`'s flags.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ServeFlags {
    /// Where to listen: tcp://HOST:PORT or unix:///PATH.
    pub addr: String,
    /// CA certificate that client certificates must be signed by (mutual TLS).
    pub tlscacert: Option<PathBuf>,
    /// The server's certificate.
    pub tlscert: Option<PathBuf>,
    /// The server's private key.
    pub tlskey: Option<PathBuf>,
    /// Accept plain connections (only on a loopback address; a unix socket needs no flag).
    pub insecure: bool,
    /// Serve Prometheus metrics over HTTP on HOST:PORT.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Server config (TOML): keep_storage, allow_entitlements, shutdown_timeout, cache_from, cache_to.
    pub config: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum BuilderCommand {
    /// Name a remote builder (one or more `builder serve` nodes) with this client's certificates.
    Create {
        name: String,
        /// Node address, tcp://HOST:PORT or unix:///PATH; may be repeated or comma-separated.
        nodes: Vec<String>,
        tlscacert: Option<PathBuf>,
        tlscert: Option<PathBuf>,
        tlskey: Option<PathBuf>,
    },
    /// List the named builders.
    Ls,
    /// Remove a named builder.
    Rm { name: String },
}

pub fn serve(root: &Path, args: ServeFlags) -> Result<i32> {
    let opts = crate::server::ServeOptions {
        addr: Address::parse(&args.addr).context("--addr")?,
        tls: TlsFiles::read(
            args.tlscacert.as_deref(),
            args.tlscert.as_deref(),
            args.tlskey.as_deref(),
        )?,
        insecure: args.insecure,
        metrics_addr: args.metrics_addr,
        config: match &args.config {
            Some(p) => crate::server::Config::load(p)?,
            None => Default::default(),
        },
        root: root.to_path_buf(),
    };
    let backend = Arc::new(crate::InProcessBackend::new(
        executor::self_exe()?,
        root.to_path_buf(),
    ));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::server::serve(opts, backend))?;
    Ok(0)
}

pub fn builder_command(command: BuilderCommand) -> Result<i32> {
    match command {
        BuilderCommand::Create {
            name,
            nodes,
            tlscacert,
            tlscert,
            tlskey,
        } => {
            let b = NamedBuilder {
                name,
                nodes,
                tls: TlsFiles::read(tlscacert.as_deref(), tlscert.as_deref(), tlskey.as_deref())?,
            };
            let path = b.save()?;
            println!("{} ({})", b.name, path.display());
        }
        BuilderCommand::Ls => {
            println!("{:<20} {:<6} NODES", "NAME", "TLS");
            for b in NamedBuilder::list()? {
                let tls = if b.tls.is_empty() { "no" } else { "yes" };
                println!("{:<20} {:<6} {}", b.name, tls, b.nodes.join(","));
            }
        }
        BuilderCommand::Rm { name } => NamedBuilder::remove(&name)?,
    }
    Ok(0)
}

/// `--builder` (or BUILDER_HOST): addresses (TLS files from BUILDER_CERT_PATH) or a name.
fn connection(builder: &str) -> Result<crate::client::Connection> {
    if builder.contains("://") {
        let tls = match std::env::var_os("BUILDER_CERT_PATH").filter(|p| !p.is_empty()) {
            Some(dir) => TlsFiles::from_dir(Path::new(&dir))?,
            None => TlsFiles::default(),
        };
        let nodes = crate::endpoint::parse_list(builder).context("--builder")?;
        return Ok(crate::client::Connection { nodes, tls });
    }
    let named = NamedBuilder::load(builder)?;
    Ok(crate::client::Connection {
        nodes: named.addresses()?,
        tls: named.tls,
    })
}

pub fn remote_build(builder: &str, args: BuildArgs) -> Result<i32> {
    let conn = connection(builder)?;
    let mut request = request(&args)?;
    let mut load_archive = None;
    if args.load {
        let tmp = tempfile::NamedTempFile::new()?;
        request.start.outputs.push(Output {
            spec: "type=docker".into(),
        });
        request
            .dests
            .push(Some(Dest::File(tmp.path().to_path_buf())));
        load_archive = Some(tmp);
    }
    let rt = tokio::runtime::Runtime::new()?;
    let outcome = rt.block_on(crate::client::build(&conn, request))?;
    if outcome.exit_code == 0 {
        if let Some(archive) = load_archive {
            let host = exporter::docker_engine::docker_host();
            let loaded = exporter::docker_engine::load(&host, archive.path())
                .map_err(|e| anyhow::anyhow!("--load: {e}"))?;
            if !args.quiet {
                eprintln!("{loaded}");
            }
        }
    }
    Ok(outcome.exit_code)
}

fn request(args: &BuildArgs) -> Result<RemoteBuild> {
    if args.context.as_os_str() == "-" || args.file.as_deref() == Some(Path::new("-")) {
        bail!("a remote builder needs a context directory and a Dockerfile file, not stdin");
    }
    if args.on_error.as_deref() == Some("shell") {
        bail!("--on-error=shell needs a local build");
    }
    let context = std::fs::canonicalize(&args.context)
        .with_context(|| format!("context {}", args.context.display()))?;
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let dockerfile = std::fs::canonicalize(&dockerfile)
        .with_context(|| format!("Dockerfile {}", dockerfile.display()))?;
    let mut start = Start {
        flags: flags(args)?,
        dockerfile: file_name(&dockerfile)?,
        want_iidfile: args.iidfile.is_some(),
        want_metadata: args.metadata_file.is_some(),
        secrets: secrets(&args.secrets)?,
        registry_auth: registry_auth()?,
        ..Default::default()
    };
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        start.env.insert("SOURCE_DATE_EPOCH".into(), epoch);
    }
    let ignore = frontend::ignore::ContextDir::open(&context, Some(&dockerfile))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut contexts = vec![
        local_context("main", &context, Box::new(ignore)),
        local_context(
            "dockerfile",
            &dockerfile,
            Box::new(crate::manifest::SingleFile {
                dir: dockerfile
                    .parent()
                    .expect("a file has a parent")
                    .to_path_buf(),
                name: file_name(&dockerfile)?,
            }),
        ),
    ];
    for spec in &args.build_contexts {
        let (name, value) = spec
            .split_once('=')
            .with_context(|| format!("--build-context {spec:?}: expected NAME=VALUE"))?;
        let dir = Path::new(value);
        if value.contains("://") || !dir.is_dir() {
            start.flags.push(flag("build-context", spec));
            continue;
        }
        let dir = std::fs::canonicalize(dir)?;
        let source =
            frontend::ignore::ContextDir::open(&dir, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        contexts.push(local_context(
            &format!("named:{name}"),
            &dir,
            Box::new(source),
        ));
    }
    start.contexts = contexts
        .iter()
        .map(|c| Context {
            name: c.name.clone(),
            key: c.key.clone(),
        })
        .collect();
    let (outputs, dests) = outputs(args)?;
    start.outputs = outputs;
    Ok(RemoteBuild {
        start,
        contexts,
        dests,
        iidfile: args.iidfile.clone(),
        metadata_file: args.metadata_file.clone(),
        json_progress: matches!(args.progress, engine::render::ProgressMode::Rawjson),
        quiet: args.quiet || matches!(args.progress, engine::render::ProgressMode::Quiet),
        ssh: crate::ssh::client_agents(&args.ssh)?,
    })
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{}: not a file name", path.display()))
}

fn local_context(
    name: &str,
    path: &Path,
    source: Box<dyn solver::context::LocalSource>,
) -> LocalContext {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    LocalContext {
        name: name.to_string(),
        key: format!("{}:{}", host.trim(), path.display()),
        source,
    }
}

fn flag(name: &str, value: &str) -> Flag {
    Flag {
        name: name.into(),
        value: value.into(),
        has_value: true,
    }
}

/// The flags that pass through to the server unchanged (build args resolved here).
fn flags(args: &BuildArgs) -> Result<Vec<Flag>> {
    let mut out = Vec::new();
    let mut many = |name: &str, values: &[String]| {
        out.extend(values.iter().map(|v| flag(name, v)));
    };
    many("tag", &args.tags);
    many("label", &args.labels);
    many("no-cache-filter", &args.no_cache_filter);
    many("allow", &args.allow);
    many("add-host", &args.add_hosts);
    many("ulimit", &args.ulimits);
    many("annotation", &args.annotations);
    many("attest", &args.attest);
    many("cache-to", &args.cache_to);
    many("cache-from", &args.cache_from);
    for (k, v) in engine::command::parse_build_args(&args.build_args)? {
        out.push(flag("build-arg", &format!("{k}={v}")));
    }
    let single = [
        ("target", &args.target),
        ("platform", &args.platform),
        ("network", &args.network),
        ("shm-size", &args.shm_size),
        ("call", &args.call),
        ("provenance", &args.provenance),
        ("sbom", &args.sbom),
        ("print", &args.print),
    ];
    for (name, value) in single {
        if let Some(v) = value {
            out.push(flag(name, v));
        }
    }
    let switches = [
        ("no-cache", args.no_cache),
        ("push", args.push),
        ("pull", args.pull),
        ("check", args.check),
        ("quiet", args.quiet),
    ];
    for (name, on) in switches {
        if on {
            out.push(Flag {
                name: name.into(),
                value: String::new(),
                has_value: false,
            });
        }
    }
    // The server's output is a pipe: `auto` there would be plain; tty needs this terminal.
    let progress = match args.progress {
        engine::render::ProgressMode::Rawjson => "rawjson",
        engine::render::ProgressMode::Quiet => "quiet",
        _ => "plain",
    };
    out.push(flag("progress", progress));
    Ok(out)
}

/// `-o` values without their dest (the server picks one), and where each result goes here.
fn outputs(args: &BuildArgs) -> Result<(Vec<Output>, Vec<Option<Dest>>)> {
    let mut outputs = Vec::new();
    let mut dests = Vec::new();
    for raw in &args.outputs {
        let spec = if raw == "-" {
            "type=tar,dest=-".to_string()
        } else if !raw.contains('=') {
            format!("type=local,dest={raw}")
        } else {
            raw.clone()
        };
        let mut ty = String::new();
        let mut dest = None;
        let mut kept = Vec::new();
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => {
                    ty = v.to_string();
                    kept.push(field);
                }
                Some(("dest", v)) if v != "-" => dest = Some(PathBuf::from(v)),
                _ => kept.push(field),
            }
        }
        dests.push(dest.map(|d| {
            if ty == "local" {
                Dest::Dir(d)
            } else {
                Dest::File(d)
            }
        }));
        outputs.push(Output {
            spec: kept.join(","),
        });
    }
    Ok((outputs, dests))
}

/// `--secret` values read here; they travel in the session only.
fn secrets(specs: &[String]) -> Result<Vec<Secret>> {
    let mut out = Vec::new();
    for spec in specs {
        let (id, source) = engine::secrets::parse_secret(spec)?;
        let value = source
            .read()
            .with_context(|| format!("--secret {spec:?}"))?
            .with_context(|| format!("--secret {spec:?}: not set"))?;
        out.push(Secret { id, value });
    }
    Ok(out)
}

/// The `auths` of this client's docker config, forwarded for the build's pulls and pushes.
fn registry_auth() -> Result<Vec<u8>> {
    crate::credentials::forwarded(&exporter::auth::docker_config_dir())
}
