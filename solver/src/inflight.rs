//! Steps in flight in this process, across solvers: a build server runs many builds at once,
//! each with its own solver over one store; a step another build is running under the same
//! cache key is waited for (and then answered from the cache) instead of run twice, as
//! BuildKit's shared solver does.

use executor::CancelToken;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The (store, cache key) pairs being produced now, and a wake-up for those waiting.
static RUNNING: Mutex<Option<HashSet<(PathBuf, String)>>> = Mutex::new(None);
static DONE: Condvar = Condvar::new();
static EXEC_STEPS_RUN: AtomicU64 = AtomicU64::new(0);

/// RUN steps that really ran in this process (not answered from the cache).
pub fn exec_steps_run() -> u64 {
    EXEC_STEPS_RUN.load(Ordering::Relaxed)
}

pub(crate) fn count_exec_step() {
    EXEC_STEPS_RUN.fetch_add(1, Ordering::Relaxed);
}

/// The right to produce the result of one cache key in one store; released when dropped.
pub(crate) struct Claim((PathBuf, String));

/// Waits until no other step of this process is producing `key` in `root`, then claims it.
/// Blocking (the solver's steps run on blocking threads); gives up when `cancel` fires.
pub(crate) fn claim(root: &Path, key: &str, cancel: &CancelToken) -> anyhow::Result<Claim> {
    let id = (root.to_path_buf(), key.to_string());
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    while running.get_or_insert_default().contains(&id) {
        if cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        running = DONE
            .wait_timeout(running, Duration::from_millis(100))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    running.get_or_insert_default().insert(id.clone());
    Ok(Claim(id))
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        running.get_or_insert_default().remove(&self.0);
        DONE.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_waits_for_the_first_and_gives_up_on_cancel() {
        let root = Path::new("/nonexistent-inflight-test");
        let first = claim(root, "k", &CancelToken::new()).unwrap();
        let cancel = CancelToken::new();
        let waiter = {
            let cancel = cancel.clone();
            std::thread::spawn(move || claim(root, "k", &cancel).is_err())
        };
        std::thread::sleep(Duration::from_millis(150));
        assert!(!waiter.is_finished(), "the second claim did not wait");
        cancel.cancel();
        assert!(waiter.join().unwrap(), "a cancelled wait must fail");
        // Another key, or the same key once released, is free.
        drop(claim(root, "other", &CancelToken::new()).unwrap());
        drop(first);
        drop(claim(root, "k", &CancelToken::new()).unwrap());
    }
}
