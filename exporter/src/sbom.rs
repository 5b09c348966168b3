//! An SPDX 2.3 SBOM of an image: the packages its final filesystem holds, found by reading
//! its layers in order (whiteouts applied): dpkg status, the apk database, Python dist-info
//! `METADATA`, `package.json` under `node_modules`, and Go build info in executables.

use crate::{open_layer, ContentStore, Descriptor, Result};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::Read;

/// Executables larger than this are not searched for Go build info.
const MAX_GO_BINARY: u64 = 256 << 20;
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// A package found in the image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// deb, apk, pypi, npm or golang (the purl type).
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    pub license: Option<String>,
    /// The file it was found in.
    pub source: String,
}

/// The files of interest in the final filesystem: path → (layer index, content).
type Found = BTreeMap<String, (usize, Vec<u8>)>;

/// What an image holds: its packages and its os-release `ID` (for deb/apk purls).
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub packages: Vec<Package>,
    pub distro: Option<String>,
}

/// Lists the packages of the image whose layers (base first) are `layers`.
pub fn scan_layers(content: &ContentStore, layers: &[Descriptor]) -> Result<Scan> {
    let mut found = Found::new();
    for (i, layer) in layers.iter().enumerate() {
        let mut archive = tar::Archive::new(open_layer(content, layer)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
            if base == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                found.retain(|p, (layer, _)| *layer == i || !p.starts_with(&prefix));
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = if dir.is_empty() {
                    gone.to_string()
                } else {
                    format!("{dir}/{gone}")
                };
                let prefix = format!("{gone}/");
                found.retain(|p, _| p != &gone && !p.starts_with(&prefix));
                continue;
            }
            found.remove(&path);
            let header = entry.header();
            let executable = header.mode().unwrap_or(0) & 0o111 != 0;
            let size = header.size().unwrap_or(0);
            if !header.entry_type().is_file() || !(interesting(&path) || executable) {
                continue;
            }
            if executable && !interesting(&path) && size > MAX_GO_BINARY {
                continue;
            }
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data)?;
            if !interesting(&path) {
                // Keep only what a Go binary's build info says, not the binary.
                match go_buildinfo(&data) {
                    Some(info) => data = info.into_bytes(),
                    None => continue,
                }
            }
            found.insert(path, (i, data));
        }
    }
    let distro = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .filter_map(|p| found.get(*p))
        .find_map(|(_, text)| {
            let text = String::from_utf8_lossy(text);
            let id = text.lines().find_map(|l| l.strip_prefix("ID="))?;
            Some(id.trim_matches('"').to_string())
        });
    Ok(Scan {
        packages: packages(&found),
        distro,
    })
}

fn interesting(path: &str) -> bool {
    path == "var/lib/dpkg/status"
        || path == "lib/apk/db/installed"
        || path.ends_with(".dist-info/METADATA")
        || (path.contains("node_modules/")
            && path.ends_with("/package.json")
            && npm_package_dir(path))
        || path == "etc/os-release"
        || path == "usr/lib/os-release"
}

/// `…/node_modules/NAME/package.json` or `…/node_modules/@SCOPE/NAME/package.json`.
fn npm_package_dir(path: &str) -> bool {
    let parts: Vec<&str> = path.rsplit('/').collect();
    matches!(parts.as_slice(), ["package.json", _, "node_modules", ..])
        || matches!(parts.as_slice(), ["package.json", _, s, "node_modules", ..] if s.starts_with('@'))
}

