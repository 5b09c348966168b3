//! Build-wide settings given as flags: `--call`, RUN's defaults (`--network`, `--allow`,
//! `--add-host`, `--ulimit`, `--shm-size`) and `--annotation`; the values' syntax is parsed in
//! `frontend::run_flags` and `exporter::annotations`.

use anyhow::{anyhow, bail, Result};
use exporter::image::Descriptor;
use frontend::run_flags::{self, RunDefaults};

/// What `--call` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Call {
    #[default]
    Build,
    Check,
    Outline {
        json: bool,
    },
    Targets {
        json: bool,
    },
}

/// `--call=build|check|outline|targets[,format=json]` (and the older `--check`).
pub fn parse_call(value: Option<&str>, check: bool) -> Result<Call> {
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

/// RUN's build-wide settings as flags give them.
#[derive(Default)]
pub struct RunFlags<'a> {
    pub network: Option<&'a str>,
    pub allow: &'a [String],
    pub add_hosts: &'a [String],
    pub ulimits: &'a [String],
    pub shm_size: Option<&'a str>,
}

/// `--network`, `--allow`, `--add-host`, `--ulimit`, `--shm-size` as RUN's defaults.
pub fn run_defaults(flags: &RunFlags) -> Result<RunDefaults> {
    let mut run = RunDefaults::default();
    for value in flags.allow {
        run.entitlements.allow(value).map_err(|e| anyhow!(e))?;
    }
    if let Some(network) = flags.network {
        run.network =
            run_flags::parse_network(network, run.entitlements).map_err(|e| anyhow!(e))?;
    }
    let gateway = executor::host_gateway_ip();
    for value in flags.add_hosts {
        let entry = run_flags::parse_add_host(value, gateway).map_err(|e| anyhow!(e))?;
        run.extra_hosts.push(entry);
    }
    for value in flags.ulimits {
        run.ulimits
            .push(run_flags::parse_ulimit(value).map_err(|e| anyhow!(e))?);
    }
    if let Some(size) = flags.shm_size {
        run.shm_size = Some(run_flags::parse_size("--shm-size", size).map_err(|e| anyhow!(e))?);
    }
    Ok(run)
}

/// Parses `--annotation`s; `index:` and `index-descriptor:` need an image index, which only
/// a multi-platform build makes.
pub fn parse_annotations(values: &[String], platforms: usize) -> Result<exporter::Annotations> {
    use exporter::AnnotationKind::{Index, IndexDescriptor};
    let annotations = exporter::Annotations::parse(values).map_err(|e| anyhow!(e))?;
    if platforms <= 1 && (annotations.has(Index) || annotations.has(IndexDescriptor)) {
        bail!(
            "--annotation index:/index-descriptor: a single-platform build makes no image index; \
             use manifest: or manifest-descriptor:, or build several --platform values"
        );
    }
    Ok(annotations)
}

/// The answer to `--call=outline|targets`; None when the call is a build or check.
pub(crate) fn answer_call(
    call: Call,
    ast: &frontend::Ast,
    source: &[u8],
    target: Option<&str>,
    build_args: &std::collections::BTreeMap<String, String>,
) -> Result<Option<String>> {
    use frontend::call;
    let mut text = match call {
        Call::Targets { json } => {
            let targets = call::targets(ast, source);
            match json {
                true => serde_json::to_string_pretty(&serde_json::json!({ "targets": targets }))?,
                false => call::print_targets(&targets),
            }
        }
        Call::Outline { json } => {
            let outline = call::outline(ast, source, target, build_args).map_err(|e| anyhow!(e))?;
            match json {
                true => serde_json::to_string_pretty(&outline)?,
                false => call::print_outline(&outline),
            }
        }
        Call::Build | Call::Check => return Ok(None),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(Some(text))
}

/// The image id as buildx reports it (`-q`, `--iidfile`): the config digest of a
/// single-platform image, else the digest of the index.
pub(crate) fn image_id(content: &exporter::ContentStore, image: &Descriptor) -> String {
    content
        .read_blob(&image.digest)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<exporter::Manifest>(&bytes).ok())
        .map(|manifest| manifest.config.digest)
        .unwrap_or_else(|| image.digest.clone())
}
