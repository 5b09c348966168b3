//! Dockerfile parser compatible with BuildKit's `frontend/dockerfile/parser`:
//! parser directives, line continuations, comments, flags, JSON (exec) form,
//! per-instruction argument rules and heredocs.

use std::collections::HashSet;
use std::fmt;

use crate::shell::Expander;

/// Longest physical line accepted, in bytes (without its `\n`), as in BuildKit.
pub const MAX_LINE_BYTES: usize = 65535;

/// Deepest `ONBUILD ONBUILD ...` chain parsed before giving up.
const MAX_ONBUILD_NESTING: usize = 16;

/// Parser directives read from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// Value of `# syntax=`.
    pub syntax: Option<String>,
    /// Value of `# check=`.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// A heredoc attached to an instruction (`<<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter with quotes removed.
    pub name: String,
    /// The body lines, each with its own line ending; for `<<-` leading tabs are already removed.
    pub content: String,
    /// False if any part of the delimiter was quoted, which disables variable expansion.
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), if any.
    pub fd: Option<u32>,
}

/// One Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Lower-cased instruction word.
    pub keyword: String,
    /// Flags such as `--from=build`, with quotes and escapes removed.
    pub flags: Vec<String>,
    /// Arguments exactly as the AST dump prints them.
    pub args: Vec<String>,
    /// True if the JSON (exec) form was used.
    pub json: bool,
    /// Heredocs in source order; an `ONBUILD` and the instruction it wraps both carry them.
    pub heredocs: Vec<Heredoc>,
    /// For `ONBUILD`: the wrapped instruction.
    pub onbuild: Option<Box<Instruction>>,
    /// The logical line after continuation joining.
    pub original: String,
    /// First physical line (1-based).
    pub start_line: usize,
    /// Last physical line consumed, including continuation and heredoc lines (inclusive).
    pub end_line: usize,
    /// 1-based column (in characters) of the keyword on `start_line`.
    pub column: usize,
}

impl Instruction {
    /// This instruction in the dump format of BuildKit's tests, e.g. `(copy ["--from=a"] "x" "/")`.
    pub fn dump(&self) -> String {
        format!("({})", self.dump_node())
    }

    fn dump_node(&self) -> String {
        let mut out = self.keyword.clone();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            out.push_str(" [");
            out.push_str(&flags.join(" "));
            out.push(']');
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        if let Some(inner) = &self.onbuild {
            out.push(' ');
            out.push_str(&inner.dump());
        }
        out.trim().to_string()
    }
}

/// A non-fatal problem found while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line the warning refers to.
    pub line: usize,
    /// Human-readable description.
    pub message: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// Parser directives found at the top of the file.
    pub directives: Directives,
    /// Instructions in source order.
    pub instructions: Vec<Instruction>,
    /// Non-fatal problems, such as empty continuation lines.
    pub warnings: Vec<Warning>,
}

impl Ast {
    /// One `(node)` line per instruction, as in BuildKit's parser tests, without a final newline.
    pub fn dump(&self) -> String {
        let lines: Vec<String> = self.instructions.iter().map(Instruction::dump).collect();
        lines.join("\n")
    }
}

/// Why a Dockerfile could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Human-readable description.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Yields physical lines, each with its terminator, counting them.
struct LineReader<'a> {
    input: &'a [u8],
    pos: usize,
    /// Number of lines handed out so far, i.e. the 1-based number of the last one.
    line: usize,
}

