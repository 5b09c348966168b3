//! Incremental COPY: a rebuild after a few copied files changed splices the new layer from
//! the previous one. Its layer must be byte for byte what a full copy of the same context
//! gives in a fresh store, whichever path (splice or full copy) the change takes.

use crate::common::{build_oci_image, context, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const DOCKERFILE: &str = "FROM busybox\nCOPY src /\n";
const LONG_NAME: &str = "a-file-name-long-enough-that-its-path-in-the-layer-needs-a-pax-header-because-ustar-holds-only-a-hundred-bytes.txt";

/// Splices since the last full copy, from the step's incremental record.
fn splices(store: &Store) -> u64 {
    let dir = store.root().join("cache/incremental");
    let records: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(records.len(), 1, "one COPY step, one record");
    let record = records.into_iter().next().unwrap().unwrap().path();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    json["spliced"].as_u64().unwrap()
}

/// The last layer blob (the COPY's) of `ctx` built in `store`.
fn copy_layer(store: &Store, ctx: &Path) -> Vec<u8> {
    let image = build_oci_image(store, ctx, &[]);
    std::fs::read(image.layers.last().unwrap()).unwrap()
}

fn source_tree() -> tempfile::TempDir {
    let ctx = context(&[
        ("Dockerfile", DOCKERFILE),
        ("src/app/main.txt", "main\n"),
        ("src/app/lib/util.txt", "util\n"),
        ("src/readme", "readme\n"),
    ]);
    std::fs::hard_link(
        ctx.path().join("src/readme"),
        ctx.path().join("src/readme.link"),
    )
    .unwrap();
    std::fs::write(ctx.path().join("src/solo"), "solo\n").unwrap();
    // A name longer than USTAR's 100-byte name field.
    std::fs::write(ctx.path().join("src/app").join(LONG_NAME), "long\n").unwrap();
    // Old times, so that a change gives its directory another mtime in the layer.
    let touch = std::process::Command::new("find")
        .arg(ctx.path().join("src"))
        .args(["-exec", "touch", "-h", "-d", "@1600000000", "{}", "+"])
        .status()
        .unwrap();
    assert!(touch.success());
    ctx
}

/// Builds the tree, applies `change`, rebuilds, and checks the rebuilt layer against a full
/// build of the changed tree in a fresh store; `spliced`: whether the rebuild splices.
fn check(change: impl FnOnce(&Path), spliced: bool) {
    let ctx = source_tree();
    let store = Store::with_busybox();
    let first = copy_layer(&store, ctx.path());
    assert_eq!(splices(&store), 0);
    change(&ctx.path().join("src"));
    let incremental = copy_layer(&store, ctx.path());
    assert_ne!(first, incremental, "the change is not in the layer");
    assert_eq!(splices(&store), spliced as u64, "spliced: {spliced}");
    let fresh = Store::with_busybox();
    let full = copy_layer(&fresh, ctx.path());
    assert!(
        incremental == full,
        "the incremental layer differs from a full copy's"
    );
}

#[test]
fn a_changed_file_is_spliced_into_the_same_layer_a_full_copy_gives() {
    // Longer than a tar block: the entries after it move.
    check(
        |src| std::fs::write(src.join("app/main.txt"), "x".repeat(1500)).unwrap(),
        true,
    );
    check(
        |src| std::fs::write(src.join("app").join(LONG_NAME), "longer\n").unwrap(),
        true,
    );
}

#[test]
fn a_mode_change_is_spliced_into_the_same_layer_a_full_copy_gives() {
    check(
        |src| {
            let perms = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(src.join("app/lib/util.txt"), perms).unwrap();
        },
        true,
    );
}

#[test]
fn changes_beside_hard_links_splice_and_changes_to_them_copy_in_full() {
    check(
        |src| std::fs::write(src.join("solo"), "changed\n").unwrap(),
        true,
    );
    check(
        |src| std::fs::write(src.join("readme"), "changed\n").unwrap(),
        false,
    );
}

#[test]
fn added_and_removed_files_are_spliced_into_the_same_layer_a_full_copy_gives() {
    // Into and out of a copied directory (whose entry changes with them) and the top one.
    check(
        |src| std::fs::write(src.join("app/lib/new.txt"), "new\n").unwrap(),
        true,
    );
    check(
        |src| std::fs::write(src.join("new-top"), "top\n").unwrap(),
        true,
    );
    check(
        |src| std::fs::remove_file(src.join("app/lib/util.txt")).unwrap(),
        true,
    );
    check(|src| std::fs::remove_file(src.join("solo")).unwrap(), true);
}

#[test]
fn a_new_directory_or_symlink_is_copied_in_full_to_the_same_layer() {
    check(
        |src| {
            std::fs::create_dir(src.join("app/fresh")).unwrap();
            std::fs::write(src.join("app/fresh/f"), "f\n").unwrap();
        },
        false,
    );
    check(
        |src| std::os::unix::fs::symlink("main.txt", src.join("app/link")).unwrap(),
        false,
    );
}

#[test]
fn a_spliced_layer_runs_with_the_changed_files() {
    let ctx = source_tree();
    let store = Store::with_busybox();
    let build = |what| {
        let out = store.build(ctx.path(), &["-t", "inc"]);
        assert!(
            out.status.success(),
            "{what}: {}",
            crate::common::stderr(&out)
        );
    };
    build("first build");
    std::fs::write(ctx.path().join("src/app/main.txt"), "changed main\n").unwrap();
    std::fs::write(ctx.path().join("src/app/added.txt"), "added\n").unwrap();
    std::fs::remove_file(ctx.path().join("src/solo")).unwrap();
    build("rebuild");
    assert_eq!(splices(&store), 1);
    let run = store.run(&[
        "run",
        "--rm",
        "inc",
        "sh",
        "-c",
        "cat /app/main.txt /app/added.txt; ls /solo",
    ]);
    let out = crate::common::stdout(&run);
    assert_eq!(
        out,
        "changed main\nadded\n",
        "{}",
        crate::common::stderr(&run)
    );
    assert!(!run.status.success(), "/solo is still there");
}
