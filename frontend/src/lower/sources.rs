//! Helpers for COPY/ADD: remote source detection, git URLs and `--chmod` validation.

/// A git remote as `ADD` takes it: `https://host/repo.git#ref:subdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub remote: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

/// True for sources BuildKit treats as git repositories.
pub fn is_git_url(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or(s);
    if s.starts_with("git://") || s.starts_with("git@") || s.starts_with("ssh://") {
        return true;
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return base.ends_with(".git") || s.contains(".git#");
    }
    s.starts_with("github.com/") && !s.contains(' ')
}

/// True for `http://` and `https://` sources that are not git repositories.
pub fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && !is_git_url(s)
}

/// Splits `remote#ref:subdir` (either part optional).
pub fn parse_git(s: &str) -> GitSource {
    let (remote, fragment) = match s.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (s, None),
    };
    let remote = if remote.starts_with("github.com/") {
        format!("https://{remote}")
    } else {
        remote.to_string()
    };
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(f) => match f.split_once(':') {
            Some((r, d)) => (Some(r.to_string()), Some(d.to_string())),
            None => (Some(f.to_string()), None),
        },
    };
    GitSource {
        remote,
        reference: reference.filter(|r| !r.is_empty()),
        subdir: subdir.filter(|d| !d.is_empty()),
    }
}

/// The file name `ADD URL` saves to: the last path segment of the URL, or `dest`'s base
/// name when `dest` names a file (no trailing slash).
pub fn http_filename(url: &str, dest: &str) -> String {
    if !dest.ends_with('/') {
        if let Some(base) = dest
            .rsplit('/')
            .next()
            .filter(|b| !b.is_empty() && *b != ".")
        {
            return base.to_string();
        }
    }
    let after_scheme = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let path = after_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split_once('/')
        .map(|x| x.1)
        .unwrap_or("");
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("__unnamed__")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_are_recognised() {
        assert!(is_git_url("git@github.com:moby/buildkit.git"));
        assert!(is_git_url(
            "https://github.com/moby/buildkit.git#v0.10.1:docs"
        ));
        assert!(is_git_url("git://host/repo"));
        assert!(!is_git_url("https://example.com/file.tar.gz"));
        assert!(is_http_url("https://example.com/file.tar.gz"));
        let g = parse_git("https://h/r.git#v1:sub/dir");
        assert_eq!(g.remote, "https://h/r.git");
        assert_eq!(g.reference.as_deref(), Some("v1"));
        assert_eq!(g.subdir.as_deref(), Some("sub/dir"));
        assert_eq!(parse_git("git@h:r.git").reference, None);
    }

    #[test]
    fn http_filenames() {
        assert_eq!(http_filename("https://e.com/a/b.tgz?x=1", "/d/"), "b.tgz");
        assert_eq!(http_filename("https://e.com/a/b.tgz", "/d/c.tgz"), "c.tgz");
        assert_eq!(http_filename("https://e.com", "/d/"), "__unnamed__");
    }
}