impl<'a> LineReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        LineReader {
            input,
            pos: 0,
            line: 0,
        }
    }

    fn next_line(&mut self) -> Result<Option<String>, ParseError> {
        let remaining = &self.input[self.pos..];
        if remaining.is_empty() {
            return Ok(None);
        }
        let len = remaining
            .iter()
            .position(|&b| b == b'\n')
            .map_or(remaining.len(), |i| i + 1);
        let mut raw = &remaining[..len];
        self.pos += len;
        self.line += 1;
        let content_len = raw.len() - usize::from(raw.ends_with(b"\n"));
        if content_len > MAX_LINE_BYTES {
            let column = String::from_utf8_lossy(&raw[..MAX_LINE_BYTES])
                .chars()
                .count()
                + 1;
            return Err(ParseError {
                line: self.line,
                column,
                message: format!(
                    "dockerfile line greater than max allowed size of {MAX_LINE_BYTES} bytes"
                ),
            });
        }
        if self.line == 1 {
            raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        }
        Ok(Some(String::from_utf8_lossy(raw).into_owned()))
    }
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// The whitespace BuildKit splits instruction text on (`[\t\v\f\r ]`).
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Applies the continuation test: returns the line without its trailing escape
/// (and the spaces after it) and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let without_blanks = line.trim_end_matches([' ', '\t']);
    if let Some(before) = without_blanks.strip_suffix(escape) {
        // An escaped escape (`\\`) at the end is text, not a continuation.
        if !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

/// Reads parser directives until the first line that is not one.
#[derive(Default)]
struct DirectiveReader {
    done: bool,
    seen: HashSet<String>,
}

/// A directive found on a line: lower-cased name, value, and the value's character offset.
struct FoundDirective {
    name: String,
    value: String,
    value_offset: usize,
}

impl DirectiveReader {
    /// Offers a line with leading whitespace already removed.
    fn offer(&mut self, line: &str) -> Result<Option<FoundDirective>, (usize, String)> {
        if self.done {
            return Ok(None);
        }
        let Some(found) = match_directive(line) else {
            self.done = true;
            return Ok(None);
        };
        if !matches!(found.name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if !self.seen.insert(found.name.clone()) {
            return Err((
                0,
                format!("only one {} parser directive can be used", found.name),
            ));
        }
        Ok(Some(found))
    }
}

/// Matches `#[ \t]*NAME[ \t]*=[ \t]*VALUE[ \t]*` with NAME = `[A-Za-z][A-Za-z0-9]*`.
fn match_directive(line: &str) -> Option<FoundDirective> {
    let body = line.strip_prefix('#')?;
    let body = body.trim_start_matches([' ', '\t']);
    if !body.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let name_len = body
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(body.len());
    let name = &body[..name_len];
    let after_name = body[name_len..].trim_start_matches([' ', '\t']);
    let after_eq = after_name.strip_prefix('=')?;
    let value_start = after_eq.trim_start_matches([' ', '\t']);
    let value = value_start.trim_end_matches([' ', '\t']);
    if value.is_empty() {
        return None;
    }
    let value_offset = line.chars().count() - value_start.chars().count();
    Some(FoundDirective {
        name: name.to_ascii_lowercase(),
        value: value.to_string(),
        value_offset,
    })
}

/// Parses a Dockerfile.
pub fn parse(input: &[u8]) -> Result<Ast, ParseError> {
    let mut reader = LineReader::new(input);
    let mut directives = Directives::default();
    let mut directive_reader = DirectiveReader::default();
    let mut instructions = Vec::new();
    let mut warnings = Vec::new();

    while let Some(first) = reader.next_line()? {
        let start_line = reader.line;
        let text = trim_newline(&first);
        let stripped = text.trim_start();
        let indent = text.chars().count() - stripped.chars().count();

        let found = directive_reader
            .offer(stripped)
            .map_err(|(offset, message)| ParseError {
                line: start_line,
                column: indent + offset + 1,
                message,
            })?;
        if let Some(found) = found {
            apply_directive(&mut directives, found).map_err(|(offset, message)| ParseError {
                line: start_line,
                column: indent + offset + 1,
                message,
            })?;
        }

        let content = if stripped.starts_with('#') {
            ""
        } else {
            stripped
        };
        let (mut logical, mut complete) = trim_continuation(content, directives.escape);
        if complete && logical.is_empty() {
            continue;
        }

        let mut empty_continuation = false;
        while !complete {
            let Some(next) = reader.next_line()? else {
                break;
            };
            let next = trim_newline(&next);
            let next_stripped = next.trim_start();
            if next_stripped.starts_with('#') {
                continue;
            }
            if next_stripped.is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, done) = trim_continuation(next, directives.escape);
            logical.push_str(&piece);
            complete = done;
        }
        if empty_continuation {
            warnings.push(Warning {
                line: reader.line,
                message: format!(
                    "Empty continuation line found in: {logical} (empty continuation lines will become errors in a future release)"
                ),
            });
        }

        let column = indent + 1;
        let mut instruction =
            parse_instruction(&logical, directives.escape, 0).map_err(|message| ParseError {
                line: start_line,
                column,
                message,
            })?;

        if can_contain_heredoc(&instruction) && logical.contains("<<") {
            let heredoc_column = text
                .find("<<")
                .map_or(column, |i| text[..i].chars().count() + 1);
            let specs = heredocs_from_line(&logical).map_err(|message| ParseError {
                line: start_line,
                column: heredoc_column,
                message,
            })?;
            for mut heredoc in specs {
                read_heredoc_body(&mut reader, &mut heredoc).map_err(|e| {
                    e.unwrap_or_else(|| ParseError {
                        line: start_line,
                        column: heredoc_column,
                        message: format!(
                            "unterminated heredoc: no line {:?} ends the heredoc started at line {start_line}",
                            heredoc.name
                        ),
                    })
                })?;
                instruction.heredocs.push(heredoc);
            }
            if let Some(inner) = instruction.onbuild.as_mut() {
                inner.heredocs = instruction.heredocs.clone();
            }
        }

        set_location(&mut instruction, start_line, reader.line, column);
        instructions.push(instruction);
    }

    if instructions.is_empty() {
        return Err(ParseError {
            line: reader.line.max(1),
            column: 1,
            message: "file with no instructions".to_string(),
        });
    }
    Ok(Ast {
        directives,
        instructions,
        warnings,
    })
}

fn apply_directive(
    directives: &mut Directives,
    found: FoundDirective,
) -> Result<(), (usize, String)> {
    match found.name.as_str() {
        "escape" => match found.value.as_str() {
            "\\" => directives.escape = '\\',
            "`" => directives.escape = '`',
            other => {
                return Err((
                    found.value_offset,
                    format!("invalid escape token '{other}' does not match ` or \\"),
                ))
            }
        },
        "syntax" => directives.syntax = Some(found.value),
        "check" => directives.check = Some(found.value),
        _ => {}
    }
    Ok(())
}

fn set_location(instruction: &mut Instruction, start: usize, end: usize, column: usize) {
    instruction.start_line = start;
    instruction.end_line = end;
    instruction.column = column;
    if let Some(inner) = instruction.onbuild.as_mut() {
        set_location(inner, start, end, column);
    }
}

/// Reads body lines up to the terminator. `Err(None)` means end of input came first.
fn read_heredoc_body(
    reader: &mut LineReader<'_>,
    heredoc: &mut Heredoc,
) -> Result<(), Option<ParseError>> {
    while let Some(line) = reader.next_line().map_err(Some)? {
        let mut candidate = trim_newline(&line);
        let mut body_line = line.as_str();
        if heredoc.chomp {
            candidate = candidate.trim_start_matches('\t');
            body_line = body_line.trim_start_matches('\t');
        }
        if candidate == heredoc.name {
            return Ok(());
        }
        heredoc.content.push_str(body_line);
    }
    Err(None)
}

fn can_contain_heredoc(instruction: &Instruction) -> bool {
    let target = match (&instruction.onbuild, instruction.keyword.as_str()) {
        (Some(inner), "onbuild") => inner,
        _ => instruction,
    };
    matches!(target.keyword.as_str(), "run" | "copy" | "add") && !target.json
}

/// Finds heredoc words (`[n]<<[-]NAME`) in a logical line, in order, bodies still empty.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let no_env: Vec<(String, String)> = Vec::new();
    let lexer = Expander::new(&no_env, '\\')
        .with_raw_quotes(true)
        .with_raw_escapes(true);
    // A line the shell lexer cannot split (say, an unbalanced quote) has no heredocs.
    let Ok(words) = lexer.process_words(line) else {
        return Ok(Vec::new());
    };
    let mut heredocs = Vec::new();
    for word in words {
        if let Some(heredoc) = parse_heredoc_word(&word)? {
            heredocs.push(heredoc);
        }
    }
    Ok(heredocs)
}

