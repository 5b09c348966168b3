//! `--chmod` values: octal (`0755`) or symbolic like chmod(1) (`u+x,go-w`, `a=rX`).
//! A symbolic clause without `ugoa` applies to all classes (no umask: the
//! result must not depend on the builder's environment).

use anyhow::Result;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Fixed bits (r, w, x, s, t), before masking by the classes.
    Bits(u32),
    /// `X`: execute, if the entry is a directory or already executable by someone.
    ExecIfAny,
    /// Copy of one class's current rwx bits (`u`, `g`, `o` after the operator).
    CopyFrom(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    op: char,
    perms: Vec<Perm>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// Bitmask of classes: 4 = user, 2 = group, 1 = other.
    who: u32,
    actions: Vec<Action>,
}

/// A parsed `--chmod` mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeSpec {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

const USER: u32 = 4;
const GROUP: u32 = 2;
const OTHER: u32 = 1;

/// Spreads rwx bits (0..=7) to the classes in `who`.
fn spread(rwx: u32, who: u32) -> u32 {
    let mut out = 0;
    if who & USER != 0 {
        out |= rwx << 6;
    }
    if who & GROUP != 0 {
        out |= rwx << 3;
    }
    if who & OTHER != 0 {
        out |= rwx;
    }
    out
}

/// The special bits that belong to the classes in `who`.
fn special(who: u32, setid: bool, sticky: bool) -> u32 {
    let mut out = 0;
    if setid && who & USER != 0 {
        out |= 0o4000;
    }
    if setid && who & GROUP != 0 {
        out |= 0o2000;
    }
    if sticky && who & OTHER != 0 {
        out |= 0o1000;
    }
    out
}

impl ModeSpec {
    /// Parses a `--chmod` value; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| anyhow::anyhow!("invalid --chmod={text}: {why}");
        if text.is_empty() {
            return Err(bad("empty mode"));
        }
        if text.chars().all(|c| c.is_ascii_digit()) {
            if text.len() > 4 || text.chars().any(|c| c > '7') {
                return Err(bad("an octal mode has at most 4 digits 0-7"));
            }
            return Ok(Self::Octal(u32::from_str_radix(text, 8)?));
        }
        let mut clauses = Vec::new();
        for part in text.split(',') {
            let mut chars = part.chars().peekable();
            let mut who = 0;
            while let Some(&c) = chars.peek() {
                who |= match c {
                    'u' => USER,
                    'g' => GROUP,
                    'o' => OTHER,
                    'a' => USER | GROUP | OTHER,
                    _ => break,
                };
                chars.next();
            }
            if who == 0 {
                who = USER | GROUP | OTHER;
            }
            let mut actions = Vec::new();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad(&format!(
                        "expected one of + - = in {part:?}, found {op:?}"
                    )));
                }
                let mut perms = Vec::new();
                while let Some(&c) = chars.peek() {
                    let p = match c {
                        'r' => Perm::Bits(0o444),
                        'w' => Perm::Bits(0o222),
                        'x' => Perm::Bits(0o111),
                        'X' => Perm::ExecIfAny,
                        's' => Perm::Bits(0o6000),
                        't' => Perm::Bits(0o1000),
                        'u' => Perm::CopyFrom(USER),
                        'g' => Perm::CopyFrom(GROUP),
                        'o' => Perm::CopyFrom(OTHER),
                        '+' | '-' | '=' => break,
                        other => {
                            return Err(bad(&format!("unknown permission {other:?} in {part:?}")))
                        }
                    };
                    perms.push(p);
                    chars.next();
                }
                actions.push(Action { op, perms });
            }
            if actions.is_empty() {
                return Err(bad(&format!("{part:?} has no + - or = operator")));
            }
            clauses.push(Clause { who, actions });
        }
        Ok(Self::Symbolic(clauses))
    }

    /// The new permission bits (0o7777) of an entry with permission bits `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Self::Octal(m) => return *m,
            Self::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for action in &clause.actions {
                let mut bits = 0;
                for p in &action.perms {
                    bits |= match p {
                        Perm::Bits(b) => {
                            let rwx = spread((b & 0o7) | ((b >> 3) & 0o7) | ((b >> 6) & 0o7), 7)
                                & spread(7, clause.who);
                            let special_bits =
                                special(clause.who, b & 0o6000 != 0, b & 0o1000 != 0);
                            rwx | special_bits
                        }
                        Perm::ExecIfAny if is_dir || mode & 0o111 != 0 => spread(1, clause.who),
                        Perm::ExecIfAny => 0,
                        Perm::CopyFrom(class) => {
                            let shift = match *class {
                                USER => 6,
                                GROUP => 3,
                                _ => 0,
                            };
                            spread((mode >> shift) & 0o7, clause.who)
                        }
                    };
                }
                mode = match action.op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => {
                        let cleared = spread(7, clause.who) | special(clause.who, true, true);
                        // `=` keeps a directory's set-id bits unless named, like GNU chmod.
                        let keep = if is_dir { mode & 0o6000 } else { 0 };
                        (mode & !cleared) | bits | (keep & cleared & !bits & 0o6000)
                    }
                };
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(text: &str, mode: u32, is_dir: bool) -> u32 {
        ModeSpec::parse(text).unwrap().apply(mode, is_dir)
    }

    #[test]
    fn octal_replaces_the_mode() {
        assert_eq!(sym("0755", 0o600, false), 0o755);
        assert_eq!(sym("4711", 0o600, false), 0o4711);
    }

    #[test]
    fn symbolic_like_chmod() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=rX", 0o640, false), 0o444);
        assert_eq!(sym("a=rX", 0o740, false), 0o555);
        assert_eq!(sym("a=rX", 0o700, true), 0o555);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o000, false), 0o750);
        assert_eq!(sym("+x", 0o600, false), 0o711);
        assert_eq!(sym("g=u", 0o740, false), 0o770);
        assert_eq!(sym("u+s,+t", 0o755, false), 0o5755);
        assert_eq!(sym("o-rwx,g+w-x", 0o755, false), 0o760);
    }

    #[test]
    fn bad_modes_are_rejected_with_the_value() {
        for bad in ["", "0999", "12345", "u+z", "q+x", "u", "u+x,"] {
            let err = ModeSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("--chmod={bad}")), "{bad}: {err}");
        }
    }
}
