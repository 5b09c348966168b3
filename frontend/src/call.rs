//! `build --call=targets|outline`: what a Dockerfile offers, printed as buildx prints
//! BuildKit's `frontend.targets` and `frontend.outline` subrequests. Descriptions come from
//! the comment line right above an instruction that starts with its name
//! (`# GO_VERSION sets the Go version` above `ARG GO_VERSION=1.22`).

use crate::parser::{Ast, Instruction};
use serde::Serialize;
use std::collections::BTreeMap;

/// One stage, for `--call=targets`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Target {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub base: String,
}

/// One build argument, for `--call=outline`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Arg {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// What `--call=outline` reports for the target.
#[derive(Debug, Serialize, PartialEq)]
pub struct Outline {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
}

/// A stage: its `FROM` and the instructions after it.
struct Stage<'a> {
    from: &'a Instruction,
    name: String,
    base: String,
    body: &'a [Instruction],
}

fn stages(ast: &Ast) -> (Vec<&Instruction>, Vec<Stage<'_>>) {
    let first = ast
        .instructions
        .iter()
        .position(|i| i.keyword == "from")
        .unwrap_or(ast.instructions.len());
    let globals = ast.instructions[..first].iter().collect();
    let mut out = Vec::new();
    let mut start = first;
    while start < ast.instructions.len() {
        let end = ast.instructions[start + 1..]
            .iter()
            .position(|i| i.keyword == "from")
            .map_or(ast.instructions.len(), |p| start + 1 + p);
        let from = &ast.instructions[start];
        let name = match from.args.as_slice() {
            [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_ascii_lowercase(),
            _ => String::new(),
        };
        let base = from.args.first().cloned().unwrap_or_default();
        out.push(Stage {
            from,
            name,
            base,
            body: &ast.instructions[start + 1..end],
        });
        start = end;
    }
    (globals, out)
}

/// The comment lines right above `line` (1-based), nearest last, `#` stripped.
fn comments_above(source: &str, line: usize) -> Vec<String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = Vec::new();
    for l in lines[..line.saturating_sub(1).min(lines.len())]
        .iter()
        .rev()
    {
        match l.trim_start().strip_prefix('#') {
            Some(text) => out.push(text.trim().to_string()),
            None => break,
        }
    }
    out.reverse();
    out
}

/// BuildKit's rule: a comment line above the instruction that starts with `NAME `.
fn description(source: &str, ins: &Instruction, name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    comments_above(source, ins.start_line)
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name} ")).map(str::to_string))
        .unwrap_or_default()
}

/// Every stage, the last one marked default.
pub fn targets(ast: &Ast, source: &[u8]) -> Vec<Target> {
    let source = String::from_utf8_lossy(source);
    let (_, stages) = stages(ast);
    let last = stages.len().saturating_sub(1);
    stages
        .iter()
        .enumerate()
        .filter(|(i, s)| !s.name.is_empty() || *i == last)
        .map(|(i, s)| Target {
            description: description(&source, s.from, &s.name),
            name: s.name.clone(),
            default: i == last,
            base: s.base.clone(),
        })
        .collect()
}

/// The target stage (`target`, or the last) and the build arguments it can use: the global
/// ones and those of the stages it builds on, with their values for this build.
pub fn outline(
    ast: &Ast,
    source: &[u8],
    target: Option<&str>,
    build_args: &BTreeMap<String, String>,
) -> Result<Outline, String> {
    let text = String::from_utf8_lossy(source);
    let (globals, stages) = stages(ast);
    let index = match target {
        Some(t) => stages
            .iter()
            .position(|s| s.name == t.to_ascii_lowercase())
            .ok_or_else(|| format!("target stage {t:?} could not be found"))?,
        None => stages.len().checked_sub(1).ok_or("no FROM instruction")?,
    };
    let mut args = Vec::new();
    let mut add = |ins: &Instruction| {
        for decl in ins.args.iter() {
            let (name, default) = decl.split_once('=').unwrap_or((decl, ""));
            if args.iter().any(|a: &Arg| a.name == name) {
                continue;
            }
            let value = build_args.get(name).map_or(default, String::as_str);
            args.push(Arg {
                name: name.to_string(),
                description: description(&text, ins, name),
                value: value.trim_matches('"').to_string(),
            });
        }
    };
    globals
        .iter()
        .filter(|i| i.keyword == "arg")
        .for_each(|i| add(i));
    for i in needed_stages(&stages, index) {
        stages[i]
            .body
            .iter()
            .filter(|i| i.keyword == "arg")
            .for_each(&mut add);
    }
    let stage = &stages[index];
    Ok(Outline {
        name: stage.name.clone(),
        description: description(&text, stage.from, &stage.name),
        args,
    })
}

