//! Build checks (BuildKit's Dockerfile lint rules): warnings with a position, honouring
//! the `# check=skip=...;error=true` directive.

use crate::parser::{Ast, Instruction};
use crate::shell::Expander;
use std::collections::BTreeSet;

/// One rule violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckWarning {
    pub rule: &'static str,
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl CheckWarning {
    /// The way build output shows it: `WARN: Rule: message (line N)`.
    pub fn display(&self) -> String {
        format!("WARN: {}: {} (line {})", self.rule, self.message, self.line)
    }
}

/// Every rule this module knows, for validating `skip=` lists.
pub const RULES: &[&str] = &[
    "StageNameCasing",
    "FromAsCasing",
    "ConsistentInstructionCasing",
    "DuplicateStageName",
    "ReservedStageName",
    "JSONArgsRecommended",
    "LegacyKeyValueFormat",
    "MaintainerDeprecated",
    "MultipleInstructionsDisallowed",
    "WorkdirRelativePath",
    "UndefinedVar",
    "UndefinedArgInFrom",
    "InvalidDefaultArgInFrom",
    "FromPlatformFlagConstDisallowed",
    "SecretsUsedInArgOrEnv",
    "NoEmptyContinuation",
];

/// The `# check=` directive: which rules to skip and whether warnings fail the build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true` (either part optional, `skip=all` skips everything).
    pub fn parse(directive: Option<&str>) -> Self {
        let mut cfg = CheckConfig::default();
        for part in directive.unwrap_or("").split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            cfg.skip_all = true;
                        } else {
                            cfg.skip.insert(rule.to_string());
                        }
                    }
                }
                "error" => cfg.error = v.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        cfg
    }

    pub fn enabled(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.contains(rule)
    }
}

fn warn(out: &mut Vec<CheckWarning>, rule: &'static str, ins: &Instruction, message: String) {
    out.push(CheckWarning {
        rule,
        message,
        line: ins.start_line,
        column: ins.column.max(1),
    });
}

/// The keyword as written (the parser lower-cases `Instruction::keyword`).
fn raw_keyword(ins: &Instruction) -> &str {
    ins.original.split_whitespace().next().unwrap_or("")
}

fn is_secret_name(name: &str) -> bool {
    const TOKENS: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = name.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split(['_', '-']).collect();
    !parts.contains(&"public") && parts.iter().any(|p| TOKENS.contains(p))
}

/// Whether an expanded base name could be an image reference or a stage name.
fn plausible_base(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with([':', '/', '@', '-', '.'])
        && !name.ends_with([':', '/', '@'])
        && !name.contains("//")
        && !name.contains(char::is_whitespace)
}

/// The rules that need only the syntax tree, for every stage.
pub fn check_ast(ast: &Ast) -> Vec<CheckWarning> {
    check_ast_by_stage(ast)
        .into_iter()
        .map(|(_, w)| w)
        .collect()
}

