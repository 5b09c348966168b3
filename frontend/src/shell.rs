//! Shell-word processing compatible with BuildKit's `shell.Lex`: variable
//! expansion, quote removal, escapes and word splitting.

mod glob;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use glob::Pattern;

/// Deepest `${...}` nesting accepted, so hostile input cannot exhaust the stack.
const MAX_NESTING: usize = 200;

/// A source of variable values for expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is unset.
    fn get(&self, name: &str) -> Option<String>;
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<String> {
        // Later entries override earlier ones, like repeated ENV instructions.
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }
}

impl<T: Env + ?Sized> Env for &T {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

/// An error while processing a word (bad substitution, unterminated quote, `${v?}`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    /// Human-readable description, naming the word that failed.
    pub message: String,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExpandError {}

fn err<T>(message: impl Into<String>) -> Result<T, ExpandError> {
    Err(ExpandError {
        message: message.into(),
    })
}

/// Expands and unquotes shell words against an environment.
#[derive(Clone, Copy)]
pub struct Expander<'a> {
    env: &'a dyn Env,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
}

impl<'a> Expander<'a> {
    /// An expander reading variables from `env`, with `escape` as the escape character.
    pub fn new(env: &'a dyn Env, escape: char) -> Self {
        Expander {
            env,
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
        }
    }

    /// Keep quote characters in the output instead of removing them.
    pub fn with_raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output instead of removing them.
    pub fn with_raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written (`$X`, `${X:-d}`) instead of expanding them.
    pub fn with_skip_unset(mut self, on: bool) -> Self {
        self.skip_unset = on;
        self
    }

    /// Expands `word` and removes quotes and escapes, without splitting it.
    pub fn process_word(&self, word: &str) -> Result<String, ExpandError> {
        self.run(word).map(|done| done.result)
    }

    /// Expands `word`, then splits it on unquoted, unescaped whitespace; empty words are dropped.
    pub fn process_words(&self, word: &str) -> Result<Vec<String>, ExpandError> {
        self.run(word).map(|done| done.words)
    }

    /// Like [`Expander::process_word`], also returning every variable name looked up and
    /// the subset of those names that were unset.
    pub fn process_word_with_matches(
        &self,
        word: &str,
    ) -> Result<(String, BTreeSet<String>, BTreeSet<String>), ExpandError> {
        self.run(word)
            .map(|done| (done.result, done.referenced, done.unset))
    }

    fn run(&self, word: &str) -> Result<Processed, ExpandError> {
        let mut lexer = Lexer {
            chars: word.chars().collect(),
            pos: 0,
            env: self.env,
            escape: self.escape,
            raw_quotes: self.raw_quotes,
            raw_escapes: self.raw_escapes,
            skip_unset: self.skip_unset,
            depth: 0,
            referenced: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        match lexer.process_stop_on(&[], self.raw_escapes, false) {
            Ok((result, words, _)) => Ok(Processed {
                result,
                words,
                referenced: lexer.referenced,
                unset: lexer.unset,
            }),
            Err(e) => err(format!("failed to process {word:?}: {}", e.message)),
        }
    }
}

struct Processed {
    result: String,
    words: Vec<String>,
    referenced: BTreeSet<String>,
    unset: BTreeSet<String>,
}

/// Accumulates the split words alongside the unsplit result.
#[derive(Default)]
struct WordSplitter {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl WordSplitter {
    /// Adds a character that splits words if it is whitespace.
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    depth: usize,
    referenced: BTreeSet<String>,
    unset: BTreeSet<String>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        self.referenced.insert(name.to_string());
        let value = self.env.get(name);
        if value.is_none() {
            self.unset.insert(name.to_string());
        }
        value
    }

