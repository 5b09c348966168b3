//! File operations (COPY, mkdir, mkfile) on a mounted root filesystem, with
//! Docker's COPY rules. Destination paths are resolved inside the target root,
//! so a symlink in the image can never send a write outside it.

use crate::archive;
use crate::chmod::ModeSpec;
use crate::context::ContextIndex;
use crate::graph::Chown;
use crate::patterns::PatternMatcher;
use anyhow::{anyhow, bail, Context as _, Result};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where COPY reads from: a client directory (filtered by its index) or a mounted snapshot.
pub struct SourceTree<'a> {
    pub root: &'a Path,
    /// For client directories: the included entries. Ownership is reset to 0:0, as BuildKit does.
    pub index: Option<&'a ContextIndex>,
}

/// Numeric owner for new files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Cleans a user path to a relative path that cannot leave its root ("../x" → "x").
pub fn clean_rel(path: &str) -> String {
    String::from_utf8(clean_rel_bytes(path.as_bytes())).expect("cleaning keeps UTF-8 intact")
}

/// [`clean_rel`] for a path of any bytes (file names need not be UTF-8).
pub fn clean_rel_bytes(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

/// A slash-separated relative path of any bytes as a `Path`.
pub fn rel_path(rel: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(rel))
}

/// The text patterns (`.dockerignore`, `--exclude`, wildcards) see for a path of any bytes:
/// bytes that are not UTF-8 read as U+FFFD, as Go reads them.
pub fn match_text(rel: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(rel)
}

/// `base/name`, or `name` when `base` is empty.
pub fn join_rel(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + 1 + name.len());
    out.extend_from_slice(base);
    if !base.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Whether a COPY source is a wildcard: an unescaped `*`, `?` or `[`, as BuildKit's
/// `containsWildcards` decides. Without one the source is a literal path, backslashes
/// included (`x\[1\].txt` names a file called that, not `x[1].txt`).
fn has_glob(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Resolves `path` inside `root`, following symlinks as if `root` were `/`.
/// The last component is followed only if `follow_last`.
pub fn resolve_in_root(root: &Path, path: impl AsRef<[u8]>, follow_last: bool) -> Result<PathBuf> {
    let path = path.as_ref();
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<Vec<u8>> = clean_rel_bytes(path)
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let candidate = root
            .join(rel_path(&resolved.join(&b'/')))
            .join(rel_path(&part));
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() && (!is_last || follow_last) => {
                hops += 1;
                if hops > 255 {
                    bail!(
                        "too many levels of symbolic links resolving {}",
                        match_text(path)
                    );
                }
                let target = std::fs::read_link(&candidate)?.into_os_string().into_vec();
                if target.starts_with(b"/") {
                    resolved.clear();
                }
                for c in target.split(|b| *b == b'/').rev() {
                    match c {
                        b"" | b"." => {}
                        _ => pending.push(c.to_vec()),
                    }
                }
            }
            _ => {
                if part == b".." {
                    resolved.pop();
                } else if part != b"." {
                    resolved.push(part);
                }
            }
        }
    }
    Ok(root.join(rel_path(&resolved.join(&b'/'))))
}

/// Go's filepath.Match for one path (components never match across '/').
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len())
            .take_while(|&i| i == 0 || n[i - 1] != '/')
            .any(|i| glob_at(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && n[0] != '/' && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            let mut i = 1;
            let negate = matches!(p.get(1), Some('^') | Some('!'));
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            while i < p.len() && (first || p[i] != ']') {
                first = false;
                let lo = if p[i] == '\\' && i + 1 < p.len() {
                    i += 1;
                    p[i]
                } else {
                    p[i]
                };
                let hi = if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&x| x != ']') {
                    i += 2;
                    p[i]
                } else {
                    lo
                };
                if lo <= *c && *c <= hi {
                    matched = true;
                }
                i += 1;
            }
            if i >= p.len() {
                return false; // unterminated class never matches
            }
            matched != negate && *c != '/' && glob_at(&p[i + 1..], &n[1..])
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob_at(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && glob_at(&p[1..], &n[1..]),
    }
}

