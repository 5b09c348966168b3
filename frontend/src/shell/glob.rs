//! Shell glob patterns (`*`, `?`, `[...]`) as used by `${v#p}`, `${v%p}` and `${v/p/r}`.
//!
//! Matching follows bash: a pattern must match the whole candidate text, and the
//! callers below pick the shortest or longest candidate as the modifier demands.

/// One element of a parsed pattern; every element except `Star` consumes one character.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    AnyChar,
    Star,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum ClassItem {
    Char(char),
    Range(char, char),
    Named(NamedClass),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NamedClass {
    Alnum,
    Alpha,
    Blank,
    Cntrl,
    Digit,
    Graph,
    Lower,
    Print,
    Punct,
    Space,
    Upper,
    Xdigit,
}

impl NamedClass {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "alnum" => Self::Alnum,
            "alpha" => Self::Alpha,
            "blank" => Self::Blank,
            "cntrl" => Self::Cntrl,
            "digit" => Self::Digit,
            "graph" => Self::Graph,
            "lower" => Self::Lower,
            "print" => Self::Print,
            "punct" => Self::Punct,
            "space" => Self::Space,
            "upper" => Self::Upper,
            "xdigit" => Self::Xdigit,
            _ => return None,
        })
    }

    fn contains(self, c: char) -> bool {
        match self {
            Self::Alnum => c.is_alphanumeric(),
            Self::Alpha => c.is_alphabetic(),
            Self::Blank => c == ' ' || c == '\t',
            Self::Cntrl => c.is_control(),
            Self::Digit => c.is_ascii_digit(),
            Self::Graph => !c.is_control() && !c.is_whitespace(),
            Self::Lower => c.is_lowercase(),
            Self::Print => !c.is_control(),
            Self::Punct => c.is_ascii_punctuation(),
            Self::Space => c.is_whitespace(),
            Self::Upper => c.is_uppercase(),
            Self::Xdigit => c.is_ascii_hexdigit(),
        }
    }
}

impl Token {
    fn matches_char(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyChar => true,
            Token::Star => false,
            Token::Class { negated, items } => {
                let hit = items.iter().any(|item| match item {
                    ClassItem::Char(x) => *x == c,
                    ClassItem::Range(lo, hi) => *lo <= c && c <= *hi,
                    ClassItem::Named(class) => class.contains(c),
                });
                hit != *negated
            }
        }
    }
}

/// A compiled shell glob pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `source`; `escape` makes the next character literal (quoted text arrives escaped).
    pub(crate) fn new(source: &str, escape: char) -> Pattern {
        let chars: Vec<char> = source.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == escape {
                // A trailing escape has nothing to protect and stands for itself.
                let literal = chars.get(i + 1).copied().unwrap_or(c);
                tokens.push(Token::Literal(literal));
                i += 2;
                continue;
            }
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyChar);
                    i += 1;
                }
                '[' => match parse_class(&chars, i + 1, escape) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                _ => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Pattern { tokens }
    }

    fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the pattern matches all of `text`.
    fn matches(&self, text: &[char]) -> bool {
        self.prefix_matches(text).last().copied().unwrap_or(false)
    }

    /// `result[i]` tells whether the pattern matches `text[..i]`, for every `i` in
    /// `0..=text.len()`, in one pass (a set-of-states simulation, so no backtracking).
    fn prefix_matches(&self, text: &[char]) -> Vec<bool> {
        let tokens = &self.tokens;
        let accept = tokens.len();
        // `*` can match nothing, so a live state in front of it also makes the next one live.
        let close = |states: &mut Vec<bool>| {
            for i in 0..accept {
                if states[i] && tokens[i] == Token::Star {
                    states[i + 1] = true;
                }
            }
        };
        let mut result = vec![false; text.len() + 1];
        let mut states = vec![false; accept + 1];
        states[0] = true;
        close(&mut states);
        result[0] = states[accept];
        for (i, &c) in text.iter().enumerate() {
            let mut next = vec![false; accept + 1];
            let mut alive = false;
            for (state, token) in tokens.iter().enumerate() {
                if !states[state] {
                    continue;
                }
                if *token == Token::Star {
                    next[state] = true;
                    alive = true;
                } else if token.matches_char(c) {
                    next[state + 1] = true;
                    alive = true;
                }
            }
            if !alive {
                break;
            }
            close(&mut next);
            result[i + 1] = next[accept];
            states = next;
        }
        result
    }

    fn reversed(&self) -> Pattern {
        Pattern {
            tokens: self.tokens.iter().rev().cloned().collect(),
        }
    }

    /// `${v#p}` (shortest) and `${v##p}` (longest): remove a matching prefix.
    pub(crate) fn remove_prefix(&self, value: &str, longest: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        match pick(&self.prefix_matches(&chars), longest) {
            Some(len) => chars[len..].iter().collect(),
            None => value.to_string(),
        }
    }

    /// `${v%p}` (shortest) and `${v%%p}` (longest): remove a matching suffix.
    pub(crate) fn remove_suffix(&self, value: &str, longest: bool) -> String {
        // A suffix match is a prefix match of the reversed pattern on the reversed text.
        let reversed: Vec<char> = value.chars().rev().collect();
        match pick(&self.reversed().prefix_matches(&reversed), longest) {
            Some(len) => reversed[len..].iter().rev().collect(),
            None => value.to_string(),
        }
    }

    /// `${v/p/r}` and `${v//p/r}`: replace the leftmost (or every) longest match.
    pub(crate) fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        if self.is_empty() {
            return value.to_string();
        }
        let chars: Vec<char> = value.chars().collect();
        if chars.is_empty() {
            // Only an all-`*` pattern matches the empty value, as in bash.
            return if self.matches(&[]) {
                replacement.to_string()
            } else {
                String::new()
            };
        }
        let mut out = String::new();
        let mut pos = 0;
        let mut replaced_once = false;
        while pos < chars.len() {
            if all || !replaced_once {
                let ends = self.prefix_matches(&chars[pos..]);
                // Empty matches are skipped so that the scan always advances.
                if let Some(len) = ends.iter().rposition(|&hit| hit).filter(|&len| len > 0) {
                    out.push_str(replacement);
                    pos += len;
                    replaced_once = true;
                    continue;
                }
            }
            out.push(chars[pos]);
            pos += 1;
        }
        out
    }
}

