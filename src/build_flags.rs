//! `builder build` flags that shape RUN steps, `--call`, and `--load`; the values' syntax is
//! parsed in `frontend::run_flags` and `exporter::annotations`.

use crate::build::BuildArgs;
use anyhow::{anyhow, bail, Context as _, Result};
use exporter::image::Descriptor;
use frontend::run_flags::{self, RunDefaults};
use std::path::Path;

/// What the flags of this module ask of one build.
pub struct FlagSettings {
    pub call: Call,
    pub run: RunDefaults,
    pub annotations: exporter::Annotations,
}

/// Parses and checks the flags before anything runs; `-q` and `--call=check` adjust `args`.
pub fn prepare(args: &mut BuildArgs, platforms: usize) -> Result<FlagSettings> {
    let call = parse_call(args.call.as_deref(), args.check)?;
    args.check = call == Call::Check;
    if args.quiet {
        args.progress = crate::progress::ProgressMode::Quiet;
    }
    check_load(args.load, platforms)?;
    let annotations = exporter::Annotations::parse(&args.annotations).map_err(|e| anyhow!(e))?;
    check_index_annotations(&annotations, platforms > 1)?;
    Ok(FlagSettings {
        call,
        run: run_defaults(args)?,
        annotations,
    })
}

/// `index:` and `index-descriptor:` annotations need an image index, which only a
/// multi-platform build makes.
fn check_index_annotations(annotations: &exporter::Annotations, multi: bool) -> Result<()> {
    use exporter::AnnotationKind::{Index, IndexDescriptor};
    if !multi && (annotations.has(Index) || annotations.has(IndexDescriptor)) {
        bail!(
            "--annotation index:/index-descriptor: a single-platform build makes no image index; \
             use manifest: or manifest-descriptor:, or build several --platform values"
        );
    }
    Ok(())
}

/// `--network`, `--allow`, `--add-host`, `--ulimit`, `--shm-size` as RUN's defaults.
fn run_defaults(args: &BuildArgs) -> Result<RunDefaults> {
    let mut run = RunDefaults::default();
    for value in &args.allow {
        run.entitlements.allow(value).map_err(|e| anyhow!(e))?;
    }
    if let Some(network) = &args.network {
        run.network =
            run_flags::parse_network(network, run.entitlements).map_err(|e| anyhow!(e))?;
    }
    let gateway = executor::host_gateway_ip();
    for value in &args.add_hosts {
        let entry = run_flags::parse_add_host(value, gateway).map_err(|e| anyhow!(e))?;
        run.extra_hosts.push(entry);
    }
    for value in &args.ulimits {
        run.ulimits
            .push(run_flags::parse_ulimit(value).map_err(|e| anyhow!(e))?);
    }
    if let Some(size) = &args.shm_size {
        run.shm_size = Some(run_flags::parse_size("--shm-size", size).map_err(|e| anyhow!(e))?);
    }
    Ok(run)
}

/// What `--call` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Build,
    Check,
    Outline { json: bool },
    Targets { json: bool },
}

/// `--call=build|check|outline|targets[,format=json]` (and the older `--check`).
fn parse_call(value: Option<&str>, check: bool) -> Result<Call> {
    let Some(value) = value else {
        return Ok(if check { Call::Check } else { Call::Build });
    };
    let mut parts = value.split(',');
    let name = parts.next().unwrap_or_default();
    let mut json = false;
    for option in parts {
        match option {
            "format=json" => json = true,
            "format=text" => json = false,
            other => bail!("--call {value:?}: unknown option {other:?}; use format=json|text"),
        }
    }
    Ok(match name {
        "build" if !check => Call::Build,
        "check" | "build" => Call::Check,
        "outline" => Call::Outline { json },
        "targets" => Call::Targets { json },
        other => bail!("--call {other:?}: unknown; use build, check, outline or targets"),
    })
}

/// Prints the answer to `--call=outline|targets`; false when the call is a build or check.
pub fn print_call(
    call: Call,
    ast: &frontend::Ast,
    source: &[u8],
    target: &Option<String>,
    build_args: &std::collections::BTreeMap<String, String>,
) -> Result<bool> {
    use frontend::call;
    let text = match call {
        Call::Targets { json } => {
            let targets = call::targets(ast, source);
            match json {
                true => serde_json::to_string_pretty(&serde_json::json!({ "targets": targets }))?,
                false => call::print_targets(&targets),
            }
        }
        Call::Outline { json } => {
            let outline = call::outline(ast, source, target.as_deref(), build_args)
                .map_err(|e| anyhow!(e))?;
            match json {
                true => serde_json::to_string_pretty(&outline)?,
                false => call::print_outline(&outline),
            }
        }
        Call::Build | Call::Check => return Ok(false),
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(true)
}

/// `--load` cannot put an image index into Docker 20.10's image store.
fn check_load(load: bool, platforms: usize) -> Result<()> {
    if load && platforms > 1 {
        bail!(
            "--load: a multi-platform image cannot be loaded into the Docker engine (its image \
             store holds one platform per image); use --push, -o type=oci,dest=FILE.tar, or \
             one --platform"
        );
    }
    Ok(())
}

/// `--load`: the image as a docker archive into the local Docker engine.
pub fn load_into_docker(
    root: &Path,
    content: &exporter::ContentStore,
    image: &Descriptor,
    tags: &[String],
) -> Result<String> {
    let scratch = root.join("tmp");
    std::fs::create_dir_all(&scratch)?;
    let archive = tempfile::NamedTempFile::new_in(&scratch)?;
    let mut out = std::io::BufWriter::new(archive.as_file());
    exporter::export_docker_archive(content, image, tags, &mut out)
        .context("--load: writing the docker archive")?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    let host = exporter::docker_engine::docker_host();
    exporter::docker_engine::load(&host, archive.path()).map_err(|e| anyhow!("--load: {e}"))
}

/// The image id as buildx reports it (`-q`, `--iidfile`): the config digest of a
/// single-platform image, else the digest of the index.
pub fn image_id(content: &exporter::ContentStore, image: &Descriptor) -> String {
    content
        .read_blob(&image.digest)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<exporter::Manifest>(&bytes).ok())
        .map(|manifest| manifest.config.digest)
        .unwrap_or_else(|| image.digest.clone())
}
