//! The OCI layer applier on arbitrary bytes: it may refuse them, but must never panic or
//! write outside the directory it applies into.
#![no_main]

mod escape_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sandbox = escape_check::Sandbox::new();
    let _ = snapshotter::layer::apply_layer_tar(data, sandbox.path());
    sandbox.assert_contained();
});
