//! Base images (`FROM`): pulled into the content store and unpacked as a snapshot chain
//! named by chain ids. The top's chain id (from the config's diff ids) is also the
//! vertex's cache key, as in BuildKit: it names the filesystem, so it is the same on every
//! machine and for every manifest (compression, tag, registry) carrying those layers.

use crate::ops::{Caching, Input, Produced, SolveOp, Step};
use crate::progress::{now, Event};
use crate::solve::Ref;
use crate::worker::{unique, Worker, LABEL_LAYER_BUILT, LABEL_LAYER_DIFF_ID};
use anyhow::{anyhow, bail, Context as _, Result};
use oci::image::{Descriptor, ImageConfig, Manifest, Platform};
use oci::reference::Reference;
use sha2::{Digest as _, Sha256};

pub(crate) struct SourceImage<'a> {
    reference: &'a str,
    platform: &'a str,
    /// The image's layers with their diff ids, base first, once the key is known.
    layers: Vec<(Descriptor, String)>,
    /// When resolving began: the pull is the step.
    started: Option<f64>,
}

impl<'a> SourceImage<'a> {
    pub fn new(reference: &'a str, platform: &'a str) -> Self {
        SourceImage {
            reference,
            platform,
            layers: Vec::new(),
            started: None,
        }
    }
}

impl SolveOp for SourceImage<'_> {
    fn caching(&self) -> Caching {
        Caching::Own
    }

    fn cache_key(&mut self, w: &Worker, _: &Step, _: &[Input]) -> Result<String> {
        self.started = Some(now());
        self.layers = image_layers(w, self.reference, self.platform)?;
        Ok(crate::cache::chain_id(self.layers.iter().map(|(_, d)| d)).unwrap_or("scratch".into()))
    }

    /// Unpacks the layers (unless a cache import may make that unnecessary); its progress is
    /// the pull, or a cache hit.
    fn run(&mut self, w: &Worker, step: &Step, _: &[Input]) -> Result<Produced> {
        let produced = match w.defer_unpack(&self.layers) {
            Some(top) => Produced::built(top),
            None => {
                let (top, all_cached) = unpack_layers(w, &self.layers, true)?;
                Produced {
                    result: top.map_or(Ref::Scratch, Ref::Snapshot),
                    cached: all_cached,
                }
            }
        };
        let (i, name) = (step.vertex, step.name.to_string());
        let started = self.started.take().unwrap_or_else(now);
        if produced.cached {
            w.progress.send(Event::Cached {
                vertex: i,
                name,
                time: started,
            });
        } else {
            w.progress.send(Event::Started {
                vertex: i,
                name: name.clone(),
                time: started,
            });
            w.progress.send(Event::Completed {
                vertex: i,
                name,
                time: now(),
                error: None,
            });
        }
        Ok(produced)
    }
}

/// An image's layers and their diff ids, base first; the image is pulled if the store
/// lacks it.
fn image_layers(w: &Worker, reference: &str, platform: &str) -> Result<Vec<(Descriptor, String)>> {
    let r = Reference::parse(reference)
        .map_err(|e| anyhow!("invalid image reference {reference:?}: {e}"))?;
    let manifest_digest = match &r.digest {
        Some(d) => d.clone(),
        None => {
            let (pinned, _) = w.runtime().block_on(w.resolve_image(reference, platform))?;
            pinned
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .ok_or_else(|| anyhow!("unpinned image {pinned}"))?
        }
    };
    if !w.content.has(&manifest_digest) {
        let platform_parsed: Platform = platform
            .parse()
            .map_err(|e| anyhow!("invalid platform {platform:?}: {e:?}"))?;
        w.runtime()
            .block_on(distribution::RegistryClient::new().pull(&r, &platform_parsed, &w.content))
            .map_err(|e| anyhow!("pulling {reference}: {e}"))?;
    }
    let manifest: Manifest = serde_json::from_slice(&w.content.read_blob(&manifest_digest)?)
        .with_context(|| format!("reading manifest {manifest_digest}"))?;
    let config: ImageConfig =
        serde_json::from_slice(&w.content.read_blob(&manifest.config.digest)?)
            .with_context(|| format!("reading image config {}", manifest.config.digest))?;
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        bail!(
            "image {reference} has {} layers but {} diff ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    Ok(manifest
        .layers
        .into_iter()
        .zip(config.rootfs.diff_ids)
        .collect())
}

/// Makes sure a layer stack (base first, blobs in the content store) is unpacked as a
/// snapshot chain named by chain ids; returns the top and whether all of it existed.
pub(crate) fn unpack_chain(
    w: &Worker,
    layers: &[(Descriptor, String)],
) -> Result<(Option<String>, bool)> {
    unpack_layers(w, layers, false)
}

/// [`unpack_chain`]; with `reuse_built`, a layer this store built (a snapshot on the
/// same parent with the same diff id) stands in for an unpacked copy of it, so running or
/// building on a just-built image unpacks nothing. Returns the top snapshot's name.
fn unpack_layers(
    w: &Worker,
    layers: &[(Descriptor, String)],
    reuse_built: bool,
) -> Result<(Option<String>, bool)> {
    let mut parent: Option<String> = None;
    let mut parent_chain: Option<String> = None;
    let mut all_cached = true;
    let mut built: Option<Vec<snapshotter::Info>> = None;
    for (layer, diff_id) in layers {
        let chain = match &parent_chain {
            None => diff_id.clone(),
            Some(p) => sha256_hex_plain(&format!("{p} {diff_id}")),
        };
        parent_chain = Some(chain.clone());
        if w.snapshots.exists(&chain) {
            parent = Some(chain);
            continue;
        }
        if reuse_built {
            let built = match &mut built {
                Some(b) => b,
                None => built.insert(
                    w.snapshots
                        .walk()?
                        .into_iter()
                        .filter(|i| {
                            i.kind == snapshotter::Kind::Committed
                                && i.labels.contains_key(LABEL_LAYER_BUILT)
                        })
                        .collect(),
                ),
            };
            let same = built.iter().find(|i| {
                i.parent == parent
                    && i.labels.get(LABEL_LAYER_DIFF_ID).map(String::as_str) == Some(diff_id)
            });
            if let Some(same) = same {
                parent = Some(same.key.clone());
                continue;
            }
        }
        {
            all_cached = false;
            let active = unique("unpack");
            w.snapshots.prepare(&active, parent.as_deref())?;
            let res = (|| -> Result<()> {
                let dir = w.snapshots.upper_dir(&active)?;
                let reader = exporter::open_layer(&w.content, layer)?;
                snapshotter::layer::apply_layer_tar(reader, &dir)
                    .with_context(|| format!("unpacking layer {}", layer.digest))?;
                Ok(())
            })();
            if let Err(e) = res {
                let _ = w.snapshots.remove(&active);
                return Err(e);
            }
            match w.snapshots.commit(&chain, &active) {
                Ok(()) => {}
                Err(snapshotter::Error::AlreadyExists(_)) => {
                    let _ = w.snapshots.remove(&active);
                }
                Err(e) => return Err(e.into()),
            }
            w.label_layer(&chain, layer, diff_id)?;
        }
        parent = Some(chain);
    }
    Ok((parent, all_cached))
}

fn sha256_hex_plain(s: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(s.as_bytes())))
}
