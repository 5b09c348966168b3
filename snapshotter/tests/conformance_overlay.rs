//! The conformance suite against overlayfs snapshots (real mounts; needs root).

#[macro_use]
mod conformance;

conformance_suite!(conformance::Harness::new);
