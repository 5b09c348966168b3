//! Each Dockerfile instruction parsed once into a typed command, as BuildKit's
//! `frontend/dockerfile/instructions` does: its flags checked against the instruction's
//! set, its operands split, and every check that needs no variable expansion done, each
//! error carrying its source position. Flag values stay as written; lowering expands them
//! in the stage's scope and reads them through this module (`CopyCommand::resolve`,
//! `NetworkFlag::parse`, `mount::parse_mount`), as BuildKit's commands are `Expand`ed at
//! dispatch.

use crate::lower::suggest;
use crate::parser::Instruction;
use std::fmt;

mod copy;
mod flags;
mod from;
mod healthcheck;
pub mod mount;
mod run;
mod simple;

pub use copy::{parse_checksum, parse_chown, validate_chmod, CopyCommand, CopyFlag, CopyOptions};
pub use flags::{parse_bool, Flag};
pub use from::{FromCommand, FromFlag};
pub use healthcheck::{parse_duration_ns, HealthcheckCommand};
pub use run::{NetworkFlag, RunCommand, RunFlag, SecurityFlag};
pub use simple::{
    ArgCommand, ArgDecl, ExecCommand, ExposeCommand, KeyValueCommand, MaintainerCommand,
    OnBuildCommand, ShellCommand, StopSignalCommand, UserCommand, VolumeCommand, WorkdirCommand,
};

/// A position in the Dockerfile: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

impl Span {
    /// The instruction's keyword.
    pub fn of(ins: &Instruction) -> Span {
        Span {
            line: ins.start_line,
            column: ins.column,
        }
    }

    /// Where `needle` (say, `--chmod`) first occurs on the instruction's lines of `source`,
    /// else the keyword.
    pub fn near(ins: &Instruction, source: &[String], needle: &str) -> Span {
        (ins.start_line..=ins.end_line)
            .find_map(|line| {
                let text = source.get(line.wrapping_sub(1))?;
                let at = text.find(needle)?;
                Some(Span {
                    line,
                    column: text[..at].chars().count() + 1,
                })
            })
            .unwrap_or(Span::of(ins))
    }
}

/// Why an instruction is not a valid command, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub span: Span,
    pub message: String,
}

impl CommandError {
    fn at(ins: &Instruction, message: impl Into<String>) -> Self {
        CommandError {
            span: Span::of(ins),
            message: message.into(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.span.line, self.span.column, self.message
        )
    }
}

impl std::error::Error for CommandError {}

/// The command line of RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The JSON form's words, or the shell form's words as the parser split them.
    pub args: Vec<String>,
    /// The JSON (exec) form was used.
    pub json: bool,
}

/// One instruction, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From(FromCommand),
    Run(RunCommand),
    Copy(CopyCommand),
    Add(CopyCommand),
    Workdir(WorkdirCommand),
    Env(KeyValueCommand),
    Label(KeyValueCommand),
    Arg(ArgCommand),
    Cmd(ExecCommand),
    Entrypoint(ExecCommand),
    User(UserCommand),
    Expose(ExposeCommand),
    Volume(VolumeCommand),
    StopSignal(StopSignalCommand),
    Shell(ShellCommand),
    Maintainer(MaintainerCommand),
    OnBuild(OnBuildCommand),
    Healthcheck(HealthcheckCommand),
}

/// Every instruction keyword, lower-cased.
pub const INSTRUCTIONS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Instructions that take no `--flags`: BuildKit rejects any given to them (`ENV --x=1 A=b`
/// is an error there, not a variable named `--x`). Not ARG and STOPSIGNAL: BuildKit's parser
/// takes their flags off and never checks them (`ARG --a B=1` builds as `ARG B=1`).
const FLAGLESS: &[&str] = &[
    "env",
    "expose",
    "label",
    "maintainer",
    "onbuild",
    "shell",
    "user",
    "volume",
    "workdir",
];

/// Instructions that may not be ONBUILD triggers, as in BuildKit.
pub const NOT_TRIGGERS: &[&str] = &["onbuild", "from", "maintainer"];

impl Command {
    /// Parses one instruction; `source` is the Dockerfile's lines (flag positions are
    /// looked up there).
    pub fn parse(ins: &Instruction, source: &[String]) -> Result<Command, CommandError> {
        if FLAGLESS.contains(&ins.keyword.as_str()) {
            flags::reject_flags(ins)?;
        }
        Ok(match ins.keyword.as_str() {
            "from" => Command::From(FromCommand::parse(ins)?),
            "run" => Command::Run(RunCommand::parse(ins, source)?),
            "copy" => Command::Copy(CopyCommand::parse(ins, source)?),
            "add" => Command::Add(CopyCommand::parse(ins, source)?),
            "workdir" => Command::Workdir(WorkdirCommand::parse(ins)?),
            "env" => Command::Env(KeyValueCommand::parse(ins)?),
            "label" => Command::Label(KeyValueCommand::parse(ins)?),
            "arg" => Command::Arg(ArgCommand::parse(ins)?),
            "cmd" => Command::Cmd(ExecCommand::parse(ins)?),
            "entrypoint" => Command::Entrypoint(ExecCommand::parse(ins)?),
            "user" => Command::User(UserCommand::parse(ins)?),
            "expose" => Command::Expose(ExposeCommand::parse(ins)?),
            "volume" => Command::Volume(VolumeCommand::parse(ins)?),
            "stopsignal" => Command::StopSignal(StopSignalCommand::parse(ins)?),
            "shell" => Command::Shell(ShellCommand::parse(ins)?),
            "maintainer" => Command::Maintainer(MaintainerCommand::parse(ins)),
            "onbuild" => Command::OnBuild(OnBuildCommand::parse(ins)?),
            "healthcheck" => Command::Healthcheck(HealthcheckCommand::parse(ins)?),
            _ => return Err(unknown_instruction(ins)),
        })
    }
}

/// `unknown instruction: RUNN (did you mean RUN?)`, BuildKit's wording.
pub fn unknown_instruction(ins: &Instruction) -> CommandError {
    let hint = suggest(&ins.keyword, INSTRUCTIONS.iter().copied())
        .map(|s| format!(" (did you mean {}?)", s.to_uppercase()))
        .unwrap_or_default();
    CommandError::at(
        ins,
        format!("unknown instruction: {}{hint}", ins.keyword.to_uppercase()),
    )
}

/// The stages a COPY (`--from=`) or RUN (`--mount=...,from=`) may read, as written: a
/// first guess for ordering stages before their ARGs are known, so it never fails.
pub fn stage_references(ins: &Instruction) -> Vec<&str> {
    let kind = ins.keyword.as_str();
    ins.flags
        .iter()
        .filter_map(|f| stage_reference(kind, f))
        .collect()
}

fn stage_reference<'f>(kind: &str, flag: &'f str) -> Option<&'f str> {
    match kind {
        "copy" => flag.strip_prefix("--from="),
        "run" => flag
            .strip_prefix("--mount=")
            .and_then(|m| m.split(',').find_map(|kv| kv.trim().strip_prefix("from="))),
        _ => None,
    }
}
