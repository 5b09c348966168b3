//! Volumes: named ones outlive their containers and start with the image's content, anonymous
//! ones go with `rm -v`, binds honour `ro`, tmpfs mounts are tmpfs.

use crate::common::{stderr, stdout, Store};

fn ok(store: &Store, args: &[&str]) -> String {
    let out = store.run(args);
    assert!(out.status.success(), "builder {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn a_named_volume_outlives_its_containers_and_starts_with_the_image_content() {
    let store = Store::with_busybox();
    let out = ok(
        &store,
        &[
            "run",
            "--rm",
            "--name",
            "writer",
            "-v",
            "appdata:/etc",
            "busybox",
            "sh",
            "-c",
            "test -f /etc/passwd && echo kept > /etc/mine",
        ],
    );
    assert_eq!(out, "");
    let data = store.root().join("volumes/appdata/_data");
    assert!(data.join("passwd").exists(), "filled from the image's /etc");
    assert_eq!(ok(&store, &["volume", "ls", "-q"]), "appdata\n");
    // A later container sees what the first wrote; read-only when asked.
    let out = store.run(&[
        "run",
        "--rm",
        "--name",
        "reader",
        "--mount",
        "type=volume,source=appdata,target=/data,readonly",
        "busybox",
        "sh",
        "-c",
        "cat /data/mine; touch /data/x",
    ]);
    assert_eq!(stdout(&out), "kept\n");
    assert_ne!(out.status.code(), Some(0), "readonly mount was writable");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );

    ok(
        &store,
        &[
            "create",
            "--name",
            "holder",
            "-v",
            "appdata:/data",
            "busybox",
            "true",
        ],
    );
    let out = store.run(&["volume", "rm", "appdata"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("volume is in use"),
        "{}",
        stderr(&out)
    );
    ok(&store, &["rm", "holder"]);
    assert!(
        data.join("mine").exists(),
        "rm without -v keeps named volumes"
    );
    ok(&store, &["volume", "rm", "appdata"]);
    assert!(!data.exists());
    let out = store.run(&["volume", "inspect", "appdata"]);
    assert!(
        stderr(&out).contains("no such volume: appdata"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn anonymous_volumes_binds_and_tmpfs() {
    let store = Store::with_busybox();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from-host\n").unwrap();
    let bind = format!("{}:/host:ro", host.path().display());
    let out = store.run(&[
        "run",
        "--name",
        "mixer",
        "-v",
        "/anon",
        "-v",
        &bind,
        "--tmpfs",
        "/scratch:size=1m",
        "busybox",
        "sh",
        "-c",
        "cat /host/in; echo x > /anon/f; grep -c ' /scratch tmpfs' /proc/mounts; touch /host/new",
    ]);
    assert_eq!(stdout(&out), "from-host\n1\n", "{}", stderr(&out));
    assert!(!host.path().join("new").exists(), "ro bind was writable");
    let anon = ok(&store, &["volume", "ls", "-q"]);
    let anon = anon.trim();
    assert_eq!(anon.len(), 64, "one anonymous volume: {anon:?}");
    let anon_dir = store.root().join("volumes").join(anon);
    assert!(anon_dir.join("_data/f").exists());
    ok(&store, &["rm", "-v", "mixer"]);
    assert!(!anon_dir.exists(), "rm -v removes anonymous volumes");

    let out = store.run(&["run", "-d", "-v", "data:relative", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("absolute path"), "{}", stderr(&out));
    let out = store.run(&[
        "run",
        "-d",
        "--mount",
        "type=bind,source=/no/such/dir,target=/x",
        "busybox",
        "true",
    ]);
    assert!(
        stderr(&out).contains("bind source path does not exist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ok(&store, &["ps", "-aq"]),
        "",
        "bad mounts make no container"
    );
}

#[test]
fn read_only_rootfs_still_takes_tmpfs_and_volumes() {
    let store = Store::with_busybox();
    let out = store.run(&[
        "run",
        "--rm",
        "--name",
        "frozen",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "-v",
        "rw-data:/data",
        "busybox",
        "sh",
        "-c",
        "touch /x 2>&1; echo ok > /scratch/f && echo ok > /data/f && cat /scratch/f /data/f",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.ends_with("ok\nok\n"), "{text}");
    assert!(store.root().join("volumes/rw-data/_data/f").exists());
}