/// Like [`check_ast`], with the index of the stage whose body a warning is about
/// (`None` for file-wide rules such as casing and stage names). BuildKit reports the
/// body rules only for stages that are part of the build.
pub fn check_ast_by_stage(ast: &Ast) -> Vec<(Option<usize>, CheckWarning)> {
    let mut scoped = Vec::new();
    let mut out = Vec::new();
    let ins = &ast.instructions;

    // ConsistentInstructionCasing: compare with the majority's case.
    let (mut upper, mut lower) = (0, 0);
    for i in ins {
        let k = raw_keyword(i);
        if k == k.to_uppercase() {
            upper += 1;
        } else if k == k.to_lowercase() {
            lower += 1;
        }
    }
    let majority_upper = upper >= lower;
    for i in ins {
        let k = raw_keyword(i);
        let ok = if majority_upper {
            k == k.to_uppercase()
        } else {
            k == k.to_lowercase()
        };
        if !ok {
            warn(
                &mut out,
                "ConsistentInstructionCasing",
                i,
                format!(
                    "Command '{k}' should match the case of the command majority ({})",
                    if majority_upper {
                        "uppercase"
                    } else {
                        "lowercase"
                    }
                ),
            );
        }
    }

    // Global ARG defaults, for InvalidDefaultArgInFrom.
    let mut defaults: Vec<(String, String)> = Vec::new();
    for i in ins.iter().take_while(|i| i.keyword != "from") {
        if i.keyword == "arg" {
            for a in &i.args {
                let (k, v) = a.split_once('=').unwrap_or((a, ""));
                let v = Expander::new(&defaults, ast.directives.escape)
                    .process_word(v)
                    .unwrap_or_default();
                defaults.push((k.to_string(), v));
            }
        }
    }

    let mut stage_names: Vec<String> = Vec::new();
    let mut stage_start = 0;
    let mut stage: Option<usize> = None;
    while stage_start < ins.len() {
        let from = &ins[stage_start];
        let end = ins[stage_start + 1..]
            .iter()
            .position(|i| i.keyword == "from")
            .map_or(ins.len(), |p| stage_start + 1 + p);
        if from.keyword == "from" {
            stage = Some(stage.map_or(0, |s| s + 1));
            check_from(
                &mut out,
                from,
                &mut stage_names,
                &defaults,
                ast.directives.escape,
            );
        }
        let body = &ins[stage_start..end];
        let mut found = Vec::new();
        check_stage_body(&mut found, body);
        scoped.extend(found.into_iter().map(|w| (stage, w)));
        stage_start = end;
    }
    // The parser's empty-continuation notes are BuildKit's NoEmptyContinuation rule.
    for w in &ast.warnings {
        out.push(CheckWarning {
            rule: "NoEmptyContinuation",
            message: "Empty continuation line".into(),
            line: w.line,
            column: 1,
        });
    }
    out.into_iter().map(|w| (None, w)).chain(scoped).collect()
}

fn check_from(
    out: &mut Vec<CheckWarning>,
    from: &Instruction,
    stage_names: &mut Vec<String>,
    defaults: &[(String, String)],
    escape: char,
) {
    let kw = raw_keyword(from);
    if let [base, as_kw, name] = from.args.as_slice() {
        let kw_upper = kw == kw.to_uppercase();
        let as_upper = as_kw == &as_kw.to_uppercase();
        if kw_upper != as_upper {
            warn(
                out,
                "FromAsCasing",
                from,
                format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
            );
        }
        if name != &name.to_lowercase() {
            warn(
                out,
                "StageNameCasing",
                from,
                format!("Stage name '{name}' should be lowercase"),
            );
        }
        let lower = name.to_lowercase();
        if matches!(lower.as_str(), "scratch" | "context") {
            warn(
                out,
                "ReservedStageName",
                from,
                format!("Stage name should not use the same name as reserved stage \"{lower}\""),
            );
        }
        if stage_names.contains(&lower) {
            warn(
                out,
                "DuplicateStageName",
                from,
                format!("Duplicate stage name \"{lower}\", stage names should be unique"),
            );
        }
        stage_names.push(lower);
        let _ = base;
    }
    if let Some(base) = from.args.first().filter(|b| b.contains('$')) {
        let expanded = Expander::new(&defaults.to_vec(), escape)
            .process_word(base)
            .unwrap_or_default();
        if !plausible_base(&expanded) {
            warn(
                out,
                "InvalidDefaultArgInFrom",
                from,
                format!("Default value for ARG {base} results in empty or invalid base image name"),
            );
        }
    }
    for f in &from.flags {
        if let Some(p) = f.strip_prefix("--platform=") {
            let stage = from
                .args
                .get(2)
                .map(|s| s.to_lowercase())
                .unwrap_or_default();
            let arch = p.split('/').nth(1).unwrap_or(p);
            // A stage named for its platform (`AS build-amd64`) may pin it.
            let named_for_platform = !arch.is_empty() && stage.contains(arch);
            if !p.contains('$') && !named_for_platform {
                warn(
                    out,
                    "FromPlatformFlagConstDisallowed",
                    from,
                    format!("FROM --platform flag should not use constant value \"{p}\""),
                );
            }
        }
    }
}

