//! The build graph: the contract between a frontend and the solver.
//!
//! A [`Definition`] is a list of [`Vertex`]es in topological order; each vertex
//! is one typed [`Op`] plus the indexes of the vertices it reads. Nothing here
//! knows about Dockerfiles.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Network mode of an exec op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Host,
    None,
}

/// An extra mount of an exec op, besides its root filesystem (input 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecMount {
    /// Path inside the container.
    pub target: String,
    pub kind: MountKind,
}

/// How concurrent builds share one cache mount (`RUN --mount=type=cache,sharing=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Any number of writers at once.
    #[default]
    Shared,
    /// A writer that finds the cache busy gets a fresh private copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// Owner and permission bits of a file or directory the solver creates for a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOwner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountKind {
    /// Bind of a path of another input (index into the vertex inputs). A writable bind
    /// gets a throwaway overlay: writes never reach the input.
    Bind {
        input: usize,
        source: String,
        readonly: bool,
    },
    Tmpfs {
        size: Option<u64>,
    },
    /// A directory persisted in the store across builds, keyed by `id`. It is not part
    /// of the op's result and does not affect its cache key beyond this description.
    Cache {
        id: String,
        sharing: CacheSharing,
        readonly: bool,
        /// Seeds an empty cache from a path of another input (`from=`, `source=`).
        base: Option<(usize, String)>,
        owner: MountOwner,
    },
    /// A secret from the client (`--secret id=...`), mounted as a file at `target`
    /// and/or exported as the environment variable `env`. Never in a layer or a key.
    Secret {
        id: String,
        required: bool,
        env: Option<String>,
        owner: MountOwner,
    },
    /// The client's SSH agent socket (`--ssh id=...`), mounted as a socket at `target`
    /// (default `/run/buildkit/ssh_agent.N`); `SSH_AUTH_SOCK` points at it.
    Ssh {
        id: String,
        required: bool,
        owner: MountOwner,
    },
}

/// Runs a command with input 0 as its root filesystem; its result is the changed rootfs.
/// A `target` of `""` on a secret mount means "env only".
/// The fields after `mounts` are left out of the serialised op when unset, so that digests
/// (and cache keys) of ops that do not use them stay what they were.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub network: NetworkMode,
    pub mounts: Vec<ExecMount>,
    /// `RUN --security=insecure` (granted by the `security.insecure` entitlement).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Extra `/etc/hosts` lines (`--add-host`), as (name, address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, String)>,
    /// Resource limits (`--ulimit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Size of `/dev/shm` in bytes (`--shm-size`); `None` is the default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
}

/// One resource limit, by docker's name (`nofile`, `nproc`, ...); -1 is unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Ownership for files created by a file op: numeric ids or names resolved in the destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    pub user: String,
    pub group: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum FileAction {
    /// Copies `sources` (paths or wildcards, relative to input `src_input`) to `dest`
    /// (absolute, in input 0) with Docker's COPY rules.
    Copy {
        src_input: usize,
        sources: Vec<String>,
        dest: String,
        chown: Option<Chown>,
        /// Octal (`"0755"`) or symbolic (`"u+x,go-w"`) mode, as `chmod(1)` takes it.
        chmod: Option<String>,
        /// `--exclude` patterns (`.dockerignore` syntax), relative to the source root.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        /// `--parents`: keep each match's path below the source root (or below a `/./` pivot).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        parents: bool,
        /// `ADD`: extract a local tar archive (plain, gzip, bzip2, xz, zstd) into `dest`
        /// instead of copying it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unpack: bool,
    },
    /// Creates a directory (and its parents).
    Mkdir {
        path: String,
        mode: u32,
        chown: Option<Chown>,
    },
    /// Writes a file with the given content.
    Mkfile {
        path: String,
        data: Vec<u8>,
        mode: u32,
        chown: Option<Chown>,
    },
}