impl SourceTree<'_> {
    /// Relative paths matched by one COPY source (a path or a wildcard), as bytes.
    pub fn matches(&self, source: &str) -> Result<Vec<Vec<u8>>> {
        let rel = clean_rel(source);
        if !has_glob(&rel) {
            let found = match self.index {
                // Symlinks on the way (and at the end) are followed inside the context, as
                // BuildKit's COPY does.
                Some(idx) => idx.contains(&rel) || idx.contains(self.resolved_rel(rel.as_bytes())?),
                None => std::fs::symlink_metadata(resolve_in_root(self.root, &rel, true)?).is_ok(),
            };
            if !found {
                bail!("\"/{rel}\": not found");
            }
            return Ok(vec![rel.into_bytes()]);
        }
        let depth = rel.split('/').count();
        let mut out = Vec::new();
        match self.index {
            Some(idx) => {
                // The literal directories before the first wildcard may be symlinks.
                let parts: Vec<&str> = rel.split('/').collect();
                let literal = parts.iter().take_while(|p| !has_glob(p)).count();
                let prefix = self.resolved_rel(parts[..literal].join("/").as_bytes())?;
                let pattern = parts[literal..].join("/");
                let depth = depth - literal;
                let under = if prefix.is_empty() {
                    prefix
                } else {
                    join_rel(&prefix, b"")
                };
                for k in idx.entries.range(under.clone()..).map(|(k, _)| k) {
                    let Some(rest) = k.strip_prefix(under.as_slice()) else {
                        break;
                    };
                    let rest_depth = rest.split(|b| *b == b'/').count();
                    if rest_depth == depth && glob_match(&pattern, &match_text(rest)) {
                        out.push(k.clone());
                    }
                }
            }
            None => self.glob_walk(&rel, b"", &mut out)?,
        }
        Ok(out)
    }

    fn glob_walk(&self, pattern: &str, prefix: &[u8], out: &mut Vec<Vec<u8>>) -> Result<()> {
        let (head, tail) = match pattern.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (pattern, None),
        };
        let dir = resolve_in_root(self.root, prefix, true)?;
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut names: Vec<Vec<u8>> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_vec())
            .collect();
        names.sort();
        for name in names {
            if !glob_match(head, &match_text(&name)) {
                continue;
            }
            let rel = join_rel(prefix, &name);
            match tail {
                None => out.push(rel),
                Some(t) => self.glob_walk(t, &rel, out)?,
            }
        }
        Ok(())
    }

    /// `rel` with every symlink in it followed inside the source root.
    pub fn resolved_rel(&self, rel: &[u8]) -> Result<Vec<u8>> {
        let resolved = resolve_in_root(self.root, rel, true)?;
        Ok(resolved
            .strip_prefix(self.root)
            .map(|r| r.as_os_str().as_bytes().to_vec())
            .unwrap_or_default())
    }

    fn included(&self, rel: &[u8]) -> bool {
        self.index.is_none_or(|idx| idx.contains(rel))
    }
}

/// Options of one COPY.
#[derive(Default)]
pub struct CopyOptions {
    pub owner: Option<Owner>,
    pub chmod: Option<ModeSpec>,
    /// `--exclude` patterns, matched against paths relative to the source root and to
    /// each copied directory.
    pub exclude: PatternMatcher,
    /// `--parents`: keep each match's path below the source root or a `/./` pivot.
    pub parents: bool,
    /// `ADD`: extract local tar archives into the destination.
    pub unpack: bool,
    /// The writable upper dir behind `dest_root` when that is an overlay mount. The
    /// contents of directories this copy creates are written there directly, which
    /// skips overlay's per-file cost; the caller must remount before looking at them.
    pub direct_upper: Option<PathBuf>,
    /// For a tree that is only ever written out as a layer tar: regular files are created
    /// sparse at their size (no data written) and their sources recorded here, for the tar
    /// writer to read the data from (see `snapshotter::layer::DiffOptions::data_sources`).
    pub sparse_data_from: Option<DataSources>,
}

