//! The `depends_on` graph: dependency order and cycle detection.

use crate::yaml::Node;

fn dependencies(model: &Node, service: &str) -> Vec<String> {
    model
        .get("services")
        .and_then(|s| s.get(service))
        .and_then(|s| s.get("depends_on"))
        .and_then(Node::as_map)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Service names with every dependency before its dependents, or an error
/// naming the cycle (compose-go's wording).
pub fn dependency_order(model: &Node) -> Result<Vec<String>, String> {
    let names: Vec<String> = model
        .get("services")
        .and_then(Node::as_map)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut order = Vec::new();
    let mut state = std::collections::HashMap::new();
    for name in &names {
        visit(model, name, &mut state, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

fn visit(
    model: &Node,
    name: &str,
    state: &mut std::collections::HashMap<String, bool>,
    stack: &mut Vec<String>,
    order: &mut Vec<String>,
) -> Result<(), String> {
    match state.get(name) {
        Some(true) => return Ok(()),
        Some(false) => {
            let start = stack.iter().position(|s| s == name).unwrap_or(0);
            let mut cycle: Vec<String> = stack[start..].to_vec();
            cycle.push(name.to_string());
            return Err(format!("dependency cycle detected: {}", cycle.join(" -> ")));
        }
        None => {}
    }
    state.insert(name.to_string(), false);
    stack.push(name.to_string());
    for dep in dependencies(model, name) {
        visit(model, &dep, state, stack, order)?;
    }
    stack.pop();
    state.insert(name.to_string(), true);
    order.push(name.to_string());
    Ok(())
}

pub fn check_dependencies(model: &Node) -> Result<(), String> {
    dependency_order(model).map(|_| ())
}
