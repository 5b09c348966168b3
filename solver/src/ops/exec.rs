//! `RUN`: a process run by the executor on a writable snapshot of input 0, with the
//! extra mounts of `mounts` (binds of other inputs, caches, tmpfs, secrets, SSH agents).

pub mod mounts;
mod ssh_proxy;

use crate::graph::{ExecOp, NetworkMode, Op};
use crate::mounts::{ExecMounts, PreparedMounts};
use crate::ops::{commit_new, parent_of, Input, Produced, SolveOp, Step};
use crate::progress::Event;
use crate::worker::{sha256_hex, unique, MountGuard, Worker};
use anyhow::{anyhow, bail, Result};
use executor::{CancelToken, ExecSpec};
use std::path::Path;

pub(crate) struct Exec<'a> {
    /// The vertex's op, serialised into the key.
    pub op: &'a Op,
    pub exec: &'a ExecOp,
}

impl SolveOp for Exec<'_> {
    /// The op and its inputs' keys, a local input read by mounts only by what they read.
    fn cache_key(&mut self, w: &Worker, _: &Step, inputs: &[Input]) -> Result<String> {
        let op_json = serde_json::to_vec(self.op)?;
        let input_keys = ExecMounts(w).exec_input_keys(self.exec, inputs)?;
        let mut parts: Vec<&[u8]> = vec![b"exec", &op_json];
        parts.extend(input_keys.iter().map(|k| k.as_bytes()));
        Ok(sha256_hex(&parts))
    }

    fn run(&mut self, w: &Worker, step: &Step, inputs: &[Input]) -> Result<Produced> {
        run_exec(w, step.vertex, self.exec, inputs, step.cancel).map(Produced::built)
    }
}

/// Runs the op on a new active snapshot of input 0 and commits it; returns its name.
fn run_exec(
    w: &Worker,
    i: usize,
    exec: &ExecOp,
    inputs: &[Input],
    cancel: &CancelToken,
) -> Result<String> {
    crate::inflight::count_exec_step();
    let parent = parent_of(inputs)?;
    let active = unique("active");
    let mounts = w.snapshots.prepare(&active, parent.as_deref())?;
    match run_on(w, i, exec, inputs, &active, &mounts, cancel) {
        Ok(()) => commit_new(w, &active),
        Err(e) => {
            let _ = w.snapshots.remove(&active);
            Err(e)
        }
    }
}

/// Runs the op's process on the active snapshot `active` (mounted by `mounts`), leaving in
/// its upper dir only what the process changed.
fn run_on(
    w: &Worker,
    i: usize,
    exec: &ExecOp,
    inputs: &[Input],
    active: &str,
    mounts: &[snapshotter::Mount],
    cancel: &CancelToken,
) -> Result<()> {
    let prepared = ExecMounts(w).prepare_mounts(exec, inputs, cancel)?;
    // chroot isolation runs in a directory: a copy of the rootfs where nothing may
    // mount, whose changes reach the snapshot when it is released. So does the copying
    // fallback of rootless mode (overlay not mountable there).
    let copied = w.executor.isolation() == executor::Isolation::Chroot || snapshotter::mountless();
    let rootfs_dir = match copied {
        true => Some(MountGuard::mount(&w.root, mounts)?),
        false => None,
    };
    let rootfs = match &rootfs_dir {
        Some(dir) => vec![rootfs_bind(&dir.0)],
        None => rootfs_mounts(mounts),
    };
    let spec = exec_spec(exec, rootfs, &prepared);
    let outcome = run_process(w, i, exec, &spec, cancel)?;
    if let Some(dir) = rootfs_dir {
        dir.release()?;
    }
    let upper = w.snapshots.upper_dir(active)?;
    executor::remove_stubs(&upper, &outcome.created);
    crate::mounts::prune_copied_up_dirs(
        &upper,
        &crate::mounts::lower_dirs(mounts),
        &outcome.created,
    );
    Ok(())
}

