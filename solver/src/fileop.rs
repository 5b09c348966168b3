//! File operations (COPY, mkdir, mkfile) on a mounted root filesystem, with
//! Docker's COPY rules. Destination paths are resolved inside the target root,
//! so a symlink in the image can never send a write outside it.

use crate::context::ContextIndex;
use crate::graph::Chown;
use anyhow::{anyhow, bail, Context as _, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

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
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Resolves `path` inside `root`, following symlinks as if `root` were `/`.
/// The last component is followed only if `follow_last`.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = clean_rel(path)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let candidate = root.join(resolved.join("/")).join(&part);
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() && (!is_last || follow_last) => {
                hops += 1;
                if hops > 255 {
                    bail!("too many levels of symbolic links resolving {path}");
                }
                let target = std::fs::read_link(&candidate)?;
                let target = target.to_string_lossy().to_string();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for c in target.split('/').rev() {
                    match c {
                        "" | "." => {}
                        _ => pending.push(c.to_string()),
                    }
                }
            }
            _ => {
                if part == ".." {
                    resolved.pop();
                } else if part != "." {
                    resolved.push(part);
                }
            }
        }
    }
    Ok(root.join(resolved.join("/")))
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
    /// Relative paths matched by one COPY source (a path or a wildcard).
    pub fn matches(&self, source: &str) -> Result<Vec<String>> {
        let rel = clean_rel(source);
        if !has_glob(&rel) {
            let found = match self.index {
                Some(idx) => idx.contains(&rel),
                None => std::fs::symlink_metadata(resolve_in_root(self.root, &rel, true)?).is_ok(),
            };
            if !found {
                bail!("\"{}\": not found", if rel.is_empty() { "/" } else { &rel });
            }
            return Ok(vec![rel]);
        }
        let depth = rel.split('/').count();
        let mut out = Vec::new();
        match self.index {
            Some(idx) => {
                for k in idx.entries.keys() {
                    if k.split('/').count() == depth && glob_match(&rel, k) {
                        out.push(k.clone());
                    }
                }
            }
            None => self.glob_walk(&rel, "", &mut out)?,
        }
        Ok(out)
    }

    fn glob_walk(&self, pattern: &str, prefix: &str, out: &mut Vec<String>) -> Result<()> {
        let (head, tail) = match pattern.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (pattern, None),
        };
        let dir = resolve_in_root(self.root, prefix, true)?;
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for name in names {
            if !glob_match(head, &name) {
                continue;
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match tail {
                None => out.push(rel),
                Some(t) => self.glob_walk(t, &rel, out)?,
            }
        }
        Ok(())
    }

    fn included(&self, rel: &str) -> bool {
        self.index.is_none_or(|idx| idx.contains(rel))
    }
}

/// Options of one COPY.
pub struct CopyOptions {
    pub owner: Option<Owner>,
    pub chmod: Option<u32>,
}

/// Copies `sources` from `src` into `dest` (absolute, inside `dest_root`) with Docker's rules.
pub fn copy(
    src: &SourceTree,
    sources: &[String],
    dest_root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<()> {
    let mut matched = Vec::new();
    for s in sources {
        let m = src.matches(s)?;
        if m.is_empty() {
            bail!("no source files were specified matching \"{s}\"");
        }
        matched.extend(m);
    }
    let dest_is_dir = dest.ends_with('/') || dest.ends_with("/.") || matched.len() > 1;
    let dest_path = resolve_in_root(dest_root, dest, true)?;
    let default_owner = if src.index.is_some() {
        Some(Owner { uid: 0, gid: 0 })
    } else {
        None
    };
    let owner = opts.owner.or(default_owner);
    for rel in matched {
        let src_path = resolve_in_root(src.root, &rel, true)?;
        let md = std::fs::symlink_metadata(&src_path)
            .with_context(|| format!("reading source {rel}"))?;
        if md.is_dir() {
            ensure_dir(dest_root, &dest_path, opts.owner)?;
            copy_dir_contents(src, &rel, &src_path, &dest_path, owner, opts.chmod)?;
        } else {
            let existing_dir = std::fs::metadata(&dest_path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            let target = if dest_is_dir || existing_dir {
                ensure_dir(dest_root, &dest_path, opts.owner)?;
                let base = Path::new(&rel)
                    .file_name()
                    .ok_or_else(|| anyhow!("bad source {rel}"))?;
                dest_path.join(base)
            } else {
                if let Some(parent) = dest_path.parent() {
                    ensure_dir(dest_root, parent, opts.owner)?;
                }
                dest_path.clone()
            };
            copy_entry(&src_path, &md, &target, owner, opts.chmod)?;
        }
    }
    Ok(())
}

/// Creates `dir` and missing parents (mode 0755, owned by `owner` or root).
pub fn ensure_dir(root: &Path, dir: &Path, owner: Option<Owner>) -> Result<()> {
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
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))?;
                let o = owner.unwrap_or(Owner { uid: 0, gid: 0 });
                std::os::unix::fs::lchown(&cur, Some(o.uid), Some(o.gid))?;
            }
        }
    }
    Ok(())
}

fn copy_dir_contents(
    src: &SourceTree,
    rel: &str,
    src_dir: &Path,
    dest_dir: &Path,
    owner: Option<Owner>,
    chmod: Option<u32>,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(src_dir)
        .with_context(|| format!("reading {}", src_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let child_rel = if rel.is_empty() {
            name.to_string_lossy().to_string()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        if !src.included(&child_rel) {
            continue;
        }
        let s = src_dir.join(&name);
        let d = dest_dir.join(&name);
        let md = std::fs::symlink_metadata(&s)?;
        if md.is_dir() {
            match std::fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(&d)?;
                    std::fs::create_dir(&d)?;
                }
                Err(_) => {
                    std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?
                }
            }
            copy_dir_contents(src, &child_rel, &s, &d, owner, chmod)?;
            apply_meta(&d, &md, owner, chmod)?;
        } else {
            copy_entry(&s, &md, &d, owner, chmod)?;
        }
    }
    Ok(())
}

fn copy_entry(
    src: &Path,
    md: &std::fs::Metadata,
    dest: &Path,
    owner: Option<Owner>,
    chmod: Option<u32>,
) -> Result<()> {
    if let Ok(existing) = std::fs::symlink_metadata(dest) {
        if existing.is_dir() {
            if md.is_dir() {
                return Ok(());
            }
            std::fs::remove_dir_all(dest)?;
        } else {
            std::fs::remove_file(dest)?;
        }
    }
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src)?;
        std::os::unix::fs::symlink(&target, dest)?;
    } else if ft.is_file() {
        std::fs::copy(src, dest)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    } else {
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
    }
    apply_meta(dest, md, owner, chmod)
}

fn apply_meta(
    dest: &Path,
    md: &std::fs::Metadata,
    owner: Option<Owner>,
    chmod: Option<u32>,
) -> Result<()> {
    let (uid, gid) = owner
        .map(|o| (o.uid, o.gid))
        .unwrap_or((md.uid(), md.gid()));
    std::os::unix::fs::lchown(dest, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", dest.display()))?;
    if !md.file_type().is_symlink() {
        let mode = chmod.unwrap_or(md.mode() & 0o7777);
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))?;
    }
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
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dest,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting times of {}", dest.display()))?;
    Ok(())
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