fn packages(found: &Found) -> Vec<Package> {
    let mut out = Vec::new();
    for (path, (_, data)) in found {
        let text = String::from_utf8_lossy(data);
        if path == "var/lib/dpkg/status" {
            out.extend(stanzas(&text).filter_map(|f| {
                let installed = f.get("Status").is_some_and(|s| s.ends_with(" installed"));
                installed
                    .then(|| package("deb", &f, "Package", "Version", "Architecture", None, path))?
            }));
        } else if path == "lib/apk/db/installed" {
            out.extend(
                stanzas(&text).filter_map(|f| package("apk", &f, "P", "V", "A", Some("L"), path)),
            );
        } else if path.ends_with(".dist-info/METADATA") {
            let head = text.split("\n\n").next().unwrap_or("");
            let fields = stanzas(head).next().unwrap_or_default();
            out.extend(package(
                "pypi",
                &fields,
                "Name",
                "Version",
                "",
                Some("License"),
                path,
            ));
        } else if path.ends_with("package.json") {
            out.extend(npm_package(data, path));
        } else if path.ends_with("os-release") {
            continue;
        } else {
            out.extend(go_packages(&text, path));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.kind == b.kind && a.name == b.name && a.version == b.version);
    out
}

/// RFC 822-style paragraphs (dpkg status, apk's `K:value` lines) as field maps.
fn stanzas(text: &str) -> impl Iterator<Item = BTreeMap<String, String>> + '_ {
    text.split("\n\n").map(|para| {
        let mut fields = BTreeMap::new();
        for line in para.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // continuation lines
            }
            let split = line.split_once(": ").or_else(|| line.split_once(':'));
            if let Some((k, v)) = split {
                fields
                    .entry(k.trim().to_string())
                    .or_insert_with(|| v.trim().to_string());
            }
        }
        fields
    })
}

fn package(
    kind: &'static str,
    f: &BTreeMap<String, String>,
    name: &str,
    version: &str,
    arch: &str,
    license: Option<&str>,
    source: &str,
) -> Option<Package> {
    Some(Package {
        kind,
        name: f.get(name).filter(|n| !n.is_empty())?.clone(),
        version: f.get(version).cloned().unwrap_or_default(),
        arch: f.get(arch).cloned(),
        license: license.and_then(|l| f.get(l)).cloned(),
        source: source.to_string(),
    })
}

fn npm_package(data: &[u8], path: &str) -> Option<Package> {
    let v: Value = serde_json::from_slice(data).ok()?;
    Some(Package {
        kind: "npm",
        name: v.get("name")?.as_str()?.to_string(),
        version: v
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        arch: None,
        license: v.get("license").and_then(Value::as_str).map(String::from),
        source: path.to_string(),
    })
}

/// The module lines of a Go binary's build info (Go 1.18+ layout: inline strings).
fn go_buildinfo(data: &[u8]) -> Option<String> {
    let at = data
        .windows(GO_BUILDINFO_MAGIC.len())
        .position(|w| w == GO_BUILDINFO_MAGIC)?;
    let header = data.get(at..at + 32)?;
    if header[15] & 2 == 0 {
        return None; // pre-1.18 pointer layout: not read
    }
    let mut rest = &data[at + 32..];
    let _version = read_varint_string(&mut rest)?;
    let modinfo = read_varint_string(&mut rest)?;
    // The module info is framed by 16-byte sentinels.
    let inner = modinfo.get(16..modinfo.len().checked_sub(16)?)?;
    Some(String::from_utf8_lossy(inner).into_owned())
}

fn read_varint_string<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (mut len, mut shift, mut i) = (0usize, 0, 0);
    loop {
        let b = *data.get(i)?;
        len |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
    let s = data.get(i..i + len)?;
    *data = &data[i + len..];
    Some(s)
}

fn go_packages(modinfo: &str, path: &str) -> Vec<Package> {
    modinfo
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let kind = cols.next()?;
            (kind == "mod" || kind == "dep").then_some(())?;
            Some(Package {
                kind: "golang",
                name: cols.next()?.to_string(),
                version: cols.next().unwrap_or("").to_string(),
                arch: None,
                license: None,
                source: path.to_string(),
            })
        })
        .collect()
}

/// A package URL; `distro` (os-release `ID`) is the deb/apk namespace, `debian`/`alpine`
/// when the image has no os-release.
fn purl(p: &Package, distro: &str) -> String {
    let distro = match (distro, p.kind) {
        ("", "deb") => "debian",
        ("", "apk") => "alpine",
        (d, _) => d,
    };
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('@', "%40")
            .replace('+', "%2B")
    };
    let name = match (p.kind, p.name.strip_prefix('@')) {
        ("npm", Some(scoped)) => format!("%40{}", enc(scoped)),
        _ => enc(&p.name),
    };
    let mut s = match p.kind {
        "deb" | "apk" => format!("pkg:{}/{distro}/{name}@{}", p.kind, enc(&p.version)),
        _ => format!("pkg:{}/{name}@{}", p.kind, enc(&p.version)),
    };
    if let Some(a) = &p.arch {
        s.push_str(&format!("?arch={}", enc(a)));
    }
    s
}

