//! Parser behaviour beyond the upstream vectors: heredocs, errors, directives, locations.

use frontend::parser::{parse, Ast, Heredoc, ParseError};

fn parse_ok(source: &str) -> Ast {
    parse(source.as_bytes()).unwrap_or_else(|e| panic!("parse failed: {e}\n{source}"))
}

fn parse_err(source: &[u8]) -> ParseError {
    match parse(source) {
        Ok(ast) => panic!("expected an error, got {}", ast.dump()),
        Err(e) => e,
    }
}

fn heredoc(name: &str, content: &str, expand: bool, chomp: bool) -> Heredoc {
    Heredoc {
        name: name.to_string(),
        content: content.to_string(),
        expand,
        chomp,
        fd: None,
    }
}

#[test]
fn heredoc_at_start_of_run() {
    let ast = parse_ok("FROM a\nRUN <<EOF\necho hi\nEOF\nCMD x\n");
    assert_eq!(ast.dump(), "(from \"a\")\n(run \"<<EOF\")\n(cmd \"x\")");
    let run = &ast.instructions[1];
    assert_eq!(run.heredocs, [heredoc("EOF", "echo hi\n", true, false)]);
    assert_eq!((run.start_line, run.end_line), (2, 4));
    assert_eq!(ast.instructions[2].start_line, 5);
}

#[test]
fn heredoc_after_flags() {
    let ast = parse_ok("RUN --mount=type=cache,target=/c <<EOF\nls /c\nEOF\n");
    assert_eq!(
        ast.dump(),
        "(run [\"--mount=type=cache,target=/c\"] \"<<EOF\")"
    );
    assert_eq!(ast.instructions[0].heredocs[0].content, "ls /c\n");
}

#[test]
fn heredoc_in_middle_of_line_with_quoted_delimiter() {
    let ast = parse_ok("RUN python3 <<'EOF' > out\nprint(\"$HOME\")\nEOF\n");
    assert_eq!(ast.dump(), "(run \"python3 <<'EOF' > out\")");
    assert_eq!(
        ast.instructions[0].heredocs,
        [heredoc("EOF", "print(\"$HOME\")\n", false, false)]
    );
}

#[test]
fn quoted_delimiters_disable_expansion() {
    for (opener, expand) in [
        ("<<EOF", true),
        ("<<'EOF'", false),
        ("<<\"EOF\"", false),
        ("<<E'O'F", false),
    ] {
        let ast = parse_ok(&format!("RUN cat {opener}\nx\nEOF\n"));
        let doc = &ast.instructions[0].heredocs[0];
        assert_eq!((doc.name.as_str(), doc.expand), ("EOF", expand), "{opener}");
    }
}

#[test]
fn several_heredocs_in_one_copy() {
    let ast = parse_ok("COPY <<A <<B /dest/\na\nA\nb\nB\nRUN x\n");
    assert_eq!(ast.dump(), "(copy \"<<A\" \"<<B\" \"/dest/\")\n(run \"x\")");
    let copy = &ast.instructions[0];
    assert_eq!(
        copy.heredocs,
        [
            heredoc("A", "a\n", true, false),
            heredoc("B", "b\n", true, false)
        ]
    );
    assert_eq!(copy.end_line, 5);
}

#[test]
fn chomped_heredoc_strips_leading_tabs() {
    let ast = parse_ok("ADD <<-EOF /x\n\tbody\n\t\tmore\n\tEOF\n");
    assert_eq!(ast.dump(), "(add \"<<-EOF\" \"/x\")");
    assert_eq!(
        ast.instructions[0].heredocs,
        [heredoc("EOF", "body\nmore\n", true, true)]
    );
}

#[test]
fn heredoc_body_is_verbatim() {
    // Comments, continuations and CRLF endings inside the body are kept as they are.
    let ast = parse_ok("RUN <<EOF\r\n# comment \\\r\n  line\r\nEOF\r\n");
    assert_eq!(
        ast.instructions[0].heredocs[0].content,
        "# comment \\\r\n  line\r\n"
    );
}

#[test]
fn heredoc_with_file_descriptor() {
    let ast = parse_ok("RUN cat 3<<EOF\nx\nEOF\n");
    assert_eq!(ast.instructions[0].heredocs[0].fd, Some(3));
}

#[test]
fn json_form_is_never_a_heredoc() {
    let ast = parse_ok("RUN [\"<<EOF\"]\nFROM x\nEOF\n");
    assert_eq!(ast.dump(), "(run \"<<EOF\")\n(from \"x\")\n(eof \"\")");
    assert!(ast.instructions[0].json);
    assert!(ast.instructions[0].heredocs.is_empty());
}

