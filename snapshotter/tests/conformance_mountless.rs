//! The conformance suite against the copying fallback (views copied in and written back
//! instead of mounted). Its own test binary: mountless mode is process-wide.

#[macro_use]
mod conformance;

conformance_suite!(|| {
    snapshotter::set_mountless(true);
    conformance::Harness::new()
});
