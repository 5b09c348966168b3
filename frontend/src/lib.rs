//! Dockerfile front end: parsing and shell-word expansion.

pub mod call;
pub mod checks;
pub mod command;
pub mod parser;
pub mod platform_spec;
pub mod run_flags;
pub mod shell;
mod stage_order;

pub use parser::{parse, Ast, Directives, Heredoc, Instruction, ParseError, Warning};
pub use shell::{Env, ExpandError, Expander};
pub mod ignore;
pub mod lower;