    /// Processes up to one of `stops` (consumed and returned) or, when `stops` is
    /// empty, the end of input. `glob` escapes quoted text so that it matches
    /// literally when the result is used as a pattern.
    fn process_stop_on(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
        glob: bool,
    ) -> Result<(String, Vec<String>, Option<char>), ExpandError> {
        if self.depth >= MAX_NESTING {
            return err("substitutions nested too deeply");
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let outcome = self.stop_on_inner(stops, glob);
        self.raw_escapes = saved;
        self.depth -= 1;
        outcome
    }

    fn stop_on_inner(
        &mut self,
        stops: &[char],
        glob: bool,
    ) -> Result<(String, Vec<String>, Option<char>), ExpandError> {
        let mut result = String::new();
        let mut words = WordSplitter::default();
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                self.pos += 1;
                return Ok((result, words.finish(), Some(c)));
            }
            match c {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' | '"' => {
                    let mut text = if c == '\'' {
                        self.process_single_quote()?
                    } else {
                        // In patterns, quoted text is taken literally: unescape it, then
                        // protect its glob characters.
                        let raw = self.raw_escapes && !glob;
                        self.process_double_quote(raw)?
                    };
                    if glob {
                        text = glob::quote_meta(&text, self.escape);
                    }
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                _ => {
                    self.pos += 1;
                    if c == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        // An escape at the very end of the input is dropped.
                        let Some(escaped) = self.next_char() else {
                            break;
                        };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(stop) = stops.last() {
            return err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish(), None))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        self.pos += 1;
        if self.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next_char() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching single-quote",
                    )
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, ExpandError> {
        let mut result = String::new();
        self.pos += 1;
        if self.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching double-quote",
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            // Nothing to escape; the loop then reports the missing quote.
                            None => continue,
                            // Only these can be escaped inside double quotes; elsewhere
                            // the escape character is literal.
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                if raw_escapes {
                                    result.push(c);
                                }
                                result.push(next);
                                self.pos += 1;
                            }
                            Some(_) => result.push(c),
                        }
                    } else {
                        result.push(c);
                    }
                }
            }
        }
    }

    /// Reads a variable name: letters, digits and `_`; a leading digit reads only
    /// digits; a special parameter (`@*#?-$!0`) is one character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !c.is_alphabetic() && !c.is_numeric() && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return err("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return err("syntax error: bad substitution"),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(modifier) = self.next_char() else {
            return err("syntax error: missing '}'");
        };
        match modifier {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = modifier == ':';
                let op = if null_is_unset {
                    match self.next_char() {
                        Some(op @ ('+' | '-' | '?')) => op,
                        Some(other) => {
                            return err(format!("unsupported modifier (:{other}) in substitution"))
                        }
                        None => return err("syntax error: missing '}'"),
                    }
                } else {
                    modifier
                };
                let op_text = if null_is_unset {
                    format!(":{op}")
                } else {
                    op.to_string()
                };
                let is_pattern = op == '#' || op == '%';
                let (word, _) = self.process_operand(&['}'], is_pattern, is_pattern)?;
                let value = self.lookup(&name);
                if self.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{op_text}{word}}}"));
                }
                let usable = value.as_ref().filter(|v| !(null_is_unset && v.is_empty()));
                match op {
                    '-' => Ok(usable.cloned().unwrap_or(word)),
                    '+' => Ok(if usable.is_some() {
                        word
                    } else {
                        String::new()
                    }),
                    '?' => match usable {
                        Some(v) => Ok(v.clone()),
                        None => {
                            let default = if value.is_none() {
                                "is not allowed to be unset"
                            } else {
                                "is not allowed to be empty"
                            };
                            let message = if word.is_empty() { default } else { &word };
                            err(format!("{name}: {message}"))
                        }
                    },
                    _ => {
                        // `##` / `%%` select the longest match.
                        let (longest, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let pattern = Pattern::new(pattern, self.escape);
                        let value = value.unwrap_or_default();
                        Ok(if op == '#' {
                            pattern.remove_prefix(&value, longest)
                        } else {
                            pattern.remove_suffix(&value, longest)
                        })
                    }
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                // As in bash, `${v/p}` (no second slash) deletes the match.
                let (pattern, stopped_at) = self.process_operand(&['/', '}'], true, true)?;
                let replacement = if stopped_at == '/' {
                    self.process_operand(&['}'], false, false)?.0
                } else {
                    String::new()
                };
                let value = self.lookup(&name);
                let Some(value) = value else {
                    if self.skip_unset {
                        let slashes = if all { "//" } else { "/" };
                        return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                Ok(Pattern::new(&pattern, self.escape).replace(&value, &replacement, all))
            }
            other => err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    /// Processes the text of a modifier up to one of `stops`, returning it and the stop found.
    fn process_operand(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
        glob: bool,
    ) -> Result<(String, char), ExpandError> {
        match self.process_stop_on(stops, raw_escapes, glob) {
            Ok((text, _, Some(stop))) => Ok((text, stop)),
            Ok((_, _, None)) => err("syntax error: missing '}'"),
            Err(e) if self.peek().is_none() && !e.message.contains("nested too deeply") => {
                err("syntax error: missing '}'")
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("path", "/usr/local/lib/file.tar.gz"),
            ("v", "abcabc"),
            ("star", "a*c"),
            ("empty", ""),
            ("p", "b*"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn word(w: &str) -> Result<String, ExpandError> {
        let env = env();
        Expander::new(&env, '\\').process_word(w)
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(word(input).as_deref(), Ok(expected), "input {input}");
    }

    #[test]
    fn prefix_removal() {
        check("${path#*/}", "usr/local/lib/file.tar.gz");
        check("${path##*/}", "file.tar.gz");
        check("${v#a}", "bcabc");
        check("${v#x}", "abcabc");
        check("${v#}", "abcabc");
        check("${v##*}", "");
        check("${v#*}", "abcabc");
        check("${v#[ab]}", "bcabc");
        check("${v#[!b]?}", "cabc");
        check("${unset#a}", "");
    }

    #[test]
    fn suffix_removal() {
        check("${path%.*}", "/usr/local/lib/file.tar");
        check("${path%%.*}", "/usr/local/lib/file");
        check("${path%/*}", "/usr/local/lib");
        check("${v%c}", "abcab");
        check("${v%%b*}", "a");
        check("${v%b*}", "abca");
        check("${v%[[:alpha:]]}", "abcab");
    }

    #[test]
    fn replacement() {
        check("${v/b/X}", "aXcabc");
        check("${v//b/X}", "aXcaXc");
        check("${v/b*/X}", "aX");
        check("${v//[ac]/-}", "-b--b-");
        check("${v//?/.}", "......");
        check("${v/x/y}", "abcabc");
        check("${v//b/}", "acac");
        check("${v/b}", "acabc");
        check("${v//b}", "acac");
    }

    #[test]
    fn quoted_and_escaped_patterns_are_literal() {
        check("${star/\"*\"/X}", "aXc");
        check("${star/\\*/X}", "aXc");
        check("${star#'a*'}", "c");
        check("${star#a*}", "*c");
        check("${star##a*}", "");
        // An unquoted expansion inside a pattern stays a pattern, as in bash.
        check("${v#$p}", "abcabc");
        check("${v#a$p}", "cabc");
    }

    #[test]
    fn empty_values() {
        check("${empty//*/r}", "r");
        check("${empty#*}", "");
        check("${empty/a/b}", "");
    }

    #[test]
    fn unsupported_modifiers_fail() {
        for input in [
            "${v=x}", "${v:=x}", "${v:#a}", "${v:%a}", "${v^}", "${v/a", "${v#a",
        ] {
            assert!(word(input).is_err(), "{input} should fail");
        }
    }

    #[test]
    fn matches_report_referenced_and_unset() {
        let env = env();
        let (out, referenced, unset) = Expander::new(&env, '\\')
            .process_word_with_matches("$v-${nope:-x}")
            .expect("valid word");
        assert_eq!(out, "abcabc-x");
        assert_eq!(
            referenced,
            BTreeSet::from(["v".to_string(), "nope".to_string()])
        );
        assert_eq!(unset, BTreeSet::from(["nope".to_string()]));
    }

    #[test]
    fn skip_unset_keeps_references() {
        let env = env();
        let expander = Expander::new(&env, '\\').with_skip_unset(true);
        assert_eq!(
            expander.process_word("$v $nope ${nope:-d}").as_deref(),
            Ok("abcabc $nope ${nope:-d}")
        );
    }

    #[test]
    fn backtick_escape() {
        let env = env();
        let expander = Expander::new(&env, '`');
        assert_eq!(expander.process_word("a`$v\\x").as_deref(), Ok("a$v\\x"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let input = "${a:-".repeat(10_000);
        assert!(word(&input).is_err());
    }
}
