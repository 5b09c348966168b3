//! Reference normalisation follows docker's rules.

use oci::Reference;

/// input, full name, familiar name, repository, tag, digest
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn normalises_like_docker() {
    let table: &[Case] = &[
        // input, full name, familiar name, repository, tag, digest
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest", "library/busybox", Some("latest"), None),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36", "library/busybox", Some("1.36"), None),
        ("user/app", "docker.io/user/app:latest", "user/app:latest", "user/app", Some("latest"), None),
        ("docker.io/library/alpine:3", "docker.io/library/alpine:3", "alpine:3", "library/alpine", Some("3"), None),
        ("index.docker.io/library/alpine", "docker.io/library/alpine:latest", "alpine:latest", "library/alpine", Some("latest"), None),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t", "a/b", Some("t"), None),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest", "app", Some("latest"), None),
        ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest", "busybox", Some("latest"), None),
        ("ghcr.io/o/r/x:v1.2-rc_3", "ghcr.io/o/r/x:v1.2-rc_3", "ghcr.io/o/r/x:v1.2-rc_3", "o/r/x", Some("v1.2-rc_3"), None),
        (
            "x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "docker.io/library/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "library/x",
            None,
            Some("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ),
        (
            "reg.example:443/a-b__c.d:t@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "reg.example:443/a-b__c.d:t@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "reg.example:443/a-b__c.d:t@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a-b__c.d",
            Some("t"),
            Some("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ),
    ];
    for (input, full, familiar, repository, tag, digest) in table {
        let reference = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(reference.full_name(), *full, "{input}");
        assert_eq!(reference.familiar_name(), *familiar, "{input}");
        assert_eq!(reference.repository, *repository, "{input}");
        assert_eq!(reference.tag.as_deref(), *tag, "{input}");
        assert_eq!(reference.digest.as_deref(), *digest, "{input}");
        // The full name parses back to the same reference.
        assert_eq!(Reference::parse(full).unwrap(), reference, "{input}");
    }
    assert_eq!(Reference::parse("busybox").unwrap().registry, "docker.io");
    assert_eq!(
        Reference::parse(
            "x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
        .unwrap()
        .tag_or_latest(),
        "latest"
    );
}

#[test]
fn rejects_malformed_references() {
    for bad in [
        "",
        "Busybox",
        "busybox:",
        "busybox:-tag",
        "a//b",
        "-a",
        "a-",
        "a..b",
        "a___b",
        "x@sha256:short",
        "x@",
        "host:port/x",
        "busybox:tag:more",
        "a b",
    ] {
        assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}