/// File operations applied on top of input 0 (or on an empty tree if the op has no inputs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    pub actions: Vec<FileAction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// An empty filesystem.
    Scratch,
    /// A container image's root filesystem.
    Image {
        reference: String,
        platform: String,
    },
    /// A directory provided by the client (the build context or a named context).
    Local {
        name: String,
    },
    Exec(ExecOp),
    File(FileOp),
    /// A file downloaded over HTTP(S) (`ADD URL`): a tree holding just `/<filename>`, with
    /// the mtime from `Last-Modified`. `checksum` (`sha256:...`) is verified when set.
    Http {
        url: String,
        filename: String,
        checksum: Option<String>,
    },
    /// A git checkout (`ADD git@...`/`https://...git#ref:subdir`): the tree of `reference`
    /// (branch, tag or commit; default branch when `None`), below `subdir` when set.
    Git {
        remote: String,
        reference: Option<String>,
        subdir: Option<String>,
        keep_git_dir: bool,
    },
    /// Layers input 1.. on top of input 0 as they are (`COPY --link`): the result's
    /// layers are input 0's followed by each other input's own layers, so a changed
    /// base does not invalidate them.
    Merge,
    /// A copy made ahead of its base: input 1 is a file op applied to an empty tree, inputs 2..
    /// are that op's sources. The result is that file op applied to input 0. When stacking
    /// input 1's layer on input 0 gives exactly that tree (see `rebase::stacks_exactly`) the
    /// layer is reused as it is; otherwise the file op is run again on input 0. This lets a
    /// `COPY` run while the steps before it still run, and keeps its layer blob when only the
    /// base changed; the cache key depends on inputs 0 and 1 only.
    Rebase,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    pub op: Op,
    /// Indexes of earlier vertices this one reads.
    pub inputs: Vec<usize>,
    /// What progress output calls this step, e.g. `[build 2/3] RUN make`.
    pub name: String,
    /// When true the solver must run the op even if a cached result exists.
    #[serde(default)]
    pub ignore_cache: bool,
}

/// A whole build graph with one output vertex.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub vertices: Vec<Vertex>,
    pub output: Option<usize>,
}

impl Definition {
    /// Adds a vertex, reusing an identical existing one (same op and inputs).
    pub fn add(&mut self, vertex: Vertex) -> usize {
        if let Some(i) = self
            .vertices
            .iter()
            .position(|v| v.op == vertex.op && v.inputs == vertex.inputs)
        {
            if vertex.ignore_cache {
                self.vertices[i].ignore_cache = true;
            }
            return i;
        }
        self.vertices.push(vertex);
        self.vertices.len() - 1
    }

    /// Content digest of each vertex: its op plus its inputs' digests (names excluded).
    pub fn digests(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.vertices.len());
        for v in &self.vertices {
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&v.op).unwrap_or_default());
            for &i in &v.inputs {
                h.update(out.get(i).map(String::as_str).unwrap_or("?").as_bytes());
            }
            out.push(format!("sha256:{}", hex::encode(h.finalize())));
        }
        out
    }

    /// Checks that inputs only point backwards and the output exists.
    pub fn validate(&self) -> Result<(), String> {
        for (i, v) in self.vertices.iter().enumerate() {
            if let Some(&bad) = v.inputs.iter().find(|&&j| j >= i) {
                return Err(format!(
                    "vertex {i} reads vertex {bad}, which does not come before it"
                ));
            }
        }
        match self.output {
            Some(o) if o < self.vertices.len() => Ok(()),
            Some(o) => Err(format!("output vertex {o} does not exist")),
            None => Err("definition has no output".into()),
        }
    }

    /// The vertices the output depends on (including itself), in topological order.
    pub fn reachable(&self) -> Vec<usize> {
        self.reachable_from(&self.output.into_iter().collect::<Vec<_>>())
    }

    /// The vertices any of `outputs` depends on (including themselves), in topological order.
    pub fn reachable_from(&self, outputs: &[usize]) -> Vec<usize> {
        let mut seen = vec![false; self.vertices.len()];
        let mut stack: Vec<usize> = outputs.to_vec();
        while let Some(i) = stack.pop() {
            if i >= seen.len() || std::mem::replace(&mut seen[i], true) {
                continue;
            }
            stack.extend(self.vertices[i].inputs.iter().copied());
        }
        (0..self.vertices.len()).filter(|&i| seen[i]).collect()
    }

    /// Human-readable dump of the graph, one vertex per paragraph.
    pub fn render(&self) -> String {
        let outputs: Vec<usize> = self.output.into_iter().collect();
        let mut s = self.render_vertices(&outputs);
        if let Some(o) = self.output {
            s.push_str(&format!("output: #{o}\n"));
        }
        s
    }

    /// The paragraphs of [`render`](Self::render) for every vertex `outputs` need.
    pub fn render_vertices(&self, outputs: &[usize]) -> String {
        use std::fmt::Write as _;
        let digests = self.digests();
        let mut s = String::new();
        for i in self.reachable_from(outputs) {
            let v = &self.vertices[i];
            let _ = writeln!(s, "#{i} {}  {}", v.name, &digests[i][7..19]);
            let _ = writeln!(s, "    inputs: {:?}", v.inputs);
            let op = serde_json::to_string(&v.op).unwrap_or_default();
            let _ = writeln!(s, "    op: {op}");
        }
        s
    }
}
