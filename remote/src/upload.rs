//! Receiving an upload while the build already runs. One writer thread puts the requested
//! files in their contexts' trees (hashing them on the way); each context's [`Gate`] opens
//! when its last file is in, so the build starts once the small Dockerfile context is
//! complete and reads a context only when it is whole (as BuildKit syncs a local source
//! when the solver reaches it). The transfer overlaps the build's other steps.

use crate::proto::{Entry, FileChunk};
use crate::session::Metrics;
use crate::sync::{IncomingFile, Tree};
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::{mpsc, Notify};

/// What a file was when it was written: its digest holds while size and mtime match.
#[derive(Clone, Copy)]
struct Written {
    size: u64,
    mtime_ns: i64,
    digest: [u8; 32],
}

type Digests = HashMap<String, Written>;

/// An uploaded context once complete: its ignore rules and the digests written.
type Opened = (Arc<dyn solver::context::LocalSource>, Arc<Digests>);

/// Whether one uploaded context is complete: open (with the digests of the files written),
/// failed, or still pending. Waited on by solver threads (blocking) and by the session.
#[derive(Default)]
pub struct Gate {
    state: Mutex<Option<Result<Arc<Digests>, String>>>,
    cond: Condvar,
    notify: Notify,
}

impl Gate {
    fn set(&self, outcome: Result<Arc<Digests>, String>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            *state = Some(outcome);
        }
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    fn peek(&self) -> Option<Result<Arc<Digests>, String>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Blocks until the context is complete.
    fn wait(&self) -> Result<Arc<Digests>, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(outcome) = state.as_ref() {
                return outcome.clone();
            }
            state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until the context is complete.
    pub async fn opened(&self) -> Result<()> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.peek() {
                return outcome.map(drop).map_err(|e| anyhow!(e));
            }
            notified.await;
        }
    }
}

/// The gates of a session's contexts, by the path of their tree.
#[derive(Default)]
pub struct Gates(Vec<(PathBuf, Arc<Gate>)>);

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(p, _)| p))
            .finish()
    }
}

impl Gates {
    pub fn of(&self, dir: &Path) -> Option<Arc<Gate>> {
        self.0
            .iter()
            .find(|(p, _)| p == dir)
            .map(|(_, g)| g.clone())
    }

    pub async fn all_opened(&self) -> Result<()> {
        for (_, gate) in &self.0 {
            gate.opened().await?;
        }
        Ok(())
    }
}

/// A context's tree, the manifest it is brought to, and the files asked of the client.
pub struct Upload {
    pub tree: Tree,
    pub entries: Vec<Entry>,
    pub root: Option<Entry>,
    pub need: Vec<u32>,
}

pub enum Incoming {
    Chunk(FileChunk),
    Done,
}

/// The session's end of the writer thread.
pub struct Writer {
    pub tx: Option<mpsc::Sender<Incoming>>,
    pub done: tokio::task::JoinHandle<Result<()>>,
}

/// Starts the writer thread for `uploads`; returns it and the contexts' gates.
pub fn spawn(uploads: Vec<Upload>, metrics: Arc<Metrics>) -> (Writer, Arc<Gates>) {
    let gates: Vec<_> = uploads
        .iter()
        .map(|u| (u.tree.path().to_path_buf(), Arc::new(Gate::default())))
        .collect();
    let mut receiving = Receiving {
        contexts: uploads
            .into_iter()
            .zip(&gates)
            .map(|(u, (_, gate))| Pending::new(u, gate.clone()))
            .collect(),
        metrics,
    };
    let (tx, rx) = mpsc::channel(64);
    let done = tokio::task::spawn_blocking(move || receiving.run(rx));
    (Writer { tx: Some(tx), done }, Arc::new(Gates(gates)))
}

/// One context being received.
struct Pending {
    upload: Upload,
    gate: Arc<Gate>,
    /// Requested and not yet received, by entry index.
    wanted: Vec<bool>,
    left: usize,
    digests: Digests,
}

impl Pending {
    fn new(upload: Upload, gate: Arc<Gate>) -> Self {
        let mut wanted = vec![false; upload.entries.len()];
        for &i in &upload.need {
            wanted[i as usize] = true;
        }
        Pending {
            left: upload.need.len(),
            upload,
            gate,
            wanted,
            digests: HashMap::new(),
        }
    }

