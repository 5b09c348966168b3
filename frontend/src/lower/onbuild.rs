//! ONBUILD: running a base image's triggers (`command::OnBuildCommand` records them).

use super::*;
use crate::command::NOT_TRIGGERS;

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
