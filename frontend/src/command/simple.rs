//! Instructions without flags: their operands, split and counted.

use super::{CommandError, CommandLine, NOT_TRIGGERS};
use crate::parser::Instruction;

/// `WORKDIR path` (unexpanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirCommand {
    pub path: String,
}

/// `ENV k=v ...` or `LABEL k=v ...`: the pairs, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValueCommand {
    pub pairs: Vec<(String, String)>,
}

/// One `ARG name[=default]` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// The default, unexpanded.
    pub default: Option<String>,
}

/// `ARG a b=c ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCommand {
    pub args: Vec<ArgDecl>,
}

/// `CMD` or `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub line: CommandLine,
}

/// `USER name[:group]` (unexpanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    pub user: String,
}

/// `EXPOSE port[/proto] ...` (unexpanded; a word may expand to several ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposeCommand {
    pub ports: Vec<String>,
}

/// `VOLUME path ...` (unexpanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCommand {
    pub paths: Vec<String>,
}

/// `STOPSIGNAL signal` (unexpanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignalCommand {
    pub signal: String,
}

/// `SHELL ["executable", "parameters"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    pub args: Vec<String>,
}

/// `MAINTAINER name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerCommand {
    pub args: Vec<String>,
}

/// `ONBUILD instruction`: the trigger text stored in the image, heredoc bodies included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBuildCommand {
    pub trigger: String,
}

fn first_arg(ins: &Instruction, what: &str) -> Result<String, CommandError> {
    ins.args
        .first()
        .cloned()
        .ok_or_else(|| CommandError::at(ins, format!("{what} requires exactly one argument")))
}

fn some_args(ins: &Instruction, what: &str) -> Result<Vec<String>, CommandError> {
    if ins.args.is_empty() {
        return Err(CommandError::at(
            ins,
            format!("{what} requires at least one argument"),
        ));
    }
    Ok(ins.args.clone())
}

impl WorkdirCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        Ok(WorkdirCommand {
            path: first_arg(ins, "WORKDIR")?,
        })
    }
}

impl KeyValueCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        // The parser gives (key, value, separator) triples.
        if !ins.args.len().is_multiple_of(3) || ins.args.is_empty() {
            let upper = ins.keyword.to_uppercase();
            return Err(CommandError::at(
                ins,
                format!("{upper} requires at least one key=value pair"),
            ));
        }
        let pairs = ins.args.chunks(3);
        Ok(KeyValueCommand {
            pairs: pairs.map(|t| (t[0].clone(), t[1].clone())).collect(),
        })
    }
}

impl ArgCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        let mut args = Vec::new();
        for word in &ins.args {
            args.push(match word.split_once('=') {
                Some(("", _)) => return Err(CommandError::at(ins, "ARG names can not be blank")),
                Some((k, v)) => ArgDecl {
                    name: k.to_string(),
                    default: Some(v.to_string()),
                },
                None => ArgDecl {
                    name: word.clone(),
                    default: None,
                },
            });
        }
        Ok(ArgCommand { args })
    }
}

impl ExecCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        super::flags::reject_flags(ins)?;
        Ok(ExecCommand {
            line: CommandLine {
                args: ins.args.clone(),
                json: ins.json,
            },
        })
    }
}

impl UserCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        Ok(UserCommand {
            user: first_arg(ins, "USER")?,
        })
    }
}

impl ExposeCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        Ok(ExposeCommand {
            ports: some_args(ins, "EXPOSE")?,
        })
    }
}

impl VolumeCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        Ok(VolumeCommand {
            paths: some_args(ins, "VOLUME")?,
        })
    }
}

impl StopSignalCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        Ok(StopSignalCommand {
            signal: first_arg(ins, "STOPSIGNAL")?,
        })
    }
}

impl ShellCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        if !ins.json {
            return Err(CommandError::at(
                ins,
                "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]",
            ));
        }
        Ok(ShellCommand {
            args: ins.args.clone(),
        })
    }
}

impl MaintainerCommand {
    pub(super) fn parse(ins: &Instruction) -> Self {
        MaintainerCommand {
            args: ins.args.clone(),
        }
    }
}

impl OnBuildCommand {
    pub(super) fn parse(ins: &Instruction) -> Result<Self, CommandError> {
        let Some(inner) = &ins.onbuild else {
            return Err(CommandError::at(
                ins,
                "ONBUILD requires an instruction, e.g. ONBUILD RUN make",
            ));
        };
        if NOT_TRIGGERS.contains(&inner.keyword.as_str()) {
            let upper = inner.keyword.to_uppercase();
            return Err(CommandError::at(
                ins,
                format!("{upper} isn't allowed as an ONBUILD trigger"),
            ));
        }
        let mut trigger = ins
            .original
            .split_once(char::is_whitespace)
            .map(|x| x.1.trim().to_string())
            .unwrap_or_default();
        for doc in &ins.heredocs {
            trigger.push('\n');
            trigger.push_str(&doc.content);
            trigger.push_str(&doc.name);
        }
        Ok(OnBuildCommand { trigger })
    }
}