/// Destination path of a sparse copy → the source file holding its data.
pub type DataSources = std::sync::Arc<std::sync::Mutex<HashMap<PathBuf, PathBuf>>>;

/// One entry to create in the destination.
struct Item {
    src: PathBuf,
    dest: PathBuf,
    md: std::fs::Metadata,
    /// For the second and later names of a hardlinked file: the first name's destination.
    link_to: Option<PathBuf>,
}

/// Everything one COPY creates, in walk order (a directory before its contents).
#[derive(Default)]
struct Plan {
    items: Vec<Item>,
    /// (dev, inode) of multiply-linked files → destination of the first copy.
    inodes: HashMap<(u64, u64), PathBuf>,
    /// Copy every xattr (overlay markers too), for replaying layer dirs verbatim.
    all_xattrs: bool,
    /// A directory replaces a non-directory in its way (replaying a layer), rather than
    /// failing as a COPY does.
    replace_non_dirs: bool,
    /// Regular files get their size, not their data (see [`CopyOptions::sparse_data_from`]).
    sparse_files: bool,
}

impl Plan {
    fn push(&mut self, src: PathBuf, dest: PathBuf, md: std::fs::Metadata) {
        let mut link_to = None;
        if md.is_file() && md.nlink() > 1 {
            match self.inodes.entry((md.dev(), md.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    link_to = Some(first.get().clone())
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(dest.clone());
                }
            }
        }
        self.items.push(Item {
            src,
            dest,
            md,
            link_to,
        });
    }
}

/// Splits a `--parents` source at its `/./` pivot: (part dropped from the destination, rest).
fn split_pivot(source: &str) -> Option<(String, String)> {
    let s = if let Some(rest) = source.strip_prefix("./") {
        rest
    } else {
        source
    };
    s.find("/./")
        .map(|i| (clean_rel(&s[..i]), clean_rel(&s[i + 3..])))
}

/// One match of a COPY source: (source index, matched path, path kept below the destination).
type SourceMatch = (usize, Vec<u8>, Vec<u8>);

/// Each source's matches, in order.
fn match_sources(
    src: &SourceTree,
    sources: &[String],
    opts: &CopyOptions,
) -> Result<Vec<SourceMatch>> {
    let mut matched: Vec<SourceMatch> = Vec::new();
    for (source_index, s) in sources.iter().enumerate() {
        let pivot = if opts.parents { split_pivot(s) } else { None };
        // A wildcard may match nothing: BuildKit's Dockerfile COPY allows an empty wildcard.
        let m = src.matches(s)?;
        for rel in m {
            if has_glob(s) && !opts.exclude.is_empty() && opts.exclude.matches(&match_text(&rel)) {
                continue;
            }
            let kept = match &pivot {
                Some((prefix, _)) if !prefix.is_empty() => rel
                    .strip_prefix(prefix.as_bytes())
                    .map(|r| r.strip_prefix(b"/").unwrap_or(r).to_vec())
                    .unwrap_or_else(|| rel.clone()),
                _ => rel.clone(),
            };
            matched.push((source_index, rel, kept));
        }
    }
    Ok(matched)
}