/// Parses one shell word as a heredoc opener, or returns `None` if it is not one.
fn parse_heredoc_word(word: &str) -> Result<Option<Heredoc>, String> {
    let digits_len = word
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(word.len());
    let (digits, after_digits) = word.split_at(digits_len);
    let Some(after) = after_digits.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let no_env: Vec<(String, String)> = Vec::new();
    let lexer = Expander::new(&no_env, '\\').with_skip_unset(true);
    let describe = |e: crate::shell::ExpandError| format!("invalid heredoc delimiter: {e}");
    let words = lexer.process_words(rest).map_err(describe)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw_words = lexer
        .with_raw_quotes(true)
        .process_words(rest)
        .map_err(describe)?;
    let [raw_name] = raw_words.as_slice() else {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    };
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
        fd: if digits.is_empty() {
            None
        } else {
            digits.parse().ok()
        },
    }))
}

/// Go's `strings.ToLower`, which maps each character to a single character.
fn lower_keyword(keyword: &str) -> String {
    keyword
        .chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect()
}

/// Parses one logical line into an instruction (locations are filled in by the caller).
fn parse_instruction(line: &str, escape: char, depth: usize) -> Result<Instruction, String> {
    let trimmed = line.trim();
    let (keyword, remainder) = match trimmed.find(is_split_space) {
        Some(i) => (
            &trimmed[..i],
            Some(trimmed[i..].trim_start_matches(is_split_space)),
        ),
        None => (trimmed, None),
    };
    let (flags, args_text) = match remainder {
        Some(text) => extract_flags(text, escape),
        None => (Vec::new(), String::new()),
    };
    let rest = args_text.trim();
    let keyword = lower_keyword(keyword);

    let mut instruction = Instruction {
        keyword: keyword.clone(),
        flags,
        args: Vec::new(),
        json: false,
        heredocs: Vec::new(),
        onbuild: None,
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        column: 0,
    };

    match keyword.as_str() {
        "from" | "expose" => instruction.args = split_whitespace(rest),
        "add" | "copy" | "volume" => match parse_json(rest)? {
            Some(args) => (instruction.args, instruction.json) = (args, true),
            None => instruction.args = split_whitespace(rest),
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            (instruction.args, instruction.json) = parse_maybe_json(rest)?;
        }
        "healthcheck" => (instruction.args, instruction.json) = parse_healthcheck(rest)?,
        "env" => instruction.args = parse_name_values(rest, "ENV", escape)?,
        "label" => instruction.args = parse_name_values(rest, "LABEL", escape)?,
        "arg" => instruction.args = split_words(rest, escape),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                instruction.args = vec![rest.to_string()];
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_ONBUILD_NESTING {
                    return Err("ONBUILD instructions nested too deeply".to_string());
                }
                instruction.onbuild = Some(Box::new(parse_instruction(rest, escape, depth + 1)?));
            }
        }
        // Unknown instructions are kept (and rejected later, at build time) with one empty argument.
        _ => instruction.args = vec![String::new()],
    }
    Ok(instruction)
}

