//! Helpers for solver integration tests: a solver on a temporary store, graph
//! building, and reading result trees back through `export_local`.
#![allow(dead_code)]

use solver::context::{LocalSource, PlainDir};
use solver::graph::{Chown, FileAction, FileOp};
use solver::progress::Progress;
use solver::{Definition, Op, Ref, Solver, SolverConfig, Vertex};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Env {
    pub store: tempfile::TempDir,
    pub ctx: tempfile::TempDir,
    pub solver: Arc<Solver>,
}

impl Env {
    /// A solver with one local directory, "context", holding `files` (path, content).
    pub fn new(files: &[(&str, &str)]) -> Env {
        let store = tempfile::tempdir_in("/var/tmp").unwrap();
        let ctx = tempfile::tempdir().unwrap();
        for (p, c) in files {
            write(&ctx.path().join(p), c);
        }
        let solver = Self::open(store.path(), ctx.path());
        Env { store, ctx, solver }
    }

    pub fn open(store: &Path, ctx: &Path) -> Arc<Solver> {
        let mut locals: HashMap<String, Arc<dyn LocalSource>> = HashMap::new();
        locals.insert("context".into(), Arc::new(PlainDir(ctx.to_path_buf())));
        Arc::new(
            Solver::new(SolverConfig {
                root: store.to_path_buf(),
                executor: executor::Executor::new("/bin/false".into(), vec![]),
                locals,
                no_cache: false,
                progress: Progress::discard(),
                exec: Default::default(),
                layer_export: Default::default(),
            })
            .unwrap(),
        )
    }

    /// Reopens the solver (fresh context index) after the context changed.
    pub fn reopen(&mut self) {
        self.solver = Self::open(self.store.path(), self.ctx.path());
    }

    pub fn ctx(&self, rel: &str) -> PathBuf {
        self.ctx.path().join(rel)
    }

    pub async fn solve(&self, def: &Definition) -> Result<solver::SolveOutput, String> {
        let cancel = executor::CancelToken::new();
        self.solver
            .solve(def, &cancel)
            .await
            .map_err(|e| e.to_string())
    }

    /// Solves and exports the result into a fresh directory.
    pub async fn tree(&self, def: &Definition) -> tempfile::TempDir {
        let out = self.solve(def).await.unwrap_or_else(|e| panic!("{e}"));
        self.export(&out.output)
    }

    pub fn export(&self, r: &Ref) -> tempfile::TempDir {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        self.solver.export_local(r, dir.path()).unwrap();
        dir
    }
}

pub fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

pub fn vertex(op: Op, inputs: Vec<usize>) -> Vertex {
    Vertex {
        op,
        inputs,
        name: "test".into(),
        ignore_cache: false,
    }
}

/// COPY options beyond the sources and destination.
#[derive(Default, Clone)]
pub struct Copy {
    pub chown: Option<Chown>,
    pub chmod: Option<String>,
    pub exclude: Vec<String>,
    pub parents: bool,
    pub unpack: bool,
}

pub fn copy_action(sources: &[&str], dest: &str, o: &Copy, src_input: usize) -> FileAction {
    FileAction::Copy {
        src_input,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        chown: o.chown.clone(),
        chmod: o.chmod.clone(),
        exclude: o.exclude.clone(),
        parents: o.parents,
        unpack: o.unpack,
    }
}

/// scratch + context → File op copying `sources` to `dest`.
pub fn copy_from_context(sources: &[&str], dest: &str, o: &Copy) -> Definition {
    let mut def = Definition::default();
    let scratch = def.add(vertex(Op::Scratch, vec![]));
    let ctx = def.add(vertex(
        Op::Local {
            name: "context".into(),
        },
        vec![],
    ));
    let f = def.add(vertex(
        Op::File(FileOp {
            actions: vec![copy_action(sources, dest, o, 1)],
        }),
        vec![scratch, ctx],
    ));
    def.output = Some(f);
    def
}

/// Every path in a tree (relative, sorted), directories with a trailing '/'.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

pub fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

pub fn owner(p: &Path) -> (u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap();
    (md.uid(), md.gid())
}

pub fn mtime(p: &Path) -> i64 {
    std::fs::symlink_metadata(p).unwrap().mtime()
}

pub fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn sh(cmd: &str, dir: &Path) {
    let st = std::process::Command::new("sh")
        .arg("-ec")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{cmd} failed");
}
