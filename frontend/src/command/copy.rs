//! COPY and ADD: their flags, sources and destination.

use super::flags::{parse_bool, parse_flags, Flag, UnknownAt};
use super::{CommandError, Span};
use crate::parser::{Heredoc, Instruction};
use llb::graph::Chown;

/// A flag of COPY or ADD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFlag {
    /// COPY only.
    From,
    Chown,
    Chmod,
    Link,
    Exclude,
    /// COPY only.
    Parents,
    /// ADD only.
    Checksum,
    /// ADD only.
    KeepGitDir,
    /// ADD only.
    Unpack,
}

/// COPY's flags, in the order its "known flags" message lists them.
const COPY_FLAGS: &[(&str, CopyFlag)] = &[
    ("from", CopyFlag::From),
    ("chown", CopyFlag::Chown),
    ("chmod", CopyFlag::Chmod),
    ("link", CopyFlag::Link),
    ("exclude", CopyFlag::Exclude),
    ("parents", CopyFlag::Parents),
];

const ADD_FLAGS: &[(&str, CopyFlag)] = &[
    ("chown", CopyFlag::Chown),
    ("chmod", CopyFlag::Chmod),
    ("link", CopyFlag::Link),
    ("exclude", CopyFlag::Exclude),
    ("checksum", CopyFlag::Checksum),
    ("keep-git-dir", CopyFlag::KeepGitDir),
    ("unpack", CopyFlag::Unpack),
];

impl CopyFlag {
    /// The flag's name without `--`.
    pub fn name(self) -> &'static str {
        let all = COPY_FLAGS.iter().chain(ADD_FLAGS);
        all.into_iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }
}

/// `COPY`/`ADD [flags] src... dest`, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    /// True for ADD.
    pub is_add: bool,
    /// In source order, unexpanded.
    pub flags: Vec<Flag<CopyFlag>>,
    /// Source words (paths, URLs, `<<EOF` heredoc markers), unexpanded.
    pub sources: Vec<String>,
    pub dest: String,
    /// The JSON form was used (its words are never heredoc markers).
    pub json: bool,
    /// Heredoc bodies for the `<<EOF` sources, in order.
    pub heredocs: Vec<Heredoc>,
}

/// COPY/ADD flags after expansion, each checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    pub from: Option<String>,
    pub chown: Option<Chown>,
    /// `--chown` as written (after expansion), for the history text.
    pub chown_text: Option<String>,
    pub chmod: Option<String>,
    pub checksum: Option<String>,
    pub exclude: Vec<String>,
    pub link: bool,
    pub parents: bool,
    pub keep_git_dir: bool,
    /// None: ADD's default (local archives unpack, downloads do not).
    pub unpack: Option<bool>,
}

impl CopyCommand {
    pub(super) fn parse(ins: &Instruction, source: &[String]) -> Result<Self, CommandError> {
        let is_add = ins.keyword == "add";
        let known = if is_add { ADD_FLAGS } else { COPY_FLAGS };
        let flags = parse_flags(ins, source, known, UnknownAt::FirstDashes)?;
        let Some((dest, sources)) = ins.args.split_last().filter(|(_, s)| !s.is_empty()) else {
            let upper = ins.keyword.to_uppercase();
            return Err(CommandError::at(
                ins,
                format!("{upper} requires at least two arguments, but only one was provided. Destination could not be determined"),
            ));
        };
        Ok(CopyCommand {
            is_add,
            flags,
            sources: sources.to_vec(),
            dest: dest.clone(),
            json: ins.json,
            heredocs: ins.heredocs.clone(),
        })
    }

    /// Where the first `--name` flag is, if given.
    pub fn span_of(&self, name: CopyFlag) -> Option<Span> {
        self.flags.iter().find(|f| f.name == name).map(|f| f.span)
    }