/// The stage and those it reads (by `FROM`, `--from=` or `--mount=...from=`), in file order.
fn needed_stages(stages: &[Stage<'_>], target: usize) -> Vec<usize> {
    let mut needed = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        let mut refs = vec![stages[i].base.to_ascii_lowercase()];
        for ins in stages[i].body {
            for flag in &ins.flags {
                let value = flag.split(',').find_map(|f| {
                    f.strip_prefix("--from=")
                        .or_else(|| f.strip_prefix("from="))
                        .or_else(|| f.strip_prefix("--mount=from="))
                });
                refs.extend(value.map(str::to_ascii_lowercase));
            }
        }
        for r in refs {
            let by_name = stages[..i].iter().position(|s| s.name == r);
            let by_index = r.parse::<usize>().ok().filter(|&n| n < i);
            todo.extend(by_name.or(by_index));
        }
    }
    (0..stages.len()).filter(|&i| needed[i]).collect()
}

/// Go's `text/tabwriter` with no minimum width and `padding` spaces between columns: every
/// cell but a line's last is padded to its column's width.
fn tabulate(rows: &[Vec<String>], padding: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |c: usize| {
        rows.iter()
            .filter(|r| r.len() > c + 1)
            .map(|r| r[c].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] + padding - cell.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

/// `--call=targets` as buildx prints it.
pub fn print_targets(targets: &[Target]) -> String {
    let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
    for t in targets {
        let name = match (t.name.is_empty(), t.default) {
            (true, true) => "(default)".to_string(),
            (false, true) => format!("{} (default)", t.name),
            _ => t.name.clone(),
        };
        rows.push(vec![name, t.description.clone()]);
    }
    tabulate(&rows, 1)
}

/// `--call=outline` as buildx prints it.
pub fn print_outline(outline: &Outline) -> String {
    let mut out = String::new();
    if !outline.name.is_empty() || !outline.description.is_empty() {
        let name = if outline.name.is_empty() {
            "(default)"
        } else {
            &outline.name
        };
        let mut rows = vec![vec!["TARGET:".to_string(), name.to_string()]];
        if !outline.description.is_empty() {
            rows.push(vec!["DESCRIPTION:".into(), outline.description.clone()]);
        }
        out.push_str(&tabulate(&rows, 1));
        out.push('\n');
    }
    if !outline.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_string(),
            "VALUE".to_string(),
            "DESCRIPTION".to_string(),
        ]];
        for a in &outline.args {
            rows.push(vec![a.name.clone(), a.value.clone(), a.description.clone()]);
        }
        out.push_str(&tabulate(&rows, 3));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERFILE: &str = "\
# GO_VERSION sets the Go version for the build
ARG GO_VERSION=1.22
ARG UNUSED

# base is the shared toolchain
FROM golang:${GO_VERSION} AS base
# GOFLAGS flags for go build
ARG GOFLAGS=-v

FROM base AS test
ARG TESTFLAGS=-race

# binary builds the binary
FROM base AS binary
ARG LDFLAGS
RUN true
";

    fn parsed() -> Ast {
        crate::parse(DOCKERFILE.as_bytes()).unwrap()
    }

    #[test]
    fn targets_table() {
        let t = targets(&parsed(), DOCKERFILE.as_bytes());
        assert_eq!(
            print_targets(&t),
            "TARGET           DESCRIPTION\n\
             base             is the shared toolchain\n\
             test             \n\
             binary (default) builds the binary\n"
        );
    }

    #[test]
    fn outline_of_default_target() {
        let mut args = BTreeMap::new();
        args.insert("LDFLAGS".to_string(), "-s".to_string());
        let o = outline(&parsed(), DOCKERFILE.as_bytes(), None, &args).unwrap();
        assert_eq!(
            print_outline(&o),
            "TARGET:      binary\n\
             DESCRIPTION: builds the binary\n\
             \n\
             BUILD ARG    VALUE   DESCRIPTION\n\
             GO_VERSION   1.22    sets the Go version for the build\n\
             UNUSED               \n\
             GOFLAGS      -v      flags for go build\n\
             LDFLAGS      -s      \n\
             \n"
        );
        // The test stage is not needed by binary.
        assert!(!o.args.iter().any(|a| a.name == "TESTFLAGS"));
        let err = outline(&parsed(), DOCKERFILE.as_bytes(), Some("nope"), &args).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
