//! FROM: `--platform`, the base and the stage name.

use super::flags::{parse_flags, Flag, UnknownAt};
use super::CommandError;
use crate::parser::{go_quote, Instruction};

/// A flag of FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromFlag {
    Platform,
}

/// `FROM [--platform=p] base [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromCommand {
    /// The last `--platform`, unexpanded.
    pub platform: Option<Flag<FromFlag>>,
    /// The base image or stage, unexpanded.
    pub base: String,
    /// The stage name, lower-cased and checked.
    pub name: Option<String>,
}

impl FromCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        let name = Self::stage_name(ins)?;
        let known = [("platform", FromFlag::Platform)];
        // No source lines: FROM's errors, `--platform`'s included, point at the keyword.
        let flags = parse_flags(ins, &[], &known, UnknownAt::Keyword)?;
        Ok(FromCommand {
            platform: flags.into_iter().next_back(),
            base: ins.args[0].clone(),
            name,
        })
    }

    /// The `AS name` of a FROM, lower-cased and checked (also the arguments' count).
    pub fn stage_name(ins: &Instruction) -> Result<Option<String>, CommandError> {
        let name = match ins.args.as_slice() {
            [_] => return Ok(None),
            [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => name.to_lowercase(),
            [] => {
                return Err(CommandError::at(
                    ins,
                    "FROM requires the name of a base image, e.g. FROM debian:bookworm",
                ))
            }
            _ => {
                return Err(CommandError::at(
                    ins,
                    "FROM requires either one or three arguments",
                ))
            }
        };
        if !is_valid_stage_name(&name) {
            return Err(CommandError::at(
                ins,
                format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    go_quote(&ins.args[2])
                ),
            ));
        }
        Ok(Some(name))
    }
}

/// BuildKit's rule for `AS name` (after lowercasing): `^[a-z][a-z0-9-_.]*$`.
fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}