/// Splits on runs of `[\t\v\f\r ]`; empty text gives no words.
fn split_whitespace(text: &str) -> Vec<String> {
    text.split(is_split_space)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The JSON (exec) form: `Some(strings)` for a JSON array of strings, `None` if the
/// text is not a JSON array, and an error for an array with non-string elements.
fn parse_json(text: &str) -> Result<Option<Vec<String>>, String> {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|value| match value {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// JSON array, else the whole text as one argument (none if empty).
fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json(rest)? {
        Some(args) => (args, true),
        None => (vec![rest.to_string()], false),
    })
}

/// `HEALTHCHECK TYPE rest`: the type word, then the rest parsed like `CMD`.
fn parse_healthcheck(rest: &str) -> Result<(Vec<String>, bool), String> {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ');
    let type_end = rest.find(is_space).unwrap_or(rest.len());
    if type_end == 0 {
        return Ok((Vec::new(), false));
    }
    let command = rest[type_end..].trim_start_matches(is_space);
    let (command_args, json) = parse_maybe_json(command)?;
    let mut args = vec![rest[..type_end].to_string()];
    args.extend(command_args);
    Ok((args, json))
}

/// `ENV`/`LABEL`: `key value` (legacy) or `k=v k2=v2`, as key/value/separator triples.
fn parse_name_values(rest: &str, instruction: &str, escape: char) -> Result<Vec<String>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_split_space) else {
            return Err(format!("{instruction} must have two arguments"));
        };
        let value = rest[i..].trim_start_matches(is_split_space);
        return Ok(vec![
            rest[..i].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(word)
            ));
        };
        args.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(args)
}