    /// Finishes the tree (directory metadata, completion marker) and opens the gate.
    fn complete(&mut self) -> Result<()> {
        let u = &self.upload;
        u.tree.finish(&u.entries, u.root.as_ref())?;
        self.gate
            .set(Ok(Arc::new(std::mem::take(&mut self.digests))));
        Ok(())
    }
}

struct Receiving {
    contexts: Vec<Pending>,
    metrics: Arc<Metrics>,
}

impl Drop for Receiving {
    /// Whatever ended the upload early, the build waiting on a context learns it.
    fn drop(&mut self) {
        for c in &self.contexts {
            c.gate.set(Err("the context upload did not finish".into()));
        }
    }
}

impl Receiving {
    fn run(&mut self, mut rx: mpsc::Receiver<Incoming>) -> Result<()> {
        for c in self.contexts.iter_mut().filter(|c| c.left == 0) {
            c.complete()?;
        }
        let mut current: Option<(u32, u32, IncomingFile)> = None;
        loop {
            let chunk = match rx.blocking_recv() {
                Some(Incoming::Chunk(chunk)) => chunk,
                Some(Incoming::Done) if current.is_none() => break,
                Some(Incoming::Done) => bail!("protocol: a file's data ended without eof"),
                None => bail!("the client went away during the upload"),
            };
            let (c, i) = (chunk.context, chunk.index);
            if current
                .as_ref()
                .is_none_or(|(cc, ci, _)| (*cc, *ci) != (c, i))
            {
                if current.is_some() {
                    bail!("protocol: a file's data ended without eof");
                }
                current = Some((c, i, self.begin(c, i)?));
            }
            let (_, _, file) = current.as_mut().expect("set above");
            file.write(&chunk.data)?;
            self.metrics
                .context_bytes_received
                .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
            if chunk.eof {
                let (_, _, file) = current.take().expect("set above");
                self.commit(c, i, file)?;
            }
        }
        if let Some(c) = self.contexts.iter().find(|c| c.left > 0) {
            bail!(
                "protocol: the upload ended without {} requested file(s) of {:?}",
                c.left,
                c.upload.tree.path()
            );
        }
        Ok(())
    }

    /// Starts file `i` of context `c`: only a requested file not received yet.
    fn begin(&mut self, c: u32, i: u32) -> Result<IncomingFile> {
        let pending = self
            .contexts
            .get_mut(c as usize)
            .ok_or_else(|| anyhow!("protocol: no context {c}"))?;
        if !pending.wanted.get(i as usize).copied().unwrap_or(false) {
            bail!("protocol: entry {i} of context {c} was not requested (or was sent twice)");
        }
        pending.wanted[i as usize] = false;
        pending
            .upload
            .tree
            .begin_file(&pending.upload.entries[i as usize])
    }

    fn commit(&mut self, c: u32, i: u32, file: IncomingFile) -> Result<()> {
        let digest = file.commit()?;
        self.metrics
            .context_files_received
            .fetch_add(1, Ordering::Relaxed);
        let pending = &mut self.contexts[c as usize];
        let e = &pending.upload.entries[i as usize];
        let written = Written {
            size: e.size,
            mtime_ns: e.mtime_ns,
            digest,
        };
        pending.digests.insert(e.path.clone(), written);
        pending.left -= 1;
        if pending.left == 0 {
            pending.complete()?;
        }
        Ok(())
    }
}

/// An uploaded context as the build sees it: its `.dockerignore` is read, and its files
/// walked, only once the gate opens; files just written are not read again to be hashed.
pub struct UploadedDir {
    dir: PathBuf,
    dockerfile: Option<PathBuf>,
    gate: Arc<Gate>,
    opened: std::sync::OnceLock<Result<Opened, String>>,
}

impl UploadedDir {
    pub fn new(dir: &Path, dockerfile: Option<&Path>, gate: Arc<Gate>) -> Result<Self> {
        Ok(Self {
            dir: dir.canonicalize()?,
            dockerfile: dockerfile.map(Path::to_path_buf),
            gate,
            opened: std::sync::OnceLock::new(),
        })
    }

