//! Docker's path-pattern rules (moby/patternmatcher), shared by `.dockerignore`
//! and `COPY --exclude`. They are not gitignore's: patterns are anchored at the
//! root (`*.md` matches only at the root), `**` spans directories, `!`
//! re-includes, the last matching pattern wins, and a pattern that matches a
//! parent directory matches everything below it.

use regex::Regex;

struct Pattern {
    text: String,
    exclusion: bool,
    regex: Regex,
    depth: usize,
}

/// An ordered list of patterns.
#[derive(Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
}

/// Converts one cleaned pattern to an anchored regex, as patternmatcher does.
fn to_regex(pattern: &str) -> Result<Regex, String> {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                    re.push_str("(.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => {
                i += 1;
                match chars.get(i) {
                    Some(n) => re.push_str(&regex::escape(&n.to_string())),
                    None => return Err(format!("bad escape at end of pattern {pattern:?}")),
                }
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|&x| x == ']')
                    .ok_or_else(|| format!("unterminated [ in pattern {pattern:?}"))?;
                let class: String = chars[i + 1..i + end].iter().collect();
                let class = class
                    .strip_prefix('^')
                    .or_else(|| class.strip_prefix('!'))
                    .map(|c| format!("^{c}"))
                    .unwrap_or(class);
                re.push('[');
                re.push_str(&class.replace('\\', "\\\\"));
                re.push(']');
                i += end;
            }
            _ => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).map_err(|e| format!("invalid pattern {pattern:?}: {e}"))
}

/// Cleans a path like Go's filepath.Clean, relative to the root.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

impl PatternMatcher {
    /// Builds a matcher from patterns, each optionally prefixed by `!`. Blank
    /// patterns are skipped; an error names the pattern's position (1-based).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, (usize, String)> {
        let mut out = Vec::new();
        for (n, line) in patterns.into_iter().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exclusion, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let body = clean(body);
            if body == "." && !exclusion {
                // Matching "." would drop the whole tree; Docker ignores such a pattern.
                continue;
            }
            let regex = to_regex(&body).map_err(|e| (n + 1, e))?;
            let depth = body.split('/').count();
            out.push(Pattern {
                text: body,
                exclusion,
                regex,
                depth,
            });
        }
        Ok(Self { patterns: out })
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a slash-separated relative path is matched (the last matching pattern wins).
    pub fn matches(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            let mut hit = p.regex.is_match(rel);
            if !hit && parts.len() > 1 && p.depth < parts.len() {
                hit = p.regex.is_match(&parts[..p.depth].join("/"));
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a `!` pattern might re-include something below a matched directory.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns.iter().any(|p| {
            p.exclusion
                && (format!("{}/", p.text).starts_with(&prefix)
                    || p.text.contains('*')
                    || p.text.contains('?')
                    || p.text.contains('['))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> PatternMatcher {
        PatternMatcher::new(patterns.iter().copied()).unwrap()
    }

    #[test]
    fn star_is_anchored_and_double_star_spans() {
        assert!(m(&["*.md"]).matches("README.md"));
        assert!(!m(&["*.md"]).matches("docs/README.md"));
        assert!(m(&["**/*.md"]).matches("a/b/c.md"));
    }

    #[test]
    fn exception_and_parent_match() {
        let i = m(&["vendor", "!vendor/keep"]);
        assert!(i.matches("vendor/x/y"));
        assert!(!i.matches("vendor/keep"));
        assert!(i.may_reinclude_under("vendor"));
    }

    #[test]
    fn bad_pattern_names_its_position() {
        let err = PatternMatcher::new(["ok", "a[b"]).err().unwrap();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("unterminated"), "{}", err.1);
    }
}