/// Everything but `[A-Za-z0-9.-]` becomes `-` (SPDX ids).
fn spdx_id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An SPDX 2.3 document listing `packages`; `name` names the image, `created` is RFC 3339.
pub fn spdx_document(packages: &[Package], distro: &str, name: &str, created: &str) -> Value {
    let mut ids = Vec::new();
    let items: Vec<Value> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let id = format!("SPDXRef-Package-{}-{}-{i}", p.kind, spdx_id_part(&p.name));
            ids.push(id.clone());
            let mut item = json!({
                "SPDXID": id,
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "sourceInfo": format!("found in {}", p.source),
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl(p, distro),
                }],
            });
            if let Some(l) = &p.license {
                item["licenseDeclared"] = json!(spdx_license(l));
            }
            item
        })
        .collect();
    let digest = hex::encode(sha2::Sha256::digest(
        serde_json::to_vec(&items).unwrap_or_default(),
    ));
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("sbom-{name}"),
        "documentNamespace": format!("https://builder.invalid/spdx/{}-{digest}", spdx_id_part(name)),
        "creationInfo": {
            "created": created,
            "creators": [concat!("Tool: builder-", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": ids,
        "packages": items,
    })
}

/// A license field as an SPDX expression when it looks like one, else NOASSERTION.
fn spdx_license(l: &str) -> String {
    let ok = !l.is_empty()
        && l.len() < 100
        && l.split_whitespace().all(|w| {
            matches!(w, "AND" | "OR" | "WITH")
                || w.trim_matches(['(', ')'])
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
        });
    if ok {
        l.to_string()
    } else {
        "NOASSERTION".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_and_apk_databases_parse() {
        let mut found = Found::new();
        let dpkg = "Package: bash\nStatus: install ok installed\nVersion: 5.2-1\nArchitecture: amd64\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        found.insert("var/lib/dpkg/status".into(), (0, dpkg.into()));
        let apk = "C:Q1x\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:zlib\nV:1.3-r0\nL:Zlib\n";
        found.insert("lib/apk/db/installed".into(), (0, apk.into()));
        let pkgs = packages(&found);
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["musl", "zlib", "bash"]);
        assert_eq!(
            purl(&pkgs[2], "debian"),
            "pkg:deb/debian/bash@5.2-1?arch=amd64"
        );
        assert_eq!(pkgs[0].license.as_deref(), Some("MIT"));
    }

    #[test]
    fn npm_paths_are_package_roots_only() {
        assert!(npm_package_dir("app/node_modules/left-pad/package.json"));
        assert!(npm_package_dir("node_modules/@types/node/package.json"));
        assert!(!npm_package_dir(
            "app/node_modules/left-pad/lib/package.json"
        ));
        assert!(!npm_package_dir("app/package.json"));
    }

    #[test]
    fn go_buildinfo_inline_strings() {
        let modinfo = format!(
            "{}path\tex.com/cmd\nmod\tex.com\tv1.2.3\th1:x\ndep\tgolang.org/x/sys\tv0.1.0\th1:y\n{}",
            "0".repeat(16),
            "1".repeat(16)
        );
        let mut bin = vec![0u8; 10];
        let mut header = GO_BUILDINFO_MAGIC.to_vec();
        header.extend([8, 2]);
        header.resize(32, 0);
        bin.extend(header);
        bin.extend([6]);
        bin.extend(b"go1.22");
        let mut len = modinfo.len();
        while len >= 0x80 {
            bin.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        bin.push(len as u8);
        bin.extend(modinfo.as_bytes());
        let info = go_buildinfo(&bin).unwrap();
        let pkgs = go_packages(&info, "bin/x");
        assert_eq!(pkgs.len(), 2);
        assert_eq!(purl(&pkgs[1], ""), "pkg:golang/golang.org/x/sys@v0.1.0");
    }
}