    fn inner(&self) -> Result<&Opened, String> {
        self.opened
            .get_or_init(|| {
                let digests = self.gate.wait()?;
                let source = engine::context::local_dir(&self.dir, self.dockerfile.as_deref())
                    .map_err(|e| format!("{e:#}"))?;
                Ok((source, digests))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl solver::context::LocalSource for UploadedDir {
    fn root(&self) -> &Path {
        &self.dir
    }

    fn is_excluded(&self, rel: &str) -> bool {
        // Never asked before `wait_until_complete` (the solver waits first).
        self.inner().map_or(true, |(s, _)| s.is_excluded(rel))
    }

    fn may_reinclude_under(&self, rel_dir: &str) -> bool {
        self.inner()
            .is_ok_and(|(s, _)| s.may_reinclude_under(rel_dir))
    }

    fn wait_until_complete(&self) -> Result<(), String> {
        self.inner().map(drop)
    }

    fn known_digest(&self, rel: &[u8], md: &std::fs::Metadata) -> Option<[u8; 32]> {
        use std::os::unix::fs::MetadataExt as _;
        let (_, digests) = self.inner().ok()?;
        let w = digests.get(std::str::from_utf8(rel).ok()?)?;
        let mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        (w.size == md.size() && w.mtime_ns == mtime_ns).then_some(w.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn file(path: &str, size: usize) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o100644,
            size: size as u64,
            mtime_ns: 1_700_000_000_000_000_000,
            uid: 0,
            gid: 0,
            link: String::new(),
        }
    }

    fn upload(dir: &Path, entries: Vec<Entry>) -> Upload {
        let tree = Tree::open(dir).unwrap();
        let need = tree.prepare(&entries).unwrap();
        Upload {
            tree,
            entries,
            root: None,
            need,
        }
    }

    fn chunk(context: u32, index: u32, data: &[u8]) -> Incoming {
        Incoming::Chunk(FileChunk {
            context,
            index,
            data: data.to_vec(),
            eof: true,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_context_opens_when_its_last_file_is_in() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = vec![
            upload(&dir.path().join("df"), vec![file("Dockerfile", 4)]),
            upload(&dir.path().join("main"), vec![file("a", 2), file("b", 3)]),
        ];
        let (mut writer, gates) = spawn(uploads, Arc::default());
        let (df, main) = (
            gates.of(&dir.path().join("df")).unwrap(),
            gates.of(&dir.path().join("main")).unwrap(),
        );
        let tx = writer.tx.take().unwrap();
        tx.send(chunk(0, 0, b"FROM")).await.unwrap();
        df.opened().await.unwrap();
        tx.send(chunk(1, 0, b"aa")).await.unwrap();
        assert!(main.peek().is_none(), "b is still missing");
        tx.send(chunk(1, 1, b"bbb")).await.unwrap();
        tx.send(Incoming::Done).await.unwrap();
        writer.done.await.unwrap().unwrap();
        main.opened().await.unwrap();
        // The build is told the digests of what was written, valid while the file is as
        // written.
        let source = UploadedDir::new(&dir.path().join("main"), None, main).unwrap();
        use solver::context::LocalSource as _;
        source.wait_until_complete().unwrap();
        let b = dir.path().join("main/b");
        let known = source.known_digest(b"b", &b.metadata().unwrap());
        assert_eq!(known, Some(sha2::Sha256::digest(b"bbb").into()));
        std::fs::write(&b, b"xyz").unwrap();
        assert_eq!(source.known_digest(b"b", &b.metadata().unwrap()), None);
    }

    /// What a client may not do: send a file not asked for, send one twice, or stop
    /// before the end. Each stops the upload and fails the gates it left closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_uploads_fail_the_contexts_they_leave_incomplete() {
        let sends: [&[(u32, &[u8])]; 3] = [&[(1, b"bb")], &[(0, b"a"), (0, b"a")], &[(0, b"a")]];
        for (n, sent) in sends.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let main = dir.path().join("main");
            let entries = vec![file("a", 1), file("b", 2), file("c", 1)];
            // "b" is already there as the manifest says: it is not requested.
            let u = upload(&main, entries.clone());
            let mut f = u.tree.begin_file(&entries[1]).unwrap();
            f.write(b"bb").unwrap();
            f.commit().unwrap();
            let u = upload(&main, entries);
            assert_eq!(u.need, vec![0, 2]);
            let (mut writer, gates) = spawn(vec![u], Arc::default());
            let tx = writer.tx.take().unwrap();
            for (i, data) in sent.iter() {
                let _ = tx.send(chunk(0, *i, data)).await;
            }
            drop(tx);
            let err = writer.done.await.unwrap().unwrap_err().to_string();
            let expected = ["was not requested", "was not requested", "went away"][n];
            assert!(err.contains(expected), "case {n}: {err}");
            let gate = gates.of(&main).unwrap();
            assert!(gate.opened().await.is_err(), "case {n}");
        }
    }
}
