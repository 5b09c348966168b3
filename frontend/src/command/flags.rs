//! `--name=value` flags of one instruction, checked against the instruction's set.

use super::{CommandError, Span};
use crate::lower::suggest;
use crate::parser::Instruction;

/// One flag as written: which one, its value (quotes removed, variables not yet expanded;
/// `--link` alone reads as `true`) and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag<N> {
    pub name: N,
    pub value: String,
    /// Where `--name` first occurs in the instruction (errors about this flag point there).
    pub span: Span,
}

/// Where an unknown flag is reported: BuildKit's RUN/COPY/ADD point at the first `--`,
/// the other instructions at their keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnknownAt {
    FirstDashes,
    Keyword,
}

/// The instruction's flags in source order (repeats kept: `--exclude` and `--mount` may
/// repeat; for the others the last one wins), each named by its entry in `known`.
pub(super) fn parse_flags<N: Copy>(
    ins: &Instruction,
    source: &[String],
    known: &[(&str, N)],
    unknown_at: UnknownAt,
) -> Result<Vec<Flag<N>>, CommandError> {
    let mut out = Vec::new();
    for f in &ins.flags {
        let body = f.trim_start_matches('-');
        let (name, value) = body
            .split_once('=')
            .map(|(n, v)| (n, v.to_string()))
            .unwrap_or((body, "true".into()));
        let Some((_, id)) = known.iter().find(|(k, _)| *k == name) else {
            let span = match unknown_at {
                UnknownAt::FirstDashes => Span::near(ins, source, "--"),
                UnknownAt::Keyword => Span::of(ins),
            };
            return Err(CommandError {
                span,
                message: unknown_flag(ins, name, known),
            });
        };
        out.push(Flag {
            name: *id,
            value,
            span: Span::near(ins, source, &format!("--{name}")),
        });
    }
    Ok(out)
}

/// Fails on the first flag of an instruction that takes none, as BuildKit does.
pub(super) fn reject_flags(ins: &Instruction) -> Result<(), CommandError> {
    parse_flags::<()>(ins, &[], &[], UnknownAt::Keyword).map(|_| ())
}

/// `unknown flag: --x for COPY (known flags: --from, ...); did you mean --from?`
fn unknown_flag<N>(ins: &Instruction, name: &str, known: &[(&str, N)]) -> String {
    let names = || known.iter().map(|(k, _)| *k);
    let hint = suggest(name, names())
        .map(|s| format!("; did you mean --{s}?"))
        .unwrap_or_default();
    let listed = names()
        .map(|k| format!("--{k}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "unknown flag: --{name} for {} (known flags: {}){hint}",
        ins.keyword.to_uppercase(),
        if listed.is_empty() { "none" } else { &listed },
    )
}

/// A boolean flag's (expanded) value: empty or `true`, or `false`.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("invalid --{name}={value}: expected true or false")),
    }
}
