//! Git sources against local repositories, served by `git daemon` on a loopback
//! port and by file path.

mod support;

use solver::{Definition, Op};
use std::path::Path;
use std::process::{Child, Command};
use support::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repo with: v1 (tag, annotated) → main; branch `feature` with an extra file.
fn make_repo(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    write(&dir.join("README"), "one");
    write(&dir.join("sub/inner.txt"), "inner one");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "one"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["tag", "-a", "v1", "-m", "v1"]);
    write(&dir.join("README"), "two");
    git(dir, &["commit", "-qam", "two"]);
    git(dir, &["checkout", "-qb", "feature"]);
    write(&dir.join("feature.txt"), "f");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "feature"]);
    git(dir, &["checkout", "-q", "main"]);
    let main = git(dir, &["rev-parse", "HEAD"]);
    (first, main)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves every repository below `base` with `git daemon` on a free loopback port.
fn daemon(base: &Path) -> (Daemon, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Run git-daemon itself (not the `git daemon` wrapper) so that killing it stops the server.
    let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
    let exec_path = String::from_utf8(exec_path.stdout).unwrap();
    let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
        .arg("--reuseaddr")
        .arg("--export-all")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .spawn()
        .unwrap();
    let d = Daemon(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (d, format!("git://127.0.0.1:{port}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("git daemon did not start");
}

fn git_def(remote: &str, reference: Option<&str>, subdir: Option<&str>, keep: bool) -> Definition {
    let mut def = Definition::default();
    let v = def.add(vertex(
        Op::Git {
            remote: remote.into(),
            reference: reference.map(String::from),
            subdir: subdir.map(String::from),
            keep_git_dir: keep,
        },
        vec![],
    ));
    def.output = Some(v);
    def
}

fn read(t: &tempfile::TempDir, rel: &str) -> String {
    std::fs::read_to_string(t.path().join(rel)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn refs_resolve_to_commits_over_git_daemon() {
    let repos = tempfile::tempdir().unwrap();
    let (first, main) = make_repo(&repos.path().join("proj"));
    let (_daemon, base) = daemon(repos.path());
    let remote = format!("{base}/proj");
    let env = Env::new(&[]);

    let t = env.tree(&git_def(&remote, None, None, false)).await;
    assert_eq!(listing(t.path()), ["README", "sub/", "sub/inner.txt"]);
    assert_eq!(read(&t, "README"), "two");

    let t = env.tree(&git_def(&remote, Some("v1"), None, false)).await;
    assert_eq!(read(&t, "README"), "one", "annotated tag");
    let t = env
        .tree(&git_def(&remote, Some("feature"), None, false))
        .await;
    assert_eq!(read(&t, "feature.txt"), "f", "branch");
    let t = env.tree(&git_def(&remote, Some(&first), None, false)).await;
    assert_eq!(read(&t, "README"), "one", "commit id");

    let t = env
        .tree(&git_def(&remote, Some("main"), Some("sub"), false))
        .await;
    assert_eq!(listing(t.path()), ["inner.txt"]);

    let t = env.tree(&git_def(&remote, None, None, true)).await;
    assert_eq!(git(t.path(), &["rev-parse", "HEAD"]), main);

    let err = env
        .solve(&git_def(&remote, Some("nope"), None, false))
        .await
        .unwrap_err();
    assert!(
        err.contains("\"nope\" not found") && err.contains(&remote),
        "{err}"
    );
    let err = env
        .solve(&git_def(&remote, None, Some("missing"), false))
        .await
        .unwrap_err();
    assert!(err.contains("subdirectory \"missing\" not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_follows_the_resolved_commit() {
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("proj");
    make_repo(&repo);
    let remote = repo.to_string_lossy().to_string();
    let env = Env::new(&[]);
    let def = git_def(&remote, Some("main"), None, false);
    assert_eq!(env.solve(&def).await.unwrap().executed, 1);
    assert_eq!(
        env.solve(&def).await.unwrap().executed,
        0,
        "same commit: cached"
    );
    write(&repo.join("README"), "three");
    git(&repo, &["commit", "-qam", "three"]);
    let moved = env.solve(&def).await.unwrap();
    assert_eq!(moved.executed, 1, "the branch moved");
    let t = env.export(&moved.output);
    assert_eq!(read(&t, "README"), "three");
}