/// Copies `sources` from `src` into `dest` (absolute, inside `dest_root`) with Docker's
/// rules. Returns whether anything was written through `opts.direct_upper`.
pub fn copy(
    src: &SourceTree,
    sources: &[String],
    dest_root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<bool> {
    let matched = match_sources(src, sources, opts)?;
    // Like BuildKit, several wildcard matches do not make a destination a directory:
    // each is copied to it in turn (matched files replace each other, the last wins).
    let dest_is_dir =
        dest.ends_with('/') || dest.ends_with("/.") || sources.len() > 1 || opts.parents;
    let dest_path = resolve_in_root(dest_root, dest, true)?;
    let default_owner = if src.index.is_some() {
        Some(Owner { uid: 0, gid: 0 })
    } else {
        None
    };
    let owner = opts.owner.or(default_owner);
    // Directories the copy makes get the --chmod mode too (BuildKit ≥ 0.21), else 0755.
    let made_dir_mode = opts
        .chmod
        .as_ref()
        .map_or(0o755, |c| c.apply(0o755, true) & 0o777);
    let mut plan = Plan {
        sparse_files: opts.sparse_data_from.is_some(),
        ..Default::default()
    };
    let mut wrote_direct = false;
    let mut current_source = 0;
    for (source_index, rel, kept) in matched {
        // Each source is its own copy in BuildKit: hard links are kept within one source's
        // matches only.
        if source_index != current_source {
            plan.inodes.clear();
            current_source = source_index;
        }
        let src_path = resolve_in_root(src.root, &rel, true)?;
        let md = std::fs::symlink_metadata(&src_path)
            .with_context(|| format!("reading source {}", match_text(&rel)))?;
        let base_dir = if opts.parents && !kept.is_empty() {
            let below = rel_path(&kept);
            if md.is_dir() {
                dest_path.join(below)
            } else {
                dest_path.join(below.parent().unwrap_or(Path::new("")))
            }
        } else {
            dest_path.clone()
        };
        if md.is_dir() {
            let fresh = std::fs::symlink_metadata(&base_dir).is_err();
            ensure_dir_mode(dest_root, &base_dir, opts.owner, made_dir_mode)?;
            // A directory that did not exist has nothing below it in lower layers, so
            // writing its contents straight into the upper dir gives the same tree.
            let fill = match (&opts.direct_upper, fresh) {
                (Some(upper), true) => base_dir
                    .strip_prefix(dest_root)
                    .map(|r| upper.join(r))
                    .ok()
                    .filter(|d| d.is_dir())
                    .unwrap_or_else(|| base_dir.clone()),
                _ => base_dir.clone(),
            };
            wrote_direct |= fill != base_dir;
            let walked_rel = src.resolved_rel(&rel)?;
            walk(src, opts, &walked_rel, b"", &src_path, &fill, &mut plan)?;
            continue;
        }
        if opts.unpack && md.is_file() {
            if let Some(format) = archive::detect(&src_path)? {
                ensure_dir(dest_root, &base_dir, opts.owner)?;
                // BuildKit applies --chown to extracted entries but keeps their modes.
                archive::extract(&src_path, format, dest_root, &base_dir, opts.owner)
                    .with_context(|| format!("extracting {}", match_text(&rel)))?;
                continue;
            }
        }
        let existing_dir = std::fs::metadata(&base_dir)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let target = if dest_is_dir || existing_dir {
            ensure_dir_mode(dest_root, &base_dir, opts.owner, made_dir_mode)?;
            let name = rel_path(&rel)
                .file_name()
                .ok_or_else(|| anyhow!("bad source {}", match_text(&rel)))?;
            base_dir.join(name)
        } else {
            if let Some(parent) = base_dir.parent() {
                ensure_dir_mode(dest_root, parent, opts.owner, made_dir_mode)?;
            }
            base_dir.clone()
        };
        plan.items.retain(|i| i.dest != target);
        plan.push(src_path, target, md);
    }
    execute(&plan, owner, opts.chmod.as_ref())?;
    if let Some(sources) = &opts.sparse_data_from {
        let files = plan.items.into_iter().filter(|i| i.md.is_file());
        let mut sources = sources.lock().unwrap_or_else(|e| e.into_inner());
        // In plan order: where two matches share a destination, the last one is the file.
        sources.extend(files.map(|i| (i.dest, i.src)));
    }
    Ok(wrote_direct)
}

/// Copies the contents of `src_dir` into `dest_dir` exactly: owners, modes, times,
/// every xattr and device node (overlay whiteouts and opaque markers included).
///
/// Regular files are real copies (copy_file_range: a reflink where the filesystem has them),
/// never hard links to the source: a build would see the shared inode's link count.
pub fn copy_tree_verbatim(src_dir: &Path, dest_dir: &Path) -> Result<()> {
    let src = SourceTree {
        root: src_dir,
        index: None,
    };
    let mut plan = Plan {
        all_xattrs: true,
        replace_non_dirs: true,
        ..Default::default()
    };
    walk(
        &src,
        &CopyOptions::default(),
        b"",
        b"",
        src_dir,
        dest_dir,
        &mut plan,
    )?;
    execute(&plan, None, None)
}

/// Adds the contents of directory `src_dir` (at `rel` in the source, `below` under the
/// copied directory) to the plan, honouring the context index and `--exclude`. The walk keeps
/// its own stack, so a tree of any depth fits in the thread's.
fn walk(
    src: &SourceTree,
    opts: &CopyOptions,
    rel: &[u8],
    below: &[u8],
    src_dir: &Path,
    dest_dir: &Path,
    plan: &mut Plan,
) -> Result<()> {
    let top = WalkDir::open(
        rel.to_vec(),
        below.to_vec(),
        src_dir,
        dest_dir.to_path_buf(),
        None,
    )?;
    let mut stack = vec![top];
    while let Some(dir) = stack.last_mut() {
        let Some(entry) = dir.entries.next() else {
            let done = stack.pop().expect("stack is not empty");
            // An excluded directory stays only if something below it was re-included.
            if done
                .excluded_at
                .is_some_and(|at| plan.items.len() == at + 1)
            {
                plan.items.pop();
            }
            continue;
        };
        let name = entry.file_name();
        let child_rel = join_rel(&dir.rel, name.as_bytes());
        let child_below = join_rel(&dir.below, name.as_bytes());
        if !src.included(&child_rel) {
            continue;
        }
        let excluded = !opts.exclude.is_empty()
            && (opts.exclude.matches(&match_text(&child_rel))
                || opts.exclude.matches(&match_text(&child_below)));
        let md = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let s = entry.path();
        let d = dir.dest.join(&name);
        if !md.is_dir() {
            if !excluded {
                plan.push(s, d, md);
            }
            continue;
        }
        if excluded
            && !opts.exclude.may_reinclude_under(&match_text(&child_rel))
            && !opts.exclude.may_reinclude_under(&match_text(&child_below))
        {
            continue;
        }
        let at = plan.items.len();
        plan.push(s.clone(), d.clone(), md);
        let child = WalkDir::open(child_rel, child_below, &s, d, excluded.then_some(at))?;
        stack.push(child);
    }
    Ok(())
}

/// One directory on the copy walk's stack: its entries not yet visited, sorted by name.
struct WalkDir {
    rel: Vec<u8>,
    below: Vec<u8>,
    dest: PathBuf,
    entries: std::vec::IntoIter<std::fs::DirEntry>,
    /// For a directory `--exclude` matched: its index in the plan.
    excluded_at: Option<usize>,
}

impl WalkDir {
    fn open(
        rel: Vec<u8>,
        below: Vec<u8>,
        src_dir: &Path,
        dest: PathBuf,
        excluded_at: Option<usize>,
    ) -> Result<Self> {
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(src_dir)
            .with_context(|| format!("reading {}", src_dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", src_dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        Ok(WalkDir {
            rel,
            below,
            dest,
            entries: entries.into_iter(),
            excluded_at,
        })
    }
}

/// Creates the planned entries: directories first, then files in parallel, then
/// hardlinks, then directory metadata (children would change a directory's mtime).
fn execute(plan: &Plan, owner: Option<Owner>, chmod: Option<&ModeSpec>) -> Result<()> {
    for item in plan.items.iter().filter(|i| i.md.is_dir()) {
        match std::fs::symlink_metadata(&item.dest) {
            Ok(m) if m.is_dir() => {}
            // As BuildKit: `COPY rootfs/ /` with a `bin/` onto merged /usr, where /bin is a
            // symlink, fails rather than replacing the link with a directory.
            Ok(_) if !plan.replace_non_dirs => {
                bail!("cannot copy to non-directory: {}", item.dest.display())
            }
            Ok(_) => {
                std::fs::remove_file(&item.dest)
                    .with_context(|| format!("replacing {}", item.dest.display()))?;
                create_dir(&item.dest)?;
            }
            Err(_) => create_dir(&item.dest)?,
        }
    }
    plan.items
        .par_iter()
        .filter(|i| !i.md.is_dir() && i.link_to.is_none())
        .try_for_each(|item| copy_entry(plan, item, owner, chmod))?;
    for item in plan.items.iter() {
        if let Some(first) = &item.link_to {
            remove_existing(&item.dest)?;
            std::fs::hard_link(first, &item.dest)
                .with_context(|| format!("linking {}", item.dest.display()))?;
        }
    }
    for item in plan.items.iter().rev().filter(|i| i.md.is_dir()) {
        let meta = Meta {
            owner,
            chmod,
            all_xattrs: plan.all_xattrs,
        };
        apply_meta(&item.src, &item.dest, &item.md, None, &meta)?;
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))
}

