//! The order in which stages are lowered: every stage after the stages it uses (its FROM
//! stage, `COPY --from`, `RUN --mount=from=`), so a name may refer to a later stage as in
//! BuildKit; a cycle is an error naming a stage on it.

use crate::parser::Instruction;

/// Needed stages, each after its dependencies (`deps[s]`: the stage and the instruction
/// that uses it); ties keep file order. A cycle gives BuildKit's message and the
/// instruction that closes it.
pub fn dependency_order<'a>(
    needed: &[bool],
    deps: &[Vec<(usize, &'a Instruction)>],
    name: impl Fn(usize) -> String,
) -> Result<Vec<usize>, (String, &'a Instruction)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit<'a>(
        s: usize,
        deps: &[Vec<(usize, &'a Instruction)>],
        marks: &mut [Mark],
        order: &mut Vec<usize>,
        name: &dyn Fn(usize) -> String,
    ) -> Result<(), (String, &'a Instruction)> {
        marks[s] = Mark::Visiting;
        for &(d, ins) in &deps[s] {
            match marks[d] {
                Mark::Done => {}
                Mark::Visiting => {
                    return Err((
                        format!("circular dependency detected on stage: {}", name(d)),
                        ins,
                    ))
                }
                Mark::New => visit(d, deps, marks, order, name)?,
            }
        }
        marks[s] = Mark::Done;
        order.push(s);
        Ok(())
    }
    let mut marks = vec![Mark::New; needed.len()];
    let mut order = Vec::new();
    for s in (0..needed.len()).filter(|&s| needed[s]) {
        if marks[s] == Mark::New {
            visit(s, deps, &mut marks, &mut order, &name)?;
        }
    }
    Ok(order)
}
