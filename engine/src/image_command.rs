//! The image commands (`pull`, `save`, `load`, `inspect`, `history`, `images`, `import`,
//! `push`, `tag`, `rmi`) as library calls: typed commands in, docker's output out.

use anyhow::{anyhow, bail, Context as _, Result};
use exporter::image::{Descriptor, Platform};
use exporter::{ImageStore, Reference};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum ImageCommand {
    /// Pull an image from its registry into the local store.
    Pull {
        /// Image reference, e.g. registry:5000/app:1.
        name: String,
        /// Platform to pull from a multi-platform image (default: this machine's).
        platform: Option<String>,
    },
    /// Write images to a tar archive (docker load format, or an OCI layout with --format oci).
    Save {
        /// Images to save.
        names: Vec<String>,
        /// File to write (`-` for stdout).
        output: PathBuf,
        /// Archive format.
        format: SaveFormat,
    },
    /// Load images from a docker or OCI archive (as written by save, docker save or -o type=oci).
    Load {
        /// Archive to read (`-` for stdin).
        input: PathBuf,
    },
    /// Show the history of an image's layers.
    History {
        name: String,
        /// Show full commands and digests.
        no_trunc: bool,
    },
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub enum SaveFormat {
    Docker,
    Oci,
}

pub fn run(store: &ImageStore, command: ImageCommand) -> Result<i32> {
    match command {
        ImageCommand::Pull { name, platform } => pull(store, &name, platform.as_deref()),
        ImageCommand::Save {
            names,
            output,
            format,
        } => save(store, &names, &output, format),
        ImageCommand::Load { input } => load(store, &input),
        ImageCommand::History { name, no_trunc } => history(store, &name, no_trunc),
    }
}

/// The image store under `root`.
pub fn open_store(root: &Path) -> Result<ImageStore> {
    let content = snapshotter::ContentStore::open(root)?;
    Ok(ImageStore::open(root, content)?)
}

fn resolve(store: &ImageStore, name: &str) -> Result<Descriptor> {
    store
        .resolve(name)?
        .with_context(|| format!("no such image: {name}"))
}

pub fn pull(store: &ImageStore, name: &str, platform: Option<&str>) -> Result<i32> {
    let reference = Reference::parse(name)?;
    let platform: Platform = match platform {
        Some(p) => p.parse().map_err(|e| anyhow!("--platform {p:?}: {e:?}"))?,
        None => Platform::host(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let descriptor = runtime
        .block_on(exporter::RegistryClient::new().pull(&reference, &platform, store.content()))
        .with_context(|| format!("pulling {}", reference.full_name()))?;
    store.tag(name, &descriptor)?;
    println!("{}: {}", reference.full_name(), descriptor.digest);
    Ok(0)
}

fn save(store: &ImageStore, names: &[String], output: &Path, format: SaveFormat) -> Result<i32> {
    let images = names
        .iter()
        .map(|name| Ok((resolve(store, name)?, name.clone())))
        .collect::<Result<Vec<_>>>()?;
    let out: Box<dyn std::io::Write> = if output == Path::new("-") {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(output)
                .with_context(|| format!("creating {}", output.display()))?,
        ))
    };
    match format {
        SaveFormat::Docker => {
            // One entry per image, with every name that points at it.
            let mut grouped: Vec<(Descriptor, Vec<String>)> = Vec::new();
            for (descriptor, name) in images {
                match grouped
                    .iter_mut()
                    .find(|(d, _)| d.digest == descriptor.digest)
                {
                    Some((_, names)) => names.push(name),
                    None => grouped.push((descriptor, vec![name])),
                }
            }
            exporter::export_docker_archive_multi(store.content(), &grouped, out)?;
        }
        SaveFormat::Oci => {
            let images: Vec<_> = images
                .into_iter()
                .map(|(descriptor, name)| (descriptor, Some(name)))
                .collect();
            exporter::export_oci_archive_multi(store.content(), &images, out)?;
        }
    }
    Ok(0)
}

fn load(store: &ImageStore, input: &Path) -> Result<i32> {
    let images = if input == Path::new("-") {
        exporter::load_archive(store.content(), std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(input)
            .with_context(|| format!("-i {}: opening", input.display()))?;
        exporter::load_archive(store.content(), file)
    }
    .with_context(|| format!("loading {}", input.display()))?;
    if images.is_empty() {
        bail!("{}: the archive holds no images", input.display());
    }
    for image in images {
        if image.names.is_empty() {
            println!("Loaded image ID: {}", image.descriptor.digest);
        }
        for name in &image.names {
            store.tag(name, &image.descriptor)?;
            let familiar = Reference::parse(name)
                .map(|r| r.familiar_name())
                .unwrap_or_else(|_| name.clone());
            println!("Loaded image: {familiar}");
        }
    }
    Ok(0)
}

/// `inspect` of a name that is not a container: the image's manifest and config as JSON.
pub fn inspect(store: &ImageStore, name: &str) -> Result<i32> {
    let descriptor = resolve(store, name)?;
    let (manifest_descriptor, manifest, config) =
        store.load_image(&descriptor, &Platform::host())?;
    let mut report = serde_json::json!({
        "Name": Reference::parse(name)?.full_name(),
        "Descriptor": descriptor,
        "ManifestDescriptor": manifest_descriptor,
        "Manifest": manifest,
        "Config": config,
    });
    if exporter::image::is_index_media_type(&descriptor.media_type) {
        let index: exporter::Index =
            serde_json::from_slice(&store.content().read_blob(&descriptor.digest)?)?;
        let attestations: Vec<_> =
            exporter::attestation::read_attestations(store.content(), &index)?
                .into_iter()
                .map(|(subject, kind, statement)| {
                    serde_json::json!({ "Subject": subject, "PredicateType": kind, "Statement": statement })
                })
                .collect();
        if !attestations.is_empty() {
            report["Attestations"] = serde_json::Value::Array(attestations);
        }
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(0)
}

fn history(store: &ImageStore, name: &str, no_trunc: bool) -> Result<i32> {
    let descriptor = resolve(store, name)?;
    let (_, manifest, config) = store.load_image(&descriptor, &Platform::host())?;
    // Entries that made a layer take the manifest's layers in order.
    let mut layers = manifest.layers.iter();
    let mut rows = Vec::new();
    for entry in &config.history {
        let layer = if entry.empty_layer {
            None
        } else {
            layers.next()
        };
        rows.push((entry, layer));
    }
    println!(
        "{:<14} {:<22} {:<50} {:>10}  COMMENT",
        "LAYER", "CREATED", "CREATED BY", "SIZE"
    );
    for (entry, layer) in rows.iter().rev() {
        let id = match layer {
            Some(l) if no_trunc => l.digest.clone(),
            Some(l) => l
                .digest
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect(),
            None => "<missing>".to_string(),
        };
        let mut created_by = entry.created_by.clone().unwrap_or_default();
        if !no_trunc && created_by.chars().count() > 47 {
            created_by = created_by.chars().take(47).collect::<String>() + "...";
        }
        let size = layer.map_or(0, |l| l.size);
        println!(
            "{id:<14} {:<22} {created_by:<50} {:>10}  {}",
            entry.created.as_deref().unwrap_or(""),
            solver::gc::human_size(size),
            entry.comment.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

/// `builder images`: every tag in the store with its short id and layer size.
pub fn list(store: &ImageStore) -> Result<i32> {
    println!("{:<50} {:<20} {:>10}", "REPOSITORY:TAG", "IMAGE ID", "SIZE");
    for (name, desc) in store.list()? {
        let short = desc
            .digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>();
        let familiar = Reference::parse(&name)
            .map(|r| r.familiar_name())
            .unwrap_or(name);
        println!(
            "{familiar:<50} {short:<20} {:>10}",
            image_size(store, &desc)
        );
    }
    Ok(0)
}

fn image_size(store: &ImageStore, desc: &Descriptor) -> String {
    let size: u64 = store
        .load_image(desc, &Platform::host())
        .map(|(_, m, _)| m.layers.iter().map(|l| l.size).sum())
        .unwrap_or(0);
    if size > 1 << 20 {
        format!("{:.1}MB", size as f64 / 1e6)
    } else {
        format!("{:.1}kB", size as f64 / 1e3)
    }
}

/// `builder import TARBALL NAME`: a root filesystem tar as a one-layer image.
pub fn import(
    store: &ImageStore,
    tarball: &Path,
    name: &str,
    platform: Option<String>,
) -> Result<i32> {
    let platform: Platform = match platform {
        Some(p) => p.parse().map_err(|e| anyhow!("--platform {p:?}: {e:?}"))?,
        None => Platform::host(),
    };
    let file =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    // SOURCE_DATE_EPOCH makes imports reproducible too.
    let created = crate::output::source_date_epoch(&Default::default())?
        .map(|epoch| exporter::format_rfc3339(epoch as i64));
    let desc = exporter::import_rootfs_tar(
        store.content(),
        std::io::BufReader::new(file),
        &platform,
        created.as_deref(),
    )?;
    store.tag(name, &desc)?;
    println!("{}", desc.digest);
    Ok(0)
}

/// `builder push NAME`: a stored image to its registry.
pub async fn push(store: &ImageStore, name: &str) -> Result<i32> {
    let desc = store
        .resolve(name)?
        .with_context(|| format!("no such image: {name}"))?;
    let reference = Reference::parse(name)?;
    let report = exporter::RegistryClient::new()
        .push_reporting(&reference, &desc, store.content())
        .await?;
    println!(
        "pushed {} {} ({report})",
        reference.full_name(),
        desc.digest
    );
    Ok(0)
}

/// `builder tag SOURCE TARGET`.
pub fn tag(store: &ImageStore, source: &str, target: &str) -> Result<i32> {
    store.tag(target, &resolve(store, source)?)?;
    Ok(0)
}

/// `builder rmi NAME...`: 1 when a name was not there.
pub fn rmi(store: &ImageStore, names: &[String]) -> Result<i32> {
    let mut code = 0;
    for n in names {
        if store.untag(n)? {
            println!("Untagged: {n}");
        } else {
            eprintln!("error: no such image: {n}");
            code = 1;
        }
    }
    Ok(code)
}
