//! ONBUILD: recording triggers in the image, and running a base image's triggers.

use super::*;

/// Instructions that may not be ONBUILD triggers, as in BuildKit.
const NOT_TRIGGERS: &[&str] = &["onbuild", "from", "maintainer"];

/// The trigger text an `ONBUILD` instruction stores in the image config, heredoc bodies included.
pub(super) fn trigger_text(l: &Lowerer, ins: &Instruction) -> Result<String, DockerfileError> {
    let Some(inner) = &ins.onbuild else {
        return Err(l.err(
            ins,
            "ONBUILD requires an instruction, e.g. ONBUILD RUN make",
        ));
    };
    if NOT_TRIGGERS.contains(&inner.keyword.as_str()) {
        return Err(l.err(
            ins,
            format!(
                "{} isn't allowed as an ONBUILD trigger",
                inner.keyword.to_uppercase()
            ),
        ));
    }
    let mut text = ins
        .original
        .split_once(char::is_whitespace)
        .map(|x| x.1.trim().to_string())
        .unwrap_or_default();
    for doc in &ins.heredocs {
        text.push('\n');
        text.push_str(&doc.content);
        text.push_str(&doc.name);
    }
    Ok(text)
}

/// Parses a base image's triggers; they take the FROM line's position for messages.
pub(super) fn parse_triggers(
    l: &Lowerer,
    from: &Instruction,
    triggers: &[String],
) -> Result<Vec<Instruction>, DockerfileError> {
    let mut out = Vec::new();
    for t in triggers {
        let bad = |message: String| {
            l.err(
                from,
                format!("ONBUILD trigger {t:?} of the base image: {message}"),
            )
        };
        let ast = crate::parse(t.as_bytes()).map_err(|e| bad(e.message))?;
        for mut ins in ast.instructions {
            if NOT_TRIGGERS.contains(&ins.keyword.as_str()) {
                return Err(bad(format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    ins.keyword.to_uppercase()
                )));
            }
            ins.start_line = from.start_line;
            ins.end_line = from.end_line;
            ins.column = from.column;
            out.push(ins);
        }
    }
    Ok(out)
}
