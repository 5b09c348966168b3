//! Git sources (`ADD <repo>#<ref>:<subdir>`), with the `git` CLI. The ref is
//! resolved to a commit first (`git ls-remote`), so the cache key is the commit
//! plus the options: a moved branch is a new result, an unchanged one is cached.

use crate::fileop::{copy_tree_verbatim, resolve_in_root};
use crate::ops::{Input, Produced, SolveOp, Step};
use crate::worker::{sha256_hex, unique, Worker};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::Path;
use std::process::Command;

/// A repository at a reference, optionally one subdirectory, optionally with `.git`.
pub(crate) struct Git<'a> {
    remote: &'a str,
    reference: Option<&'a str>,
    subdir: Option<&'a str>,
    keep_git_dir: bool,
    /// The commit the reference names, once the key is known.
    resolved: Option<Resolved>,
}

impl<'a> Git<'a> {
    pub fn new(
        remote: &'a str,
        reference: Option<&'a str>,
        subdir: Option<&'a str>,
        keep_git_dir: bool,
    ) -> Self {
        Git {
            remote,
            reference,
            subdir,
            keep_git_dir,
            resolved: None,
        }
    }
}

impl SolveOp for Git<'_> {
    fn cache_key(&mut self, _: &Worker, _: &Step, _: &[Input]) -> Result<String> {
        let resolved = self.resolved.insert(resolve(self.remote, self.reference)?);
        let keep = if self.keep_git_dir { self.remote } else { "" };
        Ok(sha256_hex(&[
            b"git",
            resolved.commit.as_bytes(),
            self.subdir.unwrap_or("").as_bytes(),
            keep.as_bytes(),
        ]))
    }

    fn run(&mut self, w: &Worker, _: &Step, _: &[Input]) -> Result<Produced> {
        let resolved = self
            .resolved
            .as_ref()
            .ok_or_else(|| anyhow!("{}: run before its key", self.remote))?;
        checkout(w, self.remote, resolved, self.subdir, self.keep_git_dir).map(Produced::built)
    }
}

/// A reference resolved on the remote.
pub(crate) struct Resolved {
    pub commit: String,
    /// What to fetch: a ref name, or the commit itself.
    pub fetch: String,
}

fn git(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    // Never prompt for credentials, never read the host's global configuration.
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C");
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("{what}: the git command is not installed")
        } else {
            anyhow!("{what}: {e}")
        }
    })?;
    if !out.status.success() {
        bail!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves `reference` (branch, tag, full ref or commit; the default branch when None).
pub(crate) fn resolve(remote: &str, reference: Option<&str>) -> Result<Resolved> {
    let mut cmd = git(None);
    cmd.arg("ls-remote").arg("--").arg(remote);
    let listing = run(cmd, &format!("listing refs of {remote}"))?;
    let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| refs.iter().find(|(_, r)| *r == name).map(|(c, _)| *c);
    let Some(reference) = reference else {
        let commit =
            find("HEAD").ok_or_else(|| anyhow!("{remote} has no default branch (HEAD)"))?;
        return Ok(Resolved {
            commit: commit.to_string(),
            fetch: "HEAD".into(),
        });
    };
    let candidates = if reference.starts_with("refs/") {
        vec![reference.to_string()]
    } else {
        vec![
            format!("refs/heads/{reference}"),
            format!("refs/tags/{reference}"),
        ]
    };
    for name in candidates {
        // An annotated tag's commit is its peeled entry.
        if let Some(commit) = find(&format!("{name}^{{}}")).or_else(|| find(&name)) {
            return Ok(Resolved {
                commit: commit.to_string(),
                fetch: name,
            });
        }
    }
    if is_commit_id(reference) {
        return Ok(Resolved {
            commit: reference.to_lowercase(),
            fetch: reference.to_lowercase(),
        });
    }
    bail!("git reference {reference:?} not found in {remote} (use a branch, a tag or a full commit id)")
}

/// Checks out `resolved` into a new committed snapshot; returns its name.
pub(crate) fn checkout(
    w: &Worker,
    remote: &str,
    resolved: &Resolved,
    subdir: Option<&str>,
    keep_git_dir: bool,
) -> Result<String> {
    let work = tempfile::tempdir()?;
    let repo = work.path().join("repo");
    let mut cmd = git(None);
    cmd.args(["init", "-q"]).arg(&repo);
    run(cmd, "creating a work repository")?;
    let mut cmd = git(Some(&repo));
    cmd.args(["fetch", "-q", "--depth=1", "--no-tags", "--"])
        .arg(remote)
        .arg(&resolved.fetch);
    if let Err(shallow) = run(cmd, &format!("fetching {} from {remote}", resolved.fetch)) {
        // Servers may refuse to hand out a commit by id; then fetch everything.
        if resolved.fetch != resolved.commit {
            return Err(shallow);
        }
        let mut cmd = git(Some(&repo));
        cmd.args(["fetch", "-q", "--", remote])
            .arg("+refs/heads/*:refs/remotes/origin/*")
            .arg("+refs/tags/*:refs/tags/*");
        run(cmd, &format!("fetching {remote}"))?;
    }
    let mut cmd = git(Some(&repo));
    cmd.args(["-c", "advice.detachedHead=false", "checkout", "-q"])
        .arg(&resolved.commit)
        .arg("--");
    run(
        cmd,
        &format!("checking out {} of {remote}", resolved.commit),
    )?;
    let mut cmd = git(Some(&repo));
    cmd.args(["rev-parse", "HEAD"]);
    let head = run(cmd, "reading the checked-out commit")?;
    if head.trim() != resolved.commit {
        bail!(
            "{remote}: checked out {} but expected {}",
            head.trim(),
            resolved.commit
        );
    }
    if keep_git_dir {
        let mut cmd = git(Some(&repo));
        cmd.args(["remote", "add", "origin", remote]);
        run(cmd, "recording the remote")?;
    } else {
        std::fs::remove_dir_all(repo.join(".git"))?;
    }
    let source = match subdir
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
    {
        None => repo.clone(),
        Some(sub) => {
            let dir = resolve_in_root(&repo, sub, true)?;
            if !dir.is_dir() {
                bail!(
                    "subdirectory {sub:?} not found in {remote} at {}",
                    resolved.commit
                );
            }
            dir
        }
    };
    let active = unique("git");
    w.snapshots.prepare(&active, None)?;
    let res = (|| -> Result<String> {
        let dest = w.snapshots.upper_dir(&active)?;
        copy_tree_verbatim(&source, &dest).context("copying the checkout")?;
        let name = unique("layer");
        w.snapshots.commit(&name, &active)?;
        Ok(name)
    })();
    if res.is_err() {
        let _ = w.snapshots.remove(&active);
    }
    res
}
