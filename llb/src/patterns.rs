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
                // "**/" is read as "**"; only a trailing "**" is a plain "anything".
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                }
                if i + 1 >= chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
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
                // Docker hands the class to Go's regexp as written: `^` negates, `!` is a
                // plain character.
                let class: String = chars[i + 1..i + end].iter().collect();
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
            out.push(Pattern {
                text: body,
                exclusion,
                regex,
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
        // A pattern that matches any parent directory matches the path too
        // (patternmatcher's MatchesOrParentMatches, which BuildKit's walker uses).
        let parents: Vec<&str> = rel.match_indices('/').map(|(i, _)| &rel[..i]).collect();
        let mut matched = false;
        for p in &self.patterns {
            let hit = p.regex.is_match(rel) || parents.iter().any(|d| p.regex.is_match(d));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a matched directory is still walked for `!` patterns: only when one of
    /// them starts with the directory's path, as BuildKit's walker (fsutil) decides. A
    /// wildcard exception like `!**/keep` does not reach into an excluded directory.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&prefix))
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
    fn any_matching_parent_matches_like_docker() {
        // Docker checks every parent directory, not only the one at the pattern's depth.
        assert!(m(&["**/foo"]).matches("a/b/foo/c"));
        assert!(m(&["a/*/c"]).matches("a/b/c/d/e"));
        assert!(!m(&["a/*/c"]).matches("a/b/d/c"));
    }

    #[test]
    fn double_star_and_classes_compile_like_patternmatcher() {
        // "**" not at the end is "any number of leading directories", never a partial name.
        assert!(m(&["**.txt"]).matches("d/.txt"));
        assert!(!m(&["**.txt"]).matches("a.txt"));
        assert!(m(&["a/**"]).matches("a/b/c"));
        // Only `^` negates a class; `!` is an ordinary character there.
        assert!(!m(&["[^a]x"]).matches("ax"));
        assert!(m(&["[!a]x"]).matches("ax"));
        assert!(!m(&["[!a]x"]).matches("bx"));
    }

    #[test]
    fn only_exceptions_below_a_directory_reopen_it() {
        let i = m(&["node_modules", "!**/package.json", "!node_modules/keep"]);
        assert!(i.may_reinclude_under("node_modules"));
        assert!(!i.may_reinclude_under("other"));
        let i = m(&["node_modules", "!**/package.json"]);
        assert!(!i.may_reinclude_under("node_modules"));
    }

    #[test]
    fn bad_pattern_names_its_position() {
        let err = PatternMatcher::new(["ok", "a[b"]).err().unwrap();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("unterminated"), "{}", err.1);
    }
}