fn check_stage_body(out: &mut Vec<CheckWarning>, body: &[Instruction]) {
    let mut has_shell = false;
    let mut absolute_workdir = false;
    for kw in ["cmd", "entrypoint", "healthcheck"] {
        let all: Vec<&Instruction> = body.iter().filter(|i| i.keyword == kw).collect();
        if all.len() > 1 {
            for i in &all[..all.len() - 1] {
                warn(
                    out,
                    "MultipleInstructionsDisallowed",
                    i,
                    format!(
                        "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                        kw.to_uppercase()
                    ),
                );
            }
        }
    }
    for i in body {
        match i.keyword.as_str() {
            "shell" => has_shell = true,
            "cmd" | "entrypoint" if !i.json && !has_shell && !i.args.is_empty() => warn(
                out,
                "JSONArgsRecommended",
                i,
                format!(
                    "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                    i.keyword.to_uppercase()
                ),
            ),
            "env" | "label" => {
                if i.args.len() == 3 && i.args[2].is_empty() {
                    let k = i.keyword.to_uppercase();
                    warn(
                        out,
                        "LegacyKeyValueFormat",
                        i,
                        format!("\"{k} key=value\" should be used instead of legacy \"{k} key value\" format"),
                    );
                }
                if i.keyword == "env" {
                    for key in i.args.chunks(3).map(|c| &c[0]) {
                        secret_check(out, i, "ENV", key);
                    }
                }
            }
            "arg" => {
                for a in &i.args {
                    secret_check(out, i, "ARG", a.split('=').next().unwrap_or(a));
                }
            }
            "maintainer" => warn(
                out,
                "MaintainerDeprecated",
                i,
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            "workdir" => {
                let dir = i.args.first().map(String::as_str).unwrap_or("");
                if dir.starts_with('/') || dir.starts_with('$') {
                    absolute_workdir = true;
                } else if !absolute_workdir {
                    warn(
                        out,
                        "WorkdirRelativePath",
                        i,
                        format!("Relative workdir \"{dir}\" can have unexpected results if the base image changes"),
                    );
                }
            }
            _ => {}
        }
    }
}

fn secret_check(out: &mut Vec<CheckWarning>, ins: &Instruction, kind: &str, name: &str) {
    if is_secret_name(name) {
        warn(
            out,
            "SecretsUsedInArgOrEnv",
            ins,
            format!("Do not use ARG or ENV instructions for sensitive data ({kind} \"{name}\")"),
        );
    }
}

/// Keeps the enabled warnings, sorted by position, without duplicates.
pub fn filter(mut warnings: Vec<CheckWarning>, cfg: &CheckConfig) -> Vec<CheckWarning> {
    warnings.retain(|w| cfg.enabled(w.rule));
    warnings.sort_by(|a, b| (a.line, a.column, a.rule).cmp(&(b.line, b.column, b.rule)));
    warnings.dedup();
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for s in [
            "API_KEY",
            "password",
            "GITHUB_TOKEN",
            "aws_secret_access_key",
            "AUTH",
        ] {
            assert!(is_secret_name(s), "{s}");
        }
        for s in ["PUBLIC_KEY", "KEYBOARD", "MONKEY", "VERSION", "TOKENIZER"] {
            assert!(!is_secret_name(s), "{s}");
        }
    }

    #[test]
    fn directive_parses() {
        let c = CheckConfig::parse(Some("skip=JSONArgsRecommended, StageNameCasing;error=true"));
        assert!(c.error && !c.enabled("StageNameCasing") && c.enabled("FromAsCasing"));
        assert!(!CheckConfig::parse(Some("skip=all")).enabled("UndefinedVar"));
    }
}