/// Removes whatever is at `path` (never following a symlink), so it can be recreated.
fn remove_existing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    }
    .with_context(|| format!("replacing {}", path.display()))
}

/// How created entries get their metadata.
struct Meta<'a> {
    owner: Option<Owner>,
    chmod: Option<&'a ModeSpec>,
    all_xattrs: bool,
}

fn copy_entry(
    plan: &Plan,
    item: &Item,
    owner: Option<Owner>,
    chmod: Option<&ModeSpec>,
) -> Result<()> {
    let (src, md, dest) = (item.src.as_path(), &item.md, item.dest.as_path());
    let meta = Meta {
        owner,
        chmod,
        all_xattrs: plan.all_xattrs,
    };
    let ft = md.file_type();
    if ft.is_file() {
        use std::os::unix::fs::OpenOptionsExt;
        let mut from = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(src)
            .with_context(|| format!("reading {}", src.display()))?;
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(dest)
        };
        // Usually nothing is in the way; only then pay for looking and removing.
        let mut to = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                remove_existing(dest)?;
                create()
            }
            other => other,
        }
        .with_context(|| format!("creating {}", dest.display()))?;
        if plan.sparse_files {
            to.set_len(md.len())
        } else {
            copy_data(&mut from, &mut to, md.len())
        }
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
        return apply_meta(src, dest, md, Some((&from, &to)), &meta);
    }
    remove_existing(dest)?;
    if ft.is_symlink() {
        let target = std::fs::read_link(src)?;
        std::os::unix::fs::symlink(&target, dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        return apply_meta(src, dest, md, None, &meta);
    }
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_fifo() {
        rustix::fs::FileType::Fifo
    } else if ft.is_char_device() {
        rustix::fs::FileType::CharacterDevice
    } else if ft.is_block_device() {
        rustix::fs::FileType::BlockDevice
    } else {
        return Ok(()); // sockets are not copied, like BuildKit
    };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dest,
        kind,
        rustix::fs::Mode::from_raw_mode(md.mode() & 0o7777),
        md.rdev(),
    )
    .with_context(|| format!("creating {}", dest.display()))?;
    apply_meta(src, dest, md, None, &meta)
}

