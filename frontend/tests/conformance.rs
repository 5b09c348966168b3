//! Runs BuildKit's own parser and shell-expansion vectors (vendored in testdata/conformance; see its README.md).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use frontend::parser::parse;
use frontend::shell::Expander;

/// The conformance folder (`testdata/conformance` of this repository);
/// `BUILDER_CONFORMANCE_DIR` overrides it. Panics if missing.
fn conformance_dir() -> PathBuf {
    let dir = std::env::var_os("BUILDER_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../testdata/conformance/"
            ))
        });
    assert!(
        dir.is_dir(),
        "conformance vectors not found at {} (set BUILDER_CONFORMANCE_DIR)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Sub-directories of `dir`, sorted, so failures are reported in a stable order.
fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Lines as Go's line scanner yields them: split on `\n`, one trailing `\r` removed.
fn scanner_lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8(bytes.to_vec()).expect("vector file is UTF-8");
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line).to_string())
        .collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    lines
}

#[test]
fn parser_results_match_byte_for_byte() {
    let root = conformance_dir().join("buildkit-parser/testfiles");
    let mut failures = Vec::new();
    let cases = case_dirs(&root);
    for dir in &cases {
        let input = read(&dir.join("Dockerfile"));
        let expected = read(&dir.join("result"));
        match parse(&input) {
            Ok(ast) => {
                let mut actual = ast.dump().into_bytes();
                actual.push(b'\n');
                if actual != expected {
                    let actual = String::from_utf8_lossy(&actual);
                    let expected = String::from_utf8_lossy(&expected);
                    let first_diff = actual
                        .lines()
                        .zip(expected.lines())
                        .position(|(a, e)| a != e)
                        .map_or(actual.lines().count().min(expected.lines().count()), |i| i);
                    failures.push(format!(
                        "{}: result line {} differs\n  expected: {:?}\n  actual:   {:?}",
                        dir.display(),
                        first_diff + 1,
                        expected.lines().nth(first_diff),
                        actual.lines().nth(first_diff)
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: parse failed: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        cases.len(),
        33,
        "expected 33 parser cases in {}",
        root.display()
    );
}

#[test]
fn parser_negative_cases_are_rejected() {
    let root = conformance_dir().join("buildkit-parser/testfiles-negative");
    let cases = case_dirs(&root);
    let accepted: Vec<String> = cases
        .iter()
        .filter(|dir| parse(&read(&dir.join("Dockerfile"))).is_ok())
        .map(|dir| dir.display().to_string())
        .collect();
    assert!(
        accepted.is_empty(),
        "should have been rejected: {accepted:#?}"
    );
    assert_eq!(
        cases.len(),
        4,
        "expected 4 negative cases in {}",
        root.display()
    );
}

#[test]
fn parser_records_line_numbers() {
    let path = conformance_dir().join("buildkit-parser/testfile-line/Dockerfile");
    let ast = parse(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ranges: Vec<(usize, usize)> = ast
        .instructions
        .iter()
        .map(|i| (i.start_line, i.end_line))
        .collect();
    assert_eq!(ranges, [(5, 5), (11, 12), (17, 31)]);
    let first = ast.instructions.first().map(|i| i.start_line);
    let last = ast.instructions.last().map(|i| i.end_line);
    assert_eq!((first, last), (Some(5), Some(31)));
}

#[test]
fn shell_env_var_vectors() {
    let path = conformance_dir().join("buildkit-shell/envVarTest");
    let env: HashMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let expander = Expander::new(&env, '\\');
    let mut failures = Vec::new();
    let mut ran = 0;
    for (index, line) in scanner_lines(&read(&path)).iter().enumerate() {
        let line_no = index + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [platform, input, expected] = fields.as_slice() else {
            panic!("{}:{line_no}: malformed vector {line:?}", path.display());
        };
        match *platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("{}:{line_no}: unknown platform {other:?}", path.display()),
        }
        ran += 1;
        let actual = match expander.process_word(input) {
            Ok(word) => word,
            Err(_) => "error".to_string(),
        };
        if actual != *expected {
            failures.push(format!(
                "line {line_no}: {input:?}: expected {expected:?}, got {actual:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, 228, "expected 228 A/U rows in {}", path.display());
}

#[test]
fn shell_words_vectors() {
    let path = conformance_dir().join("buildkit-shell/wordsTest");
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (index, line) in scanner_lines(&read(&path)).iter().enumerate() {
        let line_no = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV") {
            let assignment = assignment.trim_start_matches(' ');
            let (name, value) = assignment
                .split_once('=')
                .unwrap_or_else(|| panic!("{}:{line_no}: bad ENV line", path.display()));
            env.push((name.to_string(), value.to_string()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [input, expected] = fields.as_slice() else {
            panic!("{}:{line_no}: malformed vector {line:?}", path.display());
        };
        let input = input.trim();
        let expected: Vec<String> = expected
            .trim_start_matches(' ')
            .split(',')
            .map(str::to_string)
            .collect();
        ran += 1;
        let actual = Expander::new(&env, '\\')
            .process_words(input)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if actual != expected {
            failures.push(format!(
                "line {line_no}: {input:?}: expected {expected:?}, got {actual:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, 24, "expected 24 rows in {}", path.display());
}