/// The shortest or longest matching length from a `prefix_matches` table.
fn pick(ends: &[bool], longest: bool) -> Option<usize> {
    if longest {
        ends.iter().rposition(|&hit| hit)
    } else {
        ends.iter().position(|&hit| hit)
    }
}

/// Parses a bracket expression whose body starts at `start` (just after `[`).
fn parse_class(chars: &[char], start: usize, escape: char) -> Option<(Token, usize)> {
    let mut j = start;
    let mut negated = false;
    if matches!(chars.get(j), Some('!') | Some('^')) {
        negated = true;
        j += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(j)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, items }, j + 1));
        }
        first = false;
        if c == '[' && chars.get(j + 1) == Some(&':') {
            let rest = &chars[j + 2..];
            if let Some(end) = rest.windows(2).position(|w| w == [':', ']']) {
                let name: String = rest[..end].iter().collect();
                items.push(ClassItem::Named(NamedClass::from_name(&name)?));
                j += 2 + end + 2;
                continue;
            }
        }
        if c == escape {
            c = *chars.get(j + 1)?;
            j += 1;
        }
        j += 1;
        if chars.get(j) == Some(&'-') && chars.get(j + 1).is_some_and(|&n| n != ']') {
            let mut hi = chars[j + 1];
            j += 2;
            if hi == escape {
                hi = *chars.get(j)?;
                j += 1;
            }
            items.push(ClassItem::Range(c, hi));
        } else {
            items.push(ClassItem::Char(c));
        }
    }
}

/// Escapes glob metacharacters so quoted text matches literally.
pub(crate) fn quote_meta(text: &str, escape: char) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']') || c == escape {
            out.push(escape);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> Pattern {
        Pattern::new(p, '\\')
    }

    #[test]
    fn whole_text_matching() {
        assert!(pat("a*c").matches(&['a', 'b', 'b', 'c']));
        assert!(pat("a?c").matches(&['a', 'x', 'c']));
        assert!(!pat("a?c").matches(&['a', 'c']));
        assert!(pat("*").matches(&[]));
        assert!(pat("[a-c]x").matches(&['b', 'x']));
        assert!(!pat("[!a-c]x").matches(&['b', 'x']));
        assert!(pat("[]]").matches(&[']']));
        assert!(pat("[[:digit:]]").matches(&['7']));
        assert!(pat("\\*").matches(&['*']));
        assert!(!pat("\\*").matches(&['a']));
        assert!(pat("[ab").matches(&['[', 'a', 'b']));
    }
}
