//! `--cache-to/--cache-from type=gha` against a cache service written from the Actions cache
//! v2 protocol (tests/e2e/common/gha_server.rs): a round trip onto a fresh store, 429 retries,
//! expired signed URLs, and scopes per image name.

use crate::common::gha_server::GhaServer;
use crate::common::*;
use std::path::Path;
use std::process::Output;

const DOCKERFILE: &str = "\
FROM busybox AS build
RUN echo built > /artifact
FROM busybox
COPY a.txt /a.txt
RUN cat /a.txt > /copy.txt
COPY --from=build /artifact /artifact
";

/// Stores made at different moments hold the same base image (as two runners would).
fn store_with_busybox() -> Store {
    let s = Store::new();
    let out = s
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["import", busybox_tar().to_str().unwrap(), "busybox:latest"])
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", stderr(&out));
    s
}

/// A build as a runner would run it: the service's URL and token in the environment.
fn build(server: &GhaServer, store: &Store, ctx: &Path, extra: &[&str]) -> Output {
    store
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .env("ACTIONS_RESULTS_URL", &server.url)
        .env("ACTIONS_RUNTIME_TOKEN", &server.token)
        .args(["build", "--progress=rawjson"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "build failed: {}", stderr(&out));
    out
}

#[test]
fn round_trip_gives_cached_steps_despite_429s_and_expired_urls() {
    let server = GhaServer::start();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "hello\n")]);
    let first = store_with_busybox();
    // The first blob upload gets an expired URL: the entry is created again for a fresh one.
    server.expire_next_urls(1);
    let args = ["-t", "app", "--cache-to", "type=gha,mode=max"];
    let out = ok(build(&server, &first, ctx.path(), &args));
    assert_eq!(step_names(&out, "started").len(), 4, "{}", stderr(&out));
    assert_eq!(server.with_state(|s| s.expired_refused), 1);
    let keys = server.keys();
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("builder-index-1-app#"))
            .count(),
        1
    );
    assert!(
        keys.iter()
            .filter(|k| k.starts_with("builder-blob-1-sha256:"))
            .count()
            >= 4
    );

    let fresh = store_with_busybox();
    server.throttle_next(2);
    server.expire_next_urls(1);
    let args = ["-t", "app", "--cache-from", "type=gha"];
    let out = ok(build(&server, &fresh, ctx.path(), &args));
    assert_eq!(
        step_names(&out, "started"),
        Vec::<String>::new(),
        "{}",
        stderr(&out)
    );
    assert_eq!(step_names(&out, "cached").len(), 4, "{}", stderr(&out));
    server.with_state(|s| {
        assert_eq!(s.throttled, 2, "the 429s were not retried");
        assert_eq!(
            s.expired_refused, 2,
            "an expired download URL was not renewed"
        );
        assert_eq!(s.bad_auth, 0);
    });
    // The lazily fetched layers are the real ones: the image runs.
    let run = fresh.run(&["run", "--rm", "app", "cat", "/copy.txt", "/artifact"]);
    assert_eq!(stdout(&run), "hello\nbuilt\n", "{}", stderr(&run));
}

#[test]
fn default_scope_is_per_image_name() {
    let server = GhaServer::start();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "scoped\n")]);
    let one = store_with_busybox();
    ok(build(
        &server,
        &one,
        ctx.path(),
        &["-t", "one", "--cache-to", "type=gha"],
    ));

    // Another image of the same repository neither reads nor replaces `one`'s cache.
    let two = store_with_busybox();
    let args = [
        "-t",
        "two",
        "--cache-from",
        "type=gha",
        "--cache-to",
        "type=gha",
    ];
    let out = ok(build(&server, &two, ctx.path(), &args));
    assert_eq!(step_names(&out, "cached"), Vec::<String>::new());
    assert!(
        stderr(&out).contains("no cache for scope \"two\""),
        "{}",
        stderr(&out)
    );
    let indexes: Vec<String> = server
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("builder-index-1-"))
        .map(|k| k.split('#').next().unwrap().to_string())
        .collect();
    assert_eq!(indexes, ["builder-index-1-one", "builder-index-1-two"]);

    // An explicit scope shares it on purpose.
    let three = store_with_busybox();
    let args = ["-t", "three", "--cache-from", "type=gha,scope=one"];
    let out = ok(build(&server, &three, ctx.path(), &args));
    // mode=min: the final stage's three steps (the intermediate stage is not exported).
    assert_eq!(step_names(&out, "cached").len(), 3, "{}", stderr(&out));
}

#[test]
fn a_wrong_token_fails_the_export_clearly() {
    let server = GhaServer::start();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo x > /x\n")]);
    let store = store_with_busybox();
    let out = build(
        &server,
        &store,
        ctx.path(),
        &["--cache-to", "type=gha,token=wrong,scope=s"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("type=gha,scope=s") && err.contains("unauthenticated"),
        "{err}"
    );
    assert!(
        !err.contains("wrong"),
        "the token leaked into the error: {err}"
    );
    assert!(server.with_state(|s| s.bad_auth) >= 1);
    assert_eq!(
        server.keys(),
        Vec::<String>::new(),
        "nothing is stored without the token"
    );
}
