//! `.dockerignore` matching with Docker's own rules (moby/patternmatcher), which
//! are not gitignore's: patterns are anchored at the context root (`*.md`
//! matches only at the root), `**` spans directories, `!` re-includes, the
//! last matching pattern wins, and a pattern that matches a parent directory
//! excludes everything below it.

use regex::Regex;
use std::path::{Path, PathBuf};

struct Pattern {
    text: String,
    exclusion: bool,
    regex: Regex,
    depth: usize,
}

/// A parsed ignore file.
#[derive(Default)]
pub struct IgnoreMatcher {
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

impl IgnoreMatcher {
    /// Parses the text of an ignore file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let body = clean(body);
            if body == "." && !exclusion {
                // Ignoring "." would drop the whole context; Docker ignores such a line.
                continue;
            }
            let regex =
                to_regex(&body).map_err(|e| format!(".dockerignore line {}: {e}", n + 1))?;
            let depth = body.split('/').count();
            patterns.push(Pattern {
                text: body,
                exclusion,
                regex,
                depth,
            });
        }
        Ok(Self { patterns })
    }

    /// Whether a slash-separated relative path is excluded.
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

    /// Whether a `!` pattern might re-include something below an excluded directory.
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

/// The build context directory with its ignore rules.
pub struct ContextDir {
    root: PathBuf,
    ignore: IgnoreMatcher,
}

impl ContextDir {
    /// Reads `<dockerfile>.dockerignore` next to a custom Dockerfile if present, else `.dockerignore` in the context.
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<Self, String> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            if let Some(name) = df.file_name() {
                candidates
                    .push(df.with_file_name(format!("{}.dockerignore", name.to_string_lossy())));
            }
        }
        candidates.push(root.join(".dockerignore"));
        let mut ignore = IgnoreMatcher::default();
        for c in candidates {
            if let Ok(text) = std::fs::read_to_string(&c) {
                ignore =
                    IgnoreMatcher::parse(&text).map_err(|e| format!("{}: {e}", c.display()))?;
                break;
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            ignore,
        })
    }
}

impl solver::context::LocalSource for ContextDir {
    fn root(&self) -> &Path {
        &self.root
    }
    fn is_excluded(&self, rel: &str) -> bool {
        self.ignore.matches(rel)
    }
    fn may_reinclude_under(&self, rel_dir: &str) -> bool {
        self.ignore.may_reinclude_under(rel_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &str) -> IgnoreMatcher {
        IgnoreMatcher::parse(patterns).unwrap()
    }

    #[test]
    fn star_matches_only_at_root() {
        let i = m("*.md");
        assert!(i.matches("README.md"));
        assert!(!i.matches("docs/README.md"));
    }

    #[test]
    fn double_star_spans_directories() {
        let i = m("**/*.md");
        assert!(i.matches("README.md"));
        assert!(i.matches("a/b/c.md"));
        assert!(!i.matches("a/b/c.txt"));
    }

    #[test]
    fn last_match_wins_and_exceptions_reinclude() {
        let i = m("*.md\n!README.md");
        assert!(i.matches("CHANGES.md"));
        assert!(!i.matches("README.md"));
        let i = m("!README.md\n*.md");
        assert!(i.matches("README.md"));
    }

    #[test]
    fn parent_directory_match_excludes_children() {
        let i = m("node_modules\n!node_modules/keep.js");
        assert!(i.matches("node_modules"));
        assert!(i.matches("node_modules/a/b.js"));
        assert!(!i.matches("node_modules/keep.js"));
        assert!(i.may_reinclude_under("node_modules"));
        assert!(!m("node_modules").may_reinclude_under("node_modules"));
    }

    #[test]
    fn comments_blank_lines_and_leading_slash() {
        let i = m("# comment\n\n/build\n./tmp/\n");
        assert!(i.matches("build"));
        assert!(i.matches("tmp/x"));
        assert!(!i.matches("src/build"));
    }
}
