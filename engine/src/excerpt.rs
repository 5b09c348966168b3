//! The Dockerfile excerpt docker buildx prints under an error or a check warning: a few
//! lines around the offending one, which is marked `>>>`, between dashed rules.

const RULE: &str = "--------------------";

/// Lines `start..=end` (1-based) of `source` with BuildKit's context: two lines on each
/// side for a single line, one for a range, fewer at the file's edges.
pub fn excerpt(source: &[u8], start: usize, end: usize) -> String {
    let text = String::from_utf8_lossy(source);
    let lines: Vec<&str> = text.lines().collect();
    if start == 0 || start > lines.len() {
        return String::new();
    }
    let end = end.clamp(start, lines.len());
    let (mut first, mut last) = (start, end);
    // BuildKit's padding loop: each round widens each side by at most one line and
    // counts one more, so context near an edge is not moved to the other side.
    let pad = if start == end { 4 } else { 2 };
    let mut counted = 0;
    while counted < pad {
        if first > 1 {
            first -= 1;
            counted += 1;
        }
        if last < lines.len() {
            last += 1;
            counted += 1;
        }
        counted += 1;
    }
    let mut out = String::from(RULE);
    out.push('\n');
    for n in first..=last {
        let marker = if (start..=end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>3} | {marker} {}\n", lines[n - 1]).replace(" \n", "\n"));
    }
    out.push_str(RULE);
    out
}

/// A Dockerfile error (`FILE:LINE:COL: message`) followed by the excerpt.
pub fn dockerfile_error(err: &frontend::lower::DockerfileError, source: &[u8]) -> String {
    let head = format!("{}:{}:{}: {}", err.file, err.line, err.column, err.message);
    match excerpt(source, err.line, err.line) {
        ex if ex.is_empty() => head,
        ex => format!("{head}\n{ex}"),
    }
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn marks_the_line_with_context() {
        let src = b"FROM a\nRUN b\nRUN c\nRUN d\nRUN e\nRUN f\n";
        assert_eq!(
            excerpt(src, 3, 3),
            "--------------------\n   1 |     FROM a\n   2 |     RUN b\n   3 | >>> RUN c\n   4 |     RUN d\n   5 |     RUN e\n--------------------"
        );
        assert_eq!(
            excerpt(src, 1, 1),
            "--------------------\n   1 | >>> FROM a\n   2 |     RUN b\n   3 |     RUN c\n--------------------"
        );
        assert_eq!(excerpt(src, 9, 9), "");
    }
}