/// Copies the `len` bytes the source had when listed with copy_file_range (in-kernel,
/// reflinks where the fs can), falling back to read/write where that is unsupported.
fn copy_data(from: &mut std::fs::File, to: &mut std::fs::File, len: u64) -> std::io::Result<()> {
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(&*from, None, &*to, None, chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                std::io::copy(from, to)?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Extended attributes a copy keeps: the user namespace and file capabilities
/// (overlay's trusted.* and security labels belong to the host).
fn xattr_kept(name: &[u8], all: bool) -> bool {
    all || name.starts_with(b"user.") || name == b"security.capability"
}

/// Copies kept xattrs from `src` to `dest` (by open files when given).
fn copy_xattrs(
    src: &Path,
    dest: &Path,
    files: Option<(&std::fs::File, &std::fs::File)>,
    all: bool,
) -> Result<()> {
    let list = |buf: &mut [u8]| match files {
        Some((from, _)) => rustix::fs::flistxattr(from, buf),
        None => rustix::fs::llistxattr(src, buf),
    };
    let mut names = vec![0u8; 1024];
    let len = match list(&mut names) {
        Err(rustix::io::Errno::RANGE) => {
            names = vec![0u8; 1 << 16];
            list(&mut names)
        }
        other => other,
    };
    let len = match len {
        Ok(0) | Err(_) => return Ok(()), // none, or a filesystem without xattrs
        Ok(n) => n,
    };
    for name in names[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && xattr_kept(n, all))
    {
        let cname = std::ffi::CString::new(name)?;
        let mut value = vec![0u8; 64 * 1024];
        let n = match files {
            Some((from, _)) => rustix::fs::fgetxattr(from, &cname, &mut value),
            None => rustix::fs::lgetxattr(src, &cname, &mut value),
        }
        .with_context(|| format!("reading xattrs of {}", src.display()))?;
        let set = match files {
            Some((_, to)) => {
                rustix::fs::fsetxattr(to, &cname, &value[..n], rustix::fs::XattrFlags::empty())
            }
            None => {
                rustix::fs::lsetxattr(dest, &cname, &value[..n], rustix::fs::XattrFlags::empty())
            }
        };
        set.with_context(|| {
            format!(
                "setting xattr {} on {}",
                String::from_utf8_lossy(name),
                dest.display()
            )
        })?;
    }
    Ok(())
}

/// Sets owner, mode, xattrs and times of a created entry from its source (by open files when given).
fn apply_meta(
    src: &Path,
    dest: &Path,
    md: &std::fs::Metadata,
    files: Option<(&std::fs::File, &std::fs::File)>,
    meta: &Meta,
) -> Result<()> {
    let (owner, chmod) = (meta.owner, meta.chmod);
    let (uid, gid) = owner
        .map(|o| (o.uid, o.gid))
        .unwrap_or((md.uid(), md.gid()));
    let is_link = md.file_type().is_symlink();
    let mode = chmod
        .map(|c| c.apply(md.mode(), md.is_dir()))
        .unwrap_or(md.mode() & 0o7777);
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec() as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec() as _,
        },
    };
    let ids = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    if let Some((_, to)) = files {
        // chown clears set-id bits, so the mode comes after it.
        rustix::fs::fchown(to, ids.0, ids.1)
            .with_context(|| format!("chown {}", dest.display()))?;
        rustix::fs::fchmod(to, rustix::fs::Mode::from_raw_mode(mode))
            .with_context(|| format!("chmod {}", dest.display()))?;
        copy_xattrs(src, dest, files, meta.all_xattrs)?;
        rustix::fs::futimens(to, &ts)
            .with_context(|| format!("setting times of {}", dest.display()))?;
        return Ok(());
    }
    rustix::fs::chownat(
        rustix::fs::CWD,
        dest,
        ids.0,
        ids.1,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {}", dest.display()))?;
    if !is_link {
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dest.display()))?;
        copy_xattrs(src, dest, None, meta.all_xattrs)?;
    }
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dest,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting times of {}", dest.display()))?;
    Ok(())
}

