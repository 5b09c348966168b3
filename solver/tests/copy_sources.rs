//! Which context paths a COPY source names, compared with BuildKit (docker 20.10's, run by
//! scripts/compat-buildkit.sh on testdata/compat/glob-backslash-escape).

use solver::fileop::SourceTree;

fn context(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::write(dir.path().join(f), f.as_bytes()).unwrap();
    }
    dir
}

fn matches(dir: &tempfile::TempDir, source: &str) -> Result<Vec<String>, String> {
    let tree = SourceTree {
        root: dir.path(),
        index: None,
    };
    tree.matches(source)
        .map(|v| {
            v.into_iter()
                .map(|p| String::from_utf8(p).unwrap())
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// With `# escape=` + "`", `COPY x\[1\].txt /d` keeps its backslashes; BuildKit reads a source
/// with no unescaped wildcard as a literal path and fails with `"/x\\[1\\].txt" not found`.
/// builder used to glob it and copy `x[1].txt`.
#[test]
fn escaped_brackets_alone_name_a_literal_path() {
    let dir = context(&["x[1].txt", "x1.txt"]);
    assert_eq!(
        matches(&dir, "x\\[1\\].txt"),
        Err("\"/x\\[1\\].txt\": not found".to_string())
    );
    // An unescaped class is still a wildcard (BuildKit copied x1.txt for `COPY x[1].txt`).
    assert_eq!(matches(&dir, "x[1].txt"), Ok(vec!["x1.txt".to_string()]));
    // With a wildcard elsewhere, the escapes match literally.
    assert_eq!(matches(&dir, "x\\[1\\]*"), Ok(vec!["x[1].txt".to_string()]));
}