    /// Expands each flag in source order (`expand` answers an error message) and checks it.
    pub fn resolve(
        &self,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<CopyOptions, CommandError> {
        let mut options = CopyOptions::default();
        for flag in &self.flags {
            let at = |message| CommandError {
                span: flag.span,
                message,
            };
            let value = expand(&flag.value).map_err(at)?;
            let as_bool = |v: &str| parse_bool(flag.name.name(), v).map_err(at);
            match flag.name {
                CopyFlag::From => options.from = Some(value),
                CopyFlag::Chown => {
                    options.chown = Some(parse_chown(&value));
                    options.chown_text = Some(value);
                }
                CopyFlag::Chmod => {
                    validate_chmod(&value).map_err(at)?;
                    options.chmod = Some(value);
                }
                CopyFlag::Checksum => options.checksum = Some(value),
                CopyFlag::Exclude => options.exclude.push(value),
                CopyFlag::Link => options.link = as_bool(&value)?,
                CopyFlag::Parents => options.parents = as_bool(&value)?,
                CopyFlag::KeepGitDir => options.keep_git_dir = as_bool(&value)?,
                CopyFlag::Unpack => options.unpack = Some(as_bool(&value)?),
            }
        }
        Ok(options)
    }
}

/// `user[:group]` as a file op owner.
pub fn parse_chown(s: &str) -> Chown {
    match s.split_once(':') {
        Some((u, g)) => Chown {
            user: u.into(),
            group: Some(g.into()),
        },
        None => Chown {
            user: s.into(),
            group: None,
        },
    }
}

/// Checks an `ADD --checksum` value: `sha256:`, `sha384:` or `sha512:` and hex digits.
pub fn parse_checksum(value: &str) -> Result<(), String> {
    let valid = value.split_once(':').is_some_and(|(algo, hex)| {
        matches!(algo, "sha256" | "sha384" | "sha512")
            && !hex.is_empty()
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid --checksum={value}: expected sha256:<hex digest>"
        ))
    }
}

/// Checks a `--chmod` value: octal (`755`, `0644`) or symbolic (`u+x,go-w`, `a=rX`).
pub fn validate_chmod(mode: &str) -> Result<(), String> {
    if mode.chars().all(|c| c.is_ascii_digit()) {
        return match u32::from_str_radix(mode, 8) {
            Ok(m) if m <= 0o7777 => Ok(()),
            _ => Err(format!(
                "invalid --chmod={mode}: octal modes use digits 0-7 and are at most 7777"
            )),
        };
    }
    let bad = || {
        format!(
            "invalid --chmod={mode}: expected an octal mode (0755) or a symbolic one (u+x,go-w)"
        )
    };
    for clause in mode.split(',') {
        let ops_at = clause.find(['+', '-', '=']).ok_or_else(bad)?;
        if !clause[..ops_at].chars().all(|c| "ugoa".contains(c)) {
            return Err(bad());
        }
        // After the who-list: one or more (op, perms) groups; perms may be a copy from u/g/o.
        let mut chars = clause[ops_at..].chars().peekable();
        while let Some(op) = chars.next() {
            if !"+-=".contains(op) {
                return Err(bad());
            }
            while let Some(&c) = chars.peek() {
                if "+-=".contains(c) {
                    break;
                }
                if !"rwxXstugo".contains(c) {
                    return Err(bad());
                }
                chars.next();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_values() {
        for ok in [
            "755",
            "0644",
            "u+x",
            "go-w",
            "a=rX",
            "u+x,g-w",
            "u=rwx,go=rx",
            "+x",
            "g=u",
        ] {
            assert!(validate_chmod(ok).is_ok(), "{ok}");
        }
        for bad in ["9", "u+q", "x", "z+x", "", "u+x,"] {
            assert!(validate_chmod(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksums() {
        assert!(parse_checksum("sha256:ab12").is_ok());
        assert!(parse_checksum("sha512:AB").is_ok());
        for bad in ["md5:ab", "sha256:", "sha256:xyz", "ab12"] {
            assert!(parse_checksum(bad).is_err(), "{bad}");
        }
    }
}