/// Checksum of the context entries a COPY of `rel` with `exclude` reads: `rel` and
/// everything below it that the patterns do not exclude (same rules as the copy).
pub fn checksum_excluding(idx: &ContextIndex, rel: &[u8], exclude: &PatternMatcher) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(rel);
    // The copy walks the symlink-resolved source; so does its checksum.
    let rel = SourceTree {
        root: &idx.root,
        index: Some(idx),
    }
    .resolved_rel(rel)
    .unwrap_or_else(|_| rel.to_vec());
    let (under, subtree) = idx.subtree(&rel);
    for (path, e) in subtree {
        let inner = &path[under.len().min(path.len())..];
        // The matched source itself is always read (over-invalidating is safe).
        if *path != rel
            && (exclude.matches(&match_text(path)) || exclude.matches(&match_text(inner)))
        {
            continue;
        }
        h.update(b"\0");
        h.update(path);
        h.update([0, e.kind as u8]);
        h.update(e.mode.to_le_bytes());
        h.update(e.digest);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Creates `dir` and missing parents (mode 0755, owned by `owner` or root).
pub fn ensure_dir(root: &Path, dir: &Path, owner: Option<Owner>) -> Result<()> {
    ensure_dir_mode(root, dir, owner, 0o755)
}

/// Creates `dir` and missing parents with `mode`, owned by `owner` or root.
pub fn ensure_dir_mode(root: &Path, dir: &Path, owner: Option<Owner>, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| anyhow!("{} is outside the root", dir.display()))?;
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => bail!(
                "cannot create directory /{}: a file is in the way",
                rel.display()
            ),
            Err(_) => {
                std::fs::create_dir(&cur).with_context(|| format!("creating {}", cur.display()))?;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(mode))?;
                let o = owner.unwrap_or(Owner { uid: 0, gid: 0 });
                std::os::unix::fs::lchown(&cur, Some(o.uid), Some(o.gid))?;
            }
        }
    }
    Ok(())
}

