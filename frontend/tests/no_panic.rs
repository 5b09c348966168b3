//! Property tests: no input makes the parser or the expander panic.

use std::collections::HashMap;

use frontend::parser::parse;
use frontend::shell::Expander;
use proptest::prelude::*;

/// Fragments that exercise the parser's interesting paths when glued together.
fn dockerfile_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM ".to_string()),
        Just("RUN ".to_string()),
        Just("COPY ".to_string()),
        Just("ONBUILD ".to_string()),
        Just("ENV ".to_string()),
        Just("HEALTHCHECK ".to_string()),
        Just("ARG ".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\\\n".to_string()),
        Just("`\n".to_string()),
        Just("# escape=`\n".to_string()),
        Just("# syntax=x\n".to_string()),
        Just("<<EOF".to_string()),
        Just("<<-'EOF'".to_string()),
        Just("EOF\n".to_string()),
        Just("\tEOF\n".to_string()),
        Just("--flag=\"a b\" ".to_string()),
        Just("-- ".to_string()),
        Just("[\"a\", \"b\"]".to_string()),
        Just("[1, [2]]".to_string()),
        Just("a=b ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("${x:-y}".to_string()),
        Just("\u{feff}".to_string()),
        Just("é ".to_string()),
        "[ -~]{0,12}",
    ]
}

fn word_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("$".to_string()),
        Just("${".to_string()),
        Just("}".to_string()),
        Just(":-".to_string()),
        Just(":+".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("%".to_string()),
        Just("/".to_string()),
        Just("*".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("!".to_string()),
        Just("\\".to_string()),
        Just("`".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("v".to_string()),
        Just("e".to_string()),
        Just(" ".to_string()),
        Just("한".to_string()),
        "[ -~]{0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 700, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn parse_never_panics_on_dockerfile_like_text(
        parts in proptest::collection::vec(dockerfile_fragment(), 0..40)
    ) {
        let source = parts.concat();
        if let Ok(ast) = parse(source.as_bytes()) {
            let _ = ast.dump();
        }
    }

    #[test]
    fn expander_never_panics(parts in proptest::collection::vec(word_fragment(), 0..30)) {
        let word = parts.concat();
        let env: HashMap<String, String> =
            [("v".to_string(), "a*b c".to_string()), ("e".to_string(), String::new())].into();
        for escape in ['\\', '`'] {
            let expander = Expander::new(&env, escape);
            let _ = expander.process_word(&word);
            let _ = expander.process_words(&word);
            let _ = expander.process_word_with_matches(&word);
            let _ = expander.with_skip_unset(true).with_raw_quotes(true).process_word(&word);
        }
    }
}
