//! End-to-end builds of Dockerfile language features: heredocs, ONBUILD, named
//! contexts and image config instructions, checked on exported files and by skopeo.

use crate::common::*;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

fn build_ok(store: &Store, ctx: &Path, extra: &[&str]) -> std::process::Output {
    let out = store.build(ctx, extra);
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    out
}

#[test]
fn heredocs_write_files_and_run_scripts() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nARG WHO=you\n\
         COPY <<EOF /greet.txt\nhi $WHO \"quoted\"\nEOF\n\
         COPY --chmod=0755 <<'EOF' /run.sh\n#!/bin/sh\necho $HOME\nEOF\n\
         RUN <<EOF\nstat -c %a /run.sh > /mode\nEOF\n\
         RUN cat <<-A > /multi\n\tline1\n\tA\n",
    )]);
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    build_ok(&store, ctx.path(), &["-o", &out_arg]);
    let read = |p: &str| std::fs::read_to_string(dest.path().join(p)).unwrap();
    assert_eq!(read("greet.txt"), "hi you \"quoted\"\n");
    assert_eq!(read("run.sh"), "#!/bin/sh\necho $HOME\n");
    assert_eq!(read("mode"), "755\n");
    assert_eq!(read("multi"), "line1\n");
    let mode = std::fs::metadata(dest.path().join("greet.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_not_inherited() {
    let store = Store::with_busybox();
    let parent = context(&[(
        "Dockerfile",
        "FROM busybox\nONBUILD RUN echo triggered > /onbuild.txt\nONBUILD COPY f.txt /f.txt\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let parent_oci = dir.path().join("parent.tar");
    let parent_out = format!("type=oci,dest={}", parent_oci.display());
    build_ok(&store, parent.path(), &["-t", "parent", "-o", &parent_out]);
    assert_eq!(
        skopeo_config(&parent_oci)["config"]["OnBuild"],
        serde_json::json!(["RUN echo triggered > /onbuild.txt", "COPY f.txt /f.txt"])
    );

    let child = context(&[
        (
            "Dockerfile",
            "FROM parent\nRUN cat /onbuild.txt /f.txt > /both\n",
        ),
        ("f.txt", "from the child context\n"),
    ]);
    let child_oci = dir.path().join("child.tar");
    let dest = tempfile::tempdir().unwrap();
    let child_out = format!("type=oci,dest={}", child_oci.display());
    let local_out = format!("type=local,dest={}", dest.path().display());
    build_ok(&store, child.path(), &["-o", &child_out, "-o", &local_out]);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("both")).unwrap(),
        "triggered\nfrom the child context\n"
    );
    let config = skopeo_config(&child_oci);
    assert!(
        config["config"]["OnBuild"].is_null()
            || config["config"]["OnBuild"] == serde_json::json!([]),
        "{config}"
    );
}

#[test]
fn named_local_context_with_its_own_dockerignore() {
    let store = Store::with_busybox();
    let named = context(&[
        ("hello.txt", "hello from named\n"),
        ("secret.txt", "do not copy\n"),
        (".dockerignore", "secret.txt\n"),
    ]);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nCOPY --from=extra . /ctx/\nRUN --mount=from=extra,target=/m cat /m/hello.txt > /via-mount || true\n",
    )]);
    let dest = tempfile::tempdir().unwrap();
    let out_arg = format!("type=local,dest={}", dest.path().display());
    let named_arg = format!("extra={}", named.path().display());
    let graph = store.run(&[
        "build",
        "--print=graph",
        "--build-context",
        &named_arg,
        ctx.path().to_str().unwrap(),
    ]);
    assert!(graph.status.success(), "{}", stderr(&graph));
    assert!(
        stdout(&graph).contains(r#""name":"context:extra""#),
        "{}",
        stdout(&graph)
    );
    // RUN mounts are executed by another part of the solver; build only the COPY here.
    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY --from=extra . /ctx/\n")]);
    build_ok(
        &store,
        ctx.path(),
        &["--build-context", &named_arg, "-o", &out_arg],
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("ctx/hello.txt")).unwrap(),
        "hello from named\n"
    );
    assert!(!dest.path().join("ctx/secret.txt").exists());

    let bad = store.build(ctx.path(), &["--build-context", "extra=s3://x"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--build-context"), "{}", stderr(&bad));
}

#[test]
fn config_instructions_reach_the_image_config() {
    let store = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         HEALTHCHECK --interval=30s --retries=3 CMD wget -q localhost\n\
         ONBUILD RUN echo child\n\
         STOPSIGNAL SIGTERM\n\
         VOLUME /data\n\
         EXPOSE 8080 53/udp\n\
         LABEL org.example.name=demo\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("img.tar");
    let out_arg = format!("type=oci,dest={}", oci.display());
    build_ok(&store, ctx.path(), &["-o", &out_arg]);
    let c = &skopeo_config(&oci)["config"];
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q localhost"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 3);
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo child"]));
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert!(c["Volumes"]["/data"].is_object(), "{c}");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
    assert!(c["ExposedPorts"]["53/udp"].is_object(), "{c}");
    assert_eq!(c["Labels"]["org.example.name"], "demo");
}

#[test]
fn build_checks_warn_in_output_and_check_mode_fails() {
    let store = Store::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nMAINTAINER me\nCMD echo hi\n")]);
    // --check reports without building and exits non-zero.
    let check = store.run(&["build", "--check", ctx.path().to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let report = stdout(&check);
    assert!(
        report.contains("Dockerfile:2:1: WARN: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"),
        "{report}"
    );
    assert!(
        report.contains("Dockerfile:3:1: WARN: JSONArgsRecommended:"),
        "{report}"
    );
    assert!(report.contains("2 warnings have been found"), "{report}");

    // A build shows them and still succeeds; rawjson carries them as warning events.
    let plain = store.run(&["build", "--progress=plain", ctx.path().to_str().unwrap()]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(
        stderr(&plain).contains("WARN: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)"),
        "{}",
        stderr(&plain)
    );
    let raw = store.build(ctx.path(), &[]);
    let warnings: Vec<String> = events(&raw)
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("Dockerfile:2:1: MaintainerDeprecated:"),
        "{warnings:?}"
    );

    // Skipped rules are not reported; a clean check exits 0.
    let skipped = context(&[(
        "Dockerfile",
        "# check=skip=MaintainerDeprecated,JSONArgsRecommended\nFROM busybox\nMAINTAINER me\nCMD echo hi\n",
    )]);
    let check = store.run(&["build", "--check", skipped.path().to_str().unwrap()]);
    assert!(check.status.success(), "{}", stdout(&check));
    assert!(stdout(&check).contains("no warnings found"));

    // check=error=true fails the build before anything runs.
    let strict = context(&[(
        "Dockerfile",
        "# check=error=true\nFROM busybox\nRUN touch /ran\nWORKDIR rel\n",
    )]);
    let out = store.build(strict.path(), &["-t", "strict"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("WorkdirRelativePath"),
        "{}",
        stderr(&out)
    );
    assert!(!events(&out).iter().any(|e| e["event"] == "started"));
    let images = stdout(&store.run(&["images"]));
    assert!(!images.contains("strict"), "{images}");
}

#[test]
fn oci_layout_context_is_a_base_image_and_a_copy_source() {
    let store = Store::with_busybox();
    // An OCI layout directory, as another tool (or builder itself) writes it.
    let base = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo from-layout > /marker\n",
    )]);
    let layout = tempfile::tempdir().unwrap();
    let layout_arg = format!(
        "type=oci,dest={},tar=false,name=example.com/base:v1",
        layout.path().display()
    );
    build_ok(&store, base.path(), &["-o", &layout_arg]);

    // A fresh store knows nothing of that image: everything comes from the layout.
    let fresh = Store::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM base\nCOPY --from=base /marker /copied\nRUN cat /marker /copied > /both\n",
    )]);
    for selector in ["", ":v1"] {
        let dest = tempfile::tempdir().unwrap();
        let out_arg = format!("type=local,dest={}", dest.path().display());
        let named = format!("base=oci-layout://{}{selector}", layout.path().display());
        build_ok(
            &fresh,
            ctx.path(),
            &["--build-context", &named, "-o", &out_arg],
        );
        assert_eq!(
            std::fs::read_to_string(dest.path().join("both")).unwrap(),
            "from-layout\nfrom-layout\n"
        );
    }
    let missing = format!("base=oci-layout://{}:nope", layout.path().display());
    let out = fresh.build(ctx.path(), &["--build-context", &missing]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has no image \"nope\""),
        "{}",
        stderr(&out)
    );
}