/// BuildKit's word splitter for ENV/LABEL/ARG: splits on unquoted whitespace and
/// keeps quotes and escapes in the words.
fn split_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos < chars.len() {
        let c = chars[pos];
        pos += 1;
        if phase == Phase::Spaces {
            if c.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if c == escape {
                // An escape at the very end is dropped; otherwise it and the next char are kept.
                let Some(&next) = chars.get(pos) else {
                    continue;
                };
                word.push(c);
                word.push(next);
                pos += 1;
                continue;
            }
            word.push(c);
            continue;
        }
        // Inside quotes.
        if c == quote {
            phase = Phase::Word;
        }
        if c == escape && quote != '\'' {
            let Some(&next) = chars.get(pos) else {
                phase = Phase::Word;
                continue;
            };
            word.push(c);
            word.push(next);
            pos += 1;
            continue;
        }
        word.push(c);
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Takes leading `--flag` words off the argument text; returns the flags (quotes and
/// escapes removed) and the remaining text. A bare `--` ends the flags and is dropped.
fn extract_flags(line: &str, escape: char) -> (Vec<String>, String) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = line.chars().collect();
    let rest_from = |pos: usize| chars[pos..].iter().collect::<String>();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos < chars.len() {
        let mut c = chars[pos];
        if phase == Phase::Spaces {
            if c.is_whitespace() {
                pos += 1;
                continue;
            }
            if c != '-' || chars.get(pos + 1) != Some(&'-') {
                return (flags, rest_from(pos));
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if c.is_whitespace() {
                if word == "--" {
                    return (flags, rest_from(pos));
                }
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    flags.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if c == escape {
                match chars.get(pos + 1) {
                    None => {
                        pos += 1;
                        continue;
                    }
                    Some(&next) => {
                        pos += 1;
                        c = next;
                    }
                }
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Inside quotes.
        if c == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if c == escape {
            match chars.get(pos + 1) {
                None => {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                Some(&next) => {
                    pos += 1;
                    c = next;
                }
            }
        }
        word.push(c);
        pos += 1;
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    (flags, String::new())
}

/// Quotes a string exactly like Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ if is_go_printable(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            _ if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            _ => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and ASCII space.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_ascii() {
        return c.is_ascii_graphic();
    }
    let category = unicode_general_category::get_general_category(c).abbreviation();
    matches!(
        category.as_bytes().first(),
        Some(b'L' | b'M' | b'N' | b'P' | b'S')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_go() {
        assert_eq!(go_quote("a\tb"), r#""a\tb""#);
        assert_eq!(go_quote("\0\x7f"), r#""\x00\x7f""#);
        assert_eq!(
            go_quote("\u{a0}\u{2603}\u{1F600}\u{E000}"),
            "\"\\u00a0\u{2603}\u{1F600}\\ue000\""
        );
        assert_eq!(go_quote("\u{F0000}"), r#""\U000f0000""#);
        assert_eq!(go_quote("\"\\"), r#""\"\\""#);
    }

    #[test]
    fn continuation_test() {
        assert_eq!(trim_continuation("a \\  ", '\\'), ("a ".to_string(), false));
        assert_eq!(trim_continuation("\\", '\\'), (String::new(), false));
        assert_eq!(
            trim_continuation("a\\\\", '\\'),
            ("a\\\\".to_string(), true)
        );
        assert_eq!(trim_continuation("a`", '`'), ("a".to_string(), false));
        assert_eq!(trim_continuation("a\\", '`'), ("a\\".to_string(), true));
    }

    #[test]
    fn flags_are_unquoted() {
        let (flags, rest) = extract_flags("--chown=\"a b\" --x=a\\ b -- foo", '\\');
        assert_eq!(flags, ["--chown=a b", "--x=a b"]);
        assert_eq!(rest, " foo");
    }
}
