//! ADD's archive detection (compression by magic, then a tar header checksum) on arbitrary
//! bytes; whatever it accepts is extracted as ADD would, which must stay inside its root.
#![no_main]

mod escape_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(format)) = solver::archive::detect_in(std::io::Cursor::new(data.to_vec())) else {
        return;
    };
    let sandbox = escape_check::Sandbox::new();
    let archive = sandbox.outer.path().join("archive");
    std::fs::write(&archive, data).expect("writing archive");
    let root = sandbox.path();
    let dest = root.join("dest");
    std::fs::create_dir(&dest).expect("dest dir");
    let _ = solver::archive::extract(&archive, format, root, &dest, None);
    std::fs::remove_file(&archive).expect("removing archive");
    sandbox.assert_contained();
});