/// [`resolve_owner`] for an optional `--chown`.
pub fn resolve_owner_opt(root: &Path, chown: Option<&Chown>) -> Result<Option<Owner>> {
    chown.map(|c| resolve_owner(root, c)).transpose()
}

/// Resolves a `--chown` value to numeric ids using the root's /etc/passwd and /etc/group.
pub fn resolve_owner(root: &Path, chown: &Chown) -> Result<Owner> {
    let lookup = |file: &str, name: &str| -> Result<Option<(u32, u32)>> {
        let path = resolve_in_root(root, file, true)?;
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 3 && f[0] == name {
                let id = f[2].parse().unwrap_or(0);
                let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
                return Ok(Some((id, gid)));
            }
        }
        Ok(None)
    };
    let (uid, primary_gid) = match chown.user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => lookup("/etc/passwd", &chown.user)?.ok_or_else(|| {
            anyhow!(
                "unable to find user {}: no matching entries in passwd file",
                chown.user
            )
        })?,
    };
    let gid = match &chown.group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("/etc/group", g)?.map(|(id, _)| id).ok_or_else(|| {
                anyhow!("unable to find group {g}: no matching entries in group file")
            })?,
        },
    };
    Ok(Owner { uid, gid })
}

/// Writes a file (creating parents), for heredoc-style file creation.
pub fn make_file(
    root: &Path,
    path: &str,
    data: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<()> {
    let target = resolve_in_root(root, path, false)?;
    if let Some(parent) = target.parent() {
        ensure_dir(root, parent, owner)?;
    }
    if std::fs::symlink_metadata(&target).is_ok() {
        std::fs::remove_file(&target)?;
    }
    std::fs::write(&target, data)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    let o = owner.unwrap_or(Owner { uid: 0, gid: 0 });
    std::os::unix::fs::lchown(&target, Some(o.uid), Some(o.gid))?;
    Ok(())
}

/// Creates a directory (and parents) with the given mode.
pub fn make_dir(root: &Path, path: &str, mode: u32, owner: Option<Owner>) -> Result<()> {
    let target = resolve_in_root(root, path, true)?;
    let existed = target.is_dir();
    ensure_dir(root, &target, owner)?;
    if !existed {
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_go() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("d/*.txt", "d/a.txt"));
        assert!(glob_match("f?o", "foo"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(!glob_match("[a-c", "a"));
    }

    #[test]
    fn clean_rel_never_leaves_root() {
        assert_eq!(clean_rel("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean_rel("/a/./b/../c"), "a/c");
        assert_eq!(clean_rel("."), "");
    }

    #[test]
    fn symlinks_resolve_inside_root() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", t.path().join("up")).unwrap();
        assert_eq!(
            resolve_in_root(t.path(), "/evil/passwd", true).unwrap(),
            t.path().join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(t.path(), "up/x", true).unwrap(),
            t.path().join("x")
        );
        assert_eq!(
            resolve_in_root(t.path(), "evil", false).unwrap(),
            t.path().join("evil")
        );
    }
}
