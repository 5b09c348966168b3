//! Mountless mode, for processes that may not call mount(2) (chroot isolation in an
//! unprivileged container): [`crate::mount_all`] copies what the mounts would show into the
//! target instead, and [`crate::unmount`] writes a writable view's changes into its upper dir
//! (see [`crate::walkdiff`]) and empties the target.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::mount::Mount;
use crate::walkdiff::{materialise, write_changes, Tree};

static MOUNTLESS: AtomicBool = AtomicBool::new(false);

/// Views copied in, by target directory.
static VIEWS: Mutex<Option<HashMap<PathBuf, View>>> = Mutex::new(None);

struct View {
    tree: Tree,
    /// The writable layer and the layers below it; None for read-only views.
    upper: Option<(PathBuf, Vec<PathBuf>)>,
}

/// Switches this process to copied views instead of mounts (set once, before any mount).
pub fn set_mountless(on: bool) {
    MOUNTLESS.store(on, Ordering::SeqCst);
}

/// Whether views are copies instead of mounts.
pub fn mountless() -> bool {
    MOUNTLESS.load(Ordering::SeqCst)
}

/// Marker file in a snapshot dir whose snapshots were made mountless (whiteouts as files,
/// which an overlay mount would show as plain files).
const STORE_MARKER: &str = "mountless";

/// Whether the store at `store_root` holds snapshots made with copies.
pub(crate) fn store_is_mountless(store_root: &Path) -> bool {
    store_root.join("snapshots").join(STORE_MARKER).exists()
}

/// Marks the snapshot dir `dir` as mountless when this process is, and refuses to mount
/// snapshots from a dir so marked when it is not.
pub(crate) fn check_store(dir: &Path) -> Result<()> {
    let marker = dir.join(STORE_MARKER);
    if mountless() {
        if !marker.exists() {
            crate::util::atomic_write(&marker, b"", 0o644)?;
        }
        return Ok(());
    }
    if marker.exists() {
        return Err(Error::Invalid(format!(
            "the snapshots in {} were made with copies instead of mounts (whiteouts as files, \
             which overlay mounts would show); use --isolation=chroot with this storage root (or, \
             in rootless mode, BUILDER_SNAPSHOTTER=copy), or another --root",
            dir.display()
        )));
    }
    Ok(())
}

/// Copies what `mounts` would show at `target` (an empty directory) into it.
pub(crate) fn copy_in(mounts: &[Mount], target: &Path) -> Result<()> {
    let (layers, upper) = layers_of(mounts)?;
    let tree = materialise(layers.clone(), target)?;
    let upper = upper.map(|u| (u, layers[1..].to_vec()));
    VIEWS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(target.to_path_buf(), View { tree, upper });
    Ok(())
}

/// Writes a writable view's changes to its upper dir, then empties `target`; false (and
/// nothing done) when `target` is not a copied view (it may be a real mount).
pub(crate) fn release(target: &Path) -> Result<bool> {
    let view = VIEWS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|views| views.remove(target));
    let Some(view) = view else {
        return Ok(false);
    };
    let written = match &view.upper {
        Some((upper, lowers)) => write_changes(&view.tree, target, upper, lowers.clone()),
        None => Ok(()),
    };
    let emptied = empty_dir(target);
    written.and(emptied).map(|()| true)
}

/// The layers a mount list stacks (nearest first) and its writable upper dir, if any.
fn layers_of(mounts: &[Mount]) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let [m] = mounts else {
        return Err(Error::Invalid(format!(
            "mountless views take exactly one mount, not {}",
            mounts.len()
        )));
    };
    match m.fstype.as_str() {
        "bind" | "rbind" => {
            let source = PathBuf::from(&m.source);
            let writable = !m.options.iter().any(|o| o == "ro");
            Ok((vec![source.clone()], writable.then_some(source)))
        }
        "overlay" => {
            let option = |key: &str| {
                m.options
                    .iter()
                    .find_map(|o| o.strip_prefix(key))
                    .map(str::to_string)
            };
            let mut layers = Vec::new();
            let upper = option("upperdir=").map(PathBuf::from);
            layers.extend(upper.clone());
            if let Some(lowers) = option("lowerdir=") {
                layers.extend(lowers.split(':').map(PathBuf::from));
            }
            Ok((layers, upper))
        }
        other => Err(Error::Invalid(format!(
            "mountless views cannot show a {other:?} mount"
        ))),
    }
}

fn empty_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .ctx(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