#[test]
fn quoted_heredoc_marker_is_text() {
    let ast = parse_ok("RUN \"<<NOHEREDOC\"\nFROM x\n");
    assert_eq!(ast.instructions.len(), 2);
    assert!(ast.instructions[0].heredocs.is_empty());
}

#[test]
fn heredoc_only_for_run_copy_add() {
    let ast = parse_ok("CMD cat <<EOF\nFROM x\n");
    assert_eq!(ast.instructions.len(), 2);
}

#[test]
fn onbuild_heredoc() {
    let ast = parse_ok("ONBUILD RUN <<EOF\nx\nEOF\n");
    assert_eq!(ast.dump(), "(onbuild (run \"<<EOF\"))");
    let onbuild = &ast.instructions[0];
    assert_eq!(onbuild.heredocs, [heredoc("EOF", "x\n", true, false)]);
    let inner = onbuild.onbuild.as_ref().expect("wrapped instruction");
    assert_eq!(inner.keyword, "run");
    assert_eq!(inner.heredocs, onbuild.heredocs);
}

#[test]
fn unterminated_heredoc_names_its_line() {
    let e = parse_err(b"FROM a\n\nRUN <<EOF\necho\n");
    assert_eq!(e.line, 3);
    assert_eq!(e.column, 5);
    assert!(e.message.contains("unterminated heredoc"), "{e}");
    assert!(e.to_string().starts_with("line 3:5: "), "{e}");
}

#[test]
fn overlong_line_is_rejected() {
    let mut input = b"FROM a\nRUN ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 70_000));
    let e = parse_err(&input);
    assert_eq!((e.line, e.column), (2, 65536));
    assert!(e.message.contains("65535"), "{e}");
    // Exactly at the limit is fine.
    let mut input = b"RUN ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 65535 - 4));
    input.push(b'\n');
    assert!(parse(&input).is_ok());
}

#[test]
fn bad_escape_directive_is_rejected() {
    let e = parse_err(b"# escape = x\nFROM a\n");
    assert_eq!((e.line, e.column), (1, 12));
    assert!(e.message.contains("invalid escape token"), "{e}");
}

#[test]
fn repeated_directive_is_rejected() {
    let e = parse_err(b"# syntax=a\n  # SYNTAX=b\nFROM a\n");
    assert_eq!((e.line, e.column), (2, 3));
    assert!(
        e.message.contains("only one syntax parser directive"),
        "{e}"
    );
}

#[test]
fn directives_are_recorded() {
    let ast = parse_ok("\u{feff}# syntax=docker/dockerfile:1\n# check=skip=all\n#escape=`\nFROM a\n# escape=\\\nRUN a `\n b\n");
    assert_eq!(ast.directives.escape, '`');
    assert_eq!(
        ast.directives.syntax.as_deref(),
        Some("docker/dockerfile:1")
    );
    assert_eq!(ast.directives.check.as_deref(), Some("skip=all"));
    assert_eq!(ast.dump(), "(from \"a\")\n(run \"a  b\")");
}

#[test]
fn human_error_messages() {
    assert!(parse_err(b"ENV PATH\n")
        .message
        .contains("ENV must have two arguments"));
    assert!(parse_err(b"").message.contains("file with no instructions"));
    assert!(parse_err(b"# only a comment\n\n")
        .message
        .contains("file with no instructions"));
    let e = parse_err(b"FROM a\nCMD [\"a\", 1]\n");
    assert_eq!(e.line, 2);
    assert!(
        e.message
            .contains("arrays must be comprised of strings only"),
        "{e}"
    );
    let e = parse_err(b"LABEL a=b c\n");
    assert!(e.message.contains("can't find = in \"c\""), "{e}");
}

#[test]
fn locations_and_original_text() {
    let ast = parse_ok("FROM a\n  run echo \\\n# comment\n\n  hi\n");
    let run = &ast.instructions[1];
    assert_eq!(run.keyword, "run");
    assert_eq!((run.start_line, run.end_line, run.column), (2, 5, 3));
    assert_eq!(run.original, "run echo   hi");
    assert_eq!(run.args, ["echo   hi"]);
    assert_eq!(ast.warnings.len(), 1);
    assert_eq!(ast.warnings[0].line, 5);
}

#[test]
fn instruction_fields() {
    let ast = parse_ok("COPY --from=build --chown=\"a b\" [\"x y\", \"/z\"]\nENV a=1 b=\"2 3\"\n");
    let copy = &ast.instructions[0];
    assert_eq!(copy.flags, ["--from=build", "--chown=a b"]);
    assert_eq!(copy.args, ["x y", "/z"]);
    assert!(copy.json);
    assert_eq!(
        ast.instructions[1].args,
        ["a", "1", "=", "b", "\"2 3\"", "="]
    );
}
