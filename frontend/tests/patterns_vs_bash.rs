//! Differential test: `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`
//! on random values and glob patterns must give what bash gives.

use std::process::Command;

use frontend::shell::Expander;

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn pattern_modifiers_agree_with_bash() {
    let mut rng = Lcg(12345);
    let pattern_chars = ['a', 'b', 'c', '*', '?', '[', ']', '!', '-'];
    let operators = ["#", "##", "%", "%%", "/", "//"];
    let mut script = String::new();
    let mut cases = Vec::new();
    for _ in 0..600 {
        let value: String = (0..rng.below(8))
            .map(|_| ['a', 'b', 'c'][rng.below(3)])
            .collect();
        let pattern: String = (0..rng.below(6))
            .map(|_| pattern_chars[rng.below(pattern_chars.len())])
            .collect();
        let op = operators[rng.below(operators.len())];
        let expr = if op.starts_with('/') {
            format!("${{v{op}{pattern}/X}}")
        } else {
            format!("${{v{op}{pattern}}}")
        };
        script.push_str(&format!("v='{value}'; printf '%s\\n' \"{expr}\"\n"));
        cases.push((value, expr));
    }
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("bash must be installed to run this test");
    let stdout = String::from_utf8(output.stdout).expect("bash prints UTF-8");
    let expected: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        expected.len(),
        cases.len(),
        "bash stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut failures = Vec::new();
    for ((value, expr), want) in cases.iter().zip(expected) {
        let env = vec![("v".to_string(), value.clone())];
        let got = Expander::new(&env, '\\')
            .process_word(expr)
            .unwrap_or_else(|e| format!("error: {e}"));
        if got != want {
            failures.push(format!("v={value:?} {expr}: bash {want:?}, ours {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
