//! Platform parsing and matching follow containerd's normalisation.

use oci::Platform;

#[test]
fn parses_and_normalises_platforms() {
    let arm64: Platform = "linux/aarch64".parse().unwrap();
    assert_eq!(arm64.architecture, "arm64");
    assert_eq!(arm64.to_string(), "linux/arm64");
    let x86: Platform = "linux/x86_64".parse().unwrap();
    assert_eq!(x86.to_string(), "linux/amd64");
    assert_eq!(
        "linux/arm/v6".parse::<Platform>().unwrap().to_string(),
        "linux/arm/v6"
    );
    assert_eq!(
        "linux/armhf".parse::<Platform>().unwrap().to_string(),
        "linux/arm/v7"
    );
    assert_eq!(
        "amd64".parse::<Platform>().unwrap().to_string(),
        "linux/amd64"
    );
    for bad in ["", "linux/", "/amd64", "a/b/c/d"] {
        assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
    }
}

#[test]
fn matching_fills_in_default_variants() {
    let arm64_v8: Platform = "linux/arm64/v8".parse().unwrap();
    let arm64: Platform = "linux/arm64".parse().unwrap();
    let raw = Platform {
        architecture: "arm64".into(),
        os: "linux".into(),
        variant: Some("v8".into()),
        ..Default::default()
    };
    assert!(arm64.matches(&arm64_v8));
    assert!(raw.matches(&arm64));
    assert!(!arm64.matches(&"linux/amd64".parse().unwrap()));
    let arm_v7: Platform = "linux/arm/v7".parse().unwrap();
    assert!(arm_v7.matches(&"linux/arm".parse().unwrap()));
    assert!(!arm_v7.matches(&"linux/arm/v6".parse().unwrap()));
    assert!(Platform::host().matches(&Platform::host()));
}

#[test]
fn platform_serialises_with_oci_field_names() {
    let platform = Platform {
        architecture: "amd64".into(),
        os: "windows".into(),
        os_version: Some("10.0.17763".into()),
        ..Default::default()
    };
    let json = serde_json::to_value(&platform).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"architecture": "amd64", "os": "windows", "os.version": "10.0.17763"})
    );
}
