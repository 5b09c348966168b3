//! `.dockerignore` matching with Docker's own rules (moby/patternmatcher), which
//! are not gitignore's: patterns are anchored at the context root (`*.md`
//! matches only at the root), `**` spans directories, `!` re-includes, the
//! last matching pattern wins, and a pattern that matches a parent directory
//! excludes everything below it.

use llb::patterns::PatternMatcher;
use std::path::{Path, PathBuf};

/// A parsed ignore file.
#[derive(Default)]
pub struct IgnoreMatcher {
    patterns: PatternMatcher,
}

impl IgnoreMatcher {
    /// Parses the text of an ignore file.
    pub fn parse(text: &str) -> Result<Self, String> {
        // A UTF-8 byte order mark is not part of the first pattern (Docker trims it).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // Comment lines become blank ones so that error positions stay line numbers.
        let lines = text.lines().map(|l| {
            if l.trim_start().starts_with('#') {
                ""
            } else {
                l
            }
        });
        let patterns = PatternMatcher::new(lines)
            .map_err(|(line, e)| format!(".dockerignore line {line}: {e}"))?;
        Ok(Self { patterns })
    }

    /// Whether a slash-separated relative path is excluded.
    pub fn matches(&self, rel: &str) -> bool {
        self.patterns.matches(rel)
    }

    /// Whether a `!` pattern might re-include something below an excluded directory.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        self.patterns.may_reinclude_under(dir)
    }
}

/// The build context directory with its ignore rules.
pub struct ContextDir {
    root: PathBuf,
    ignore: IgnoreMatcher,
}

impl ContextDir {
    /// Reads `<dockerfile>.dockerignore` next to a custom Dockerfile if present, else `.dockerignore` in the context.
    /// For the main context pass the Dockerfile even when it is the default
    /// `Dockerfile`: BuildKit reads `Dockerfile.dockerignore` then too.
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

impl llb::LocalSource for ContextDir {
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
    fn byte_order_mark_and_indented_comments() {
        let i = m("\u{feff}secret\n   # not a pattern\n");
        assert!(i.matches("secret"));
        assert!(!i.matches("# not a pattern"));
    }

    #[test]
    fn comments_blank_lines_and_leading_slash() {
        let i = m("# comment\n\n/build\n./tmp/\n");
        assert!(i.matches("build"));
        assert!(i.matches("tmp/x"));
        assert!(!i.matches("src/build"));
    }
}