/// What the executor runs for `exec` on `rootfs` with its prepared extra mounts.
fn exec_spec(exec: &ExecOp, rootfs: Vec<executor::Mount>, prepared: &PreparedMounts) -> ExecSpec {
    ExecSpec {
        rootfs,
        mounts: prepared.mounts.clone(),
        args: exec.args.clone(),
        env: prepared.environment(&exec.env),
        cwd: exec.cwd.clone(),
        user: exec.user.clone(),
        network: match exec.network {
            NetworkMode::Host => executor::Network::Host,
            NetworkMode::None => executor::Network::None,
        },
        security: executor::Security {
            privileged: exec.insecure,
            ..Default::default()
        },
        extra_hosts: exec.extra_hosts.clone(),
        rlimits: exec
            .ulimits
            .iter()
            .map(|u| executor::Rlimit {
                name: u.name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect(),
        shm_size: exec.shm_size,
        ..Default::default()
    }
}

/// Runs the process, its output sent as the step's log; a non-zero exit is an error (after
/// the debug shell, with `--on-error=shell`).
fn run_process(
    w: &Worker,
    i: usize,
    exec: &ExecOp,
    spec: &ExecSpec,
    cancel: &CancelToken,
) -> Result<executor::RunOutcome> {
    let progress = w.progress.clone();
    let mut on_output = |stream: executor::OutputStream, data: &[u8]| {
        let stream = match stream {
            executor::OutputStream::Stdout => 1,
            executor::OutputStream::Stderr => 2,
        };
        progress.send(Event::Log {
            vertex: i,
            stream,
            data: String::from_utf8_lossy(data).into_owned(),
        });
    };
    let outcome = w
        .executor
        .run_tracked(spec, cancel, &mut on_output)
        .map_err(|e| anyhow!("{e}"))?;
    let code = outcome.exit_code;
    if code != 0 {
        if w.exec_config.on_error_shell && !cancel.is_cancelled() {
            ExecMounts(w).debug_shell(spec, cancel);
        }
        bail!(
            "process {:?} did not complete successfully: exit code: {code}",
            exec.args.join(" ")
        );
    }
    Ok(outcome)
}

/// A snapshot's mounts as the executor's root filesystem mounts.
pub fn rootfs_mounts(mounts: &[snapshotter::Mount]) -> Vec<executor::Mount> {
    mounts
        .iter()
        .map(|m| executor::Mount {
            fstype: m.fstype.clone(),
            source: m.source.clone(),
            target: "/".into(),
            options: m.options.clone(),
        })
        .collect()
}

/// A container's root filesystem for the executor: the snapshot's mounts, or, when views
/// are copies (the copying fallback), a bind of a copy whose changes reach the snapshot when
/// it is released (or dropped).
pub struct RootfsView {
    mounts: Vec<executor::Mount>,
    copy: Option<MountGuard>,
}

impl RootfsView {
    /// `store_root` holds the copy, if one is made.
    pub fn new(store_root: &Path, mounts: &[snapshotter::Mount]) -> Result<RootfsView> {
        if !snapshotter::mountless() {
            return Ok(RootfsView {
                mounts: rootfs_mounts(mounts),
                copy: None,
            });
        }
        let copy = MountGuard::mount(store_root, mounts)?;
        Ok(RootfsView {
            mounts: vec![rootfs_bind(&copy.0)],
            copy: Some(copy),
        })
    }

    pub fn mounts(&self) -> Vec<executor::Mount> {
        self.mounts.clone()
    }

    /// Writes a copy's changes to the snapshot and removes the copy.
    pub fn release(self) -> Result<()> {
        self.copy.map_or(Ok(()), MountGuard::release)
    }
}

/// The root filesystem of a managed container (`run -d`, compose), which outlives this
/// process: mounts only, as a copy would have no owner to write it back.
pub fn managed_rootfs(mounts: &[snapshotter::Mount]) -> Result<Vec<executor::Mount>> {
    if snapshotter::mountless() {
        anyhow::bail!(
            "containers that outlive this command (run -d, --name, limits, volumes, compose) \
             need overlay mounts, which the copying fallback (BUILDER_SNAPSHOTTER=copy, or \
             overlay not mountable in the user namespace) does not make; use run --rm"
        );
    }
    Ok(rootfs_mounts(mounts))
}

/// A directory as the executor's root filesystem.
fn rootfs_bind(dir: &Path) -> executor::Mount {
    executor::Mount {
        fstype: "bind".into(),
        source: dir.to_string_lossy().into_owned(),
        target: "/".into(),
        options: vec!["rbind".into(), "rw".into()],
    }
}
