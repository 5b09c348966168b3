//! `.dockerignore` parsing and matching on arbitrary text: errors are fine, panics are not.
//! Input: the ignore file, then a NUL, then NUL-separated paths to match.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let ignore_file = parts.next().unwrap_or_default();
    let Ok(matcher) = frontend::ignore::IgnoreMatcher::parse(ignore_file) else {
        return;
    };
    for path in parts {
        let excluded = matcher.matches(path);
        let reinclude = matcher.may_reinclude_under(path);
        // Matching is a pure function of its input.
        assert_eq!(excluded, matcher.matches(path));
        assert_eq!(reinclude, matcher.may_reinclude_under(path));
    }
});
