//! Build-check warnings after a build (the summary) and the `builder build --check` report.

use frontend::checks::CheckWarning;

/// Prints, when dropped (the build's end, success or failure), the summary docker buildx
/// prints after a build: `N warning(s) found:` and ` - Rule: message (line N)` each.
#[must_use = "the summary prints when this is dropped"]
pub struct WarningSummary {
    pub lines: Vec<String>,
}

impl Drop for WarningSummary {
    fn drop(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        let n = self.lines.len();
        eprintln!("{n} warning{} found:", if n == 1 { "" } else { "s" });
        for line in &self.lines {
            eprintln!(" - {line}");
        }
    }
}

/// The `--check` report on stdout, laid out as `docker build --check` does (the count,
/// then per warning the rule and its documentation URL, the position and a source
/// excerpt); returns the exit code (1 when anything was found).
pub fn print_check(warnings: &[CheckWarning], file: &str, source: &[u8]) -> i32 {
    let n = warnings.len();
    if n == 0 {
        println!("Check complete, no warnings found.");
        return 0;
    }
    println!(
        "Check complete, {n} warning{} found!",
        if n == 1 { " has been" } else { "s have been" }
    );
    for w in warnings {
        println!("\nWARNING: {} - {}", w.rule, rule_url(w.rule));
        println!("{file}:{}:{}: {}", w.line, w.column, w.display());
        let excerpt = crate::excerpt::excerpt(source, w.line, w.line);
        if !excerpt.is_empty() {
            println!("{excerpt}");
        }
    }
    1
}

/// The documentation page BuildKit links for a rule: `JSONArgsRecommended` →
/// `.../rule/json-args-recommended/`.
fn rule_url(rule: &str) -> String {
    let chars: Vec<char> = rule.chars().collect();
    let mut slug = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        let starts_word = c.is_ascii_uppercase()
            && prev.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
            });
        if starts_word {
            slug.push('-');
        }
        slug.push(c.to_ascii_lowercase());
    }
    format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
}

#[cfg(test)]
mod tests {
    use super::rule_url;

    #[test]
    fn rule_urls_are_kebab_case() {
        assert_eq!(
            rule_url("JSONArgsRecommended"),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        assert_eq!(
            rule_url("UndefinedArgInFrom"),
            "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"
        );
    }
}
