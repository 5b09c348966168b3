//! RUN: `--mount` (see [`super::mount`]), `--network` and `--security`.

use super::flags::{parse_flags, Flag, UnknownAt};
use super::{CommandError, CommandLine};
use crate::lower::suggest;
use crate::parser::{Heredoc, Instruction};

/// A flag of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFlag {
    Mount,
    Network,
    Security,
}

const RUN_FLAGS: &[(&str, RunFlag)] = &[
    ("mount", RunFlag::Mount),
    ("network", RunFlag::Network),
    ("security", RunFlag::Security),
];

/// `RUN [flags] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    /// In source order, unexpanded (a `--mount` value is expanded field by field).
    pub flags: Vec<Flag<RunFlag>>,
    pub line: CommandLine,
    /// Heredocs the command line reads, in order.
    pub heredocs: Vec<Heredoc>,
}

impl RunCommand {
    pub(super) fn parse(ins: &Instruction, source: &[String]) -> Result<Self, CommandError> {
        Ok(RunCommand {
            flags: parse_flags(ins, source, RUN_FLAGS, UnknownAt::FirstDashes)?,
            line: CommandLine {
                args: ins.args.clone(),
                json: ins.json,
            },
            heredocs: ins.heredocs.clone(),
        })
    }
}

/// `RUN --network=` (expanded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkFlag {
    Default,
    None,
    /// Needs the `network.host` entitlement.
    Host,
}

impl NetworkFlag {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "default" => Ok(NetworkFlag::Default),
            "none" => Ok(NetworkFlag::None),
            "host" => Ok(NetworkFlag::Host),
            other => {
                let hint = suggest(other, ["default", "none", "host"])
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_default();
                Err(format!(
                    "unsupported network mode {other:?}; use default, none or host{hint}"
                ))
            }
        }
    }
}

/// `RUN --security=` (expanded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityFlag {
    Sandbox,
    /// Needs the `security.insecure` entitlement.
    Insecure,
}

impl SecurityFlag {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "sandbox" => Ok(SecurityFlag::Sandbox),
            "insecure" => Ok(SecurityFlag::Insecure),
            other => Err(format!(
                "unsupported security mode {other:?}; use sandbox or insecure"
            )),
        }
    }
}
