//! Property test: lowering random Dockerfiles (valid instructions, flags and heredocs
//! mixed with junk) never panics, and every graph it returns is well formed.

use frontend::lower::{lower, BuildOptions, ImageResolver, NamedContext};
use oci::image::ImageConfig;
use proptest::prelude::*;

struct Resolver;

impl ImageResolver for Resolver {
    fn resolve(&self, reference: &str, _platform: &str) -> anyhow::Result<(String, ImageConfig)> {
        if reference.contains("missing") || reference.is_empty() {
            anyhow::bail!("not found");
        }
        let mut config = ImageConfig::default();
        if reference.contains("trig") {
            config.config.on_build = vec![
                "RUN echo trig".into(),
                "COPY --from=0 / /x".into(),
                "RUN --mount=type=cache,target=/c true".into(),
                "BAD instruction".into(),
            ];
        }
        Ok((format!("{reference}@sha256:{}", "0".repeat(64)), config))
    }
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM busybox".to_string()),
        Just("FROM busybox AS a".to_string()),
        Just("FROM a AS b".to_string()),
        Just("FROM trig".to_string()),
        Just("FROM ctx".to_string()),
        Just("FROM scratch".to_string()),
        Just("FROM --platform=$BUILDPLATFORM busybox AS Build".to_string()),
        Just("FROM ${BASE:-busybox}".to_string()),
        Just("ARG BASE=missing".to_string()),
        Just("ARG X=1 Y".to_string()),
        Just("ENV A=$X B=\"${Y:-z}\"".to_string()),
        Just("ENV legacy value".to_string()),
        Just("WORKDIR rel/$A".to_string()),
        Just("RUN echo hi".to_string()),
        Just("RUN --network=none --security=sandbox true".to_string()),
        Just("RUN --security=insecure true".to_string()),
        Just("RUN --mount=type=cache,target=/c,sharing=locked,mode=0700 true".to_string()),
        Just("RUN --mount=type=bind,from=a,source=/x,target=/y,rw true".to_string()),
        Just("RUN --mount=from=ctx,target=/y true".to_string()),
        Just("RUN --mount=type=secret,id=s,env=S,required true".to_string()),
        Just("RUN --mount=type=ssh --mount=type=ssh,id=x true".to_string()),
        Just("RUN --mount=type=tmpfs,target=/t,size=1g true".to_string()),
        Just("RUN --mount=type=secret true".to_string()),
        Just("RUN --mount=type=bind,\"target=/a,b\" true".to_string()),
        Just("RUN --mount=type=cache,target=$UNSET true".to_string()),
        Just("RUN <<EOF\n#!/bin/sh\necho\nEOF".to_string()),
        Just("RUN python3 <<EOF\nprint(1)\nEOF".to_string()),
        Just("RUN <<-EOF\n\tx\n\tEOF".to_string()),
        Just("COPY <<EOF <<'B' /d/\n$A\nEOF\nb\nB".to_string()),
        Just("COPY --from=a --chmod=u+x,g=u --chown=1:1 x /y".to_string()),
        Just("COPY --from=1 / /".to_string()),
        Just("COPY --from=b x y".to_string()),
        Just("COPY --link --exclude=*.md --parents a/./b /c/".to_string()),
        Just("COPY --chmod=zz a b".to_string()),
        Just("COPY [\"a\", \"b\", \"/c/\"]".to_string()),
        Just("ADD --checksum=sha256:aa https://e.com/f.tgz /x".to_string()),
        Just("ADD --keep-git-dir https://h/r.git#main:sub /src".to_string()),
        Just("ADD --unpack=false f.tar /".to_string()),
        Just("ADD --checksum=sha256:aa local /x".to_string()),
        Just("ADD git@h:r.git /".to_string()),
        Just("ONBUILD RUN echo later".to_string()),
        Just("ONBUILD FROM x".to_string()),
        Just("ONBUILD".to_string()),
        Just("CMD echo".to_string()),
        Just("CMD [\"a\"]".to_string()),
        Just("ENTRYPOINT x".to_string()),
        Just("SHELL [\"/bin/sh\", \"-ec\"]".to_string()),
        Just("SHELL x".to_string()),
        Just("HEALTHCHECK --interval=5s CMD true".to_string()),
        Just("HEALTHCHECK --interval=5 CMD true".to_string()),
        Just("HEALTHCHECK NONE".to_string()),
        Just("EXPOSE 80 53/udp $P".to_string()),
        Just("VOLUME /v".to_string()),
        Just("VOLUME [\"\"]".to_string()),
        Just("STOPSIGNAL SIGTERM".to_string()),
        Just("LABEL a=b".to_string()),
        Just("USER 1000:1000".to_string()),
        Just("MAINTAINER me".to_string()),
        Just("# check=skip=all".to_string()),
        Just("# check=error=true".to_string()),
        Just("BOGUS x".to_string()),
        "(RUN|COPY|ADD|FROM) --[a-z]{1,6}=[ -~]{0,10} [ -~]{0,10}",
        "RUN --mount=(type=(bind|cache|tmpfs|secret|ssh),)?(target=/[a-z]{1,3},)?[a-z=,/$]{0,16} x",
        "[ -~]{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn lowering_never_panics(lines in proptest::collection::vec(line(), 1..8), target in proptest::option::of("[ab]")) {
        // Mostly start with a stage so that lowering gets past the first FROM.
        let source = format!("{}{}", if lines.len() % 4 == 0 { "" } else { "FROM busybox AS a\n" }, lines.join("\n"));
        let Ok(ast) = frontend::parse(source.as_bytes()) else {
            return Ok(());
        };
        let mut opts = BuildOptions {
            dockerfile_name: "Dockerfile".into(),
            platform: "linux/amd64".into(),
            build_platform: "linux/amd64".into(),
            target,
            ..Default::default()
        };
        opts.named_contexts.insert("ctx".into(), NamedContext::Local { local_name: "context:ctx".into() });
        if let Ok(lowered) = lower(&ast, source.as_bytes(), &opts, &Resolver) {
            prop_assert!(lowered.definition.validate().is_ok(), "invalid graph for:\n{}", source);
            for w in &lowered.warnings {
                prop_assert!(w.line >= 1 && w.column >= 1);
            }
        }
    }
}
