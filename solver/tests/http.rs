//! HTTP sources (`ADD <url>`) against a real HTTP server on a loopback port.

mod support;

use solver::{Definition, Op};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use support::*;

/// path → (status line, body); Last-Modified is always "Sun, 06 Nov 1994 08:49:37 GMT".
type Routes = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A minimal HTTP/1.1 server (one request per connection) on 127.0.0.1.
fn serve(routes: Routes) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let found = routes
                .lock()
                .unwrap()
                .iter()
                .find(|(p, _, _)| *p == path)
                .map(|(_, s, b)| (s.clone(), b.clone()));
            let (status, body) = found.unwrap_or(("404 Not Found".into(), b"nope".to_vec()));
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn http_def(url: &str, filename: &str, checksum: Option<String>) -> Definition {
    let mut def = Definition::default();
    let v = def.add(vertex(
        Op::Http {
            url: url.into(),
            filename: filename.into(),
            checksum,
        },
        vec![],
    ));
    def.output = Some(v);
    def
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

#[tokio::test(flavor = "multi_thread")]
async fn download_is_one_file_with_mode_0600_and_server_mtime() {
    let routes: Routes = Arc::new(Mutex::new(vec![(
        "/files/tool.sh".into(),
        "200 OK".into(),
        b"#!/bin/sh\necho hi\n".to_vec(),
    )]));
    let base = serve(routes.clone());
    let env = Env::new(&[]);
    let def = http_def(&format!("{base}/files/tool.sh"), "tool.sh", None);
    let t = env.tree(&def).await;
    assert_eq!(listing(t.path()), ["tool.sh"]);
    let f = t.path().join("tool.sh");
    assert_eq!(std::fs::read(&f).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(mode(&f), 0o600);
    assert_eq!(mtime(&f), 784_111_777);
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), 0);

    // Same content again: cached. New content at the same URL: a new result.
    let again = env.solve(&def).await.unwrap();
    assert_eq!(again.executed, 0);
    routes.lock().unwrap()[0].2 = b"changed".to_vec();
    let changed = env.solve(&def).await.unwrap();
    assert_eq!(changed.executed, 1);
    let t = env.export(&changed.output);
    assert_eq!(std::fs::read(t.path().join("tool.sh")).unwrap(), b"changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn checksum_is_verified_and_keys_the_cache() {
    let body = b"pinned content".to_vec();
    let routes: Routes = Arc::new(Mutex::new(vec![(
        "/p".into(),
        "200 OK".into(),
        body.clone(),
    )]));
    let base = serve(routes.clone());
    let env = Env::new(&[]);
    let good = http_def(&format!("{base}/p"), "p", Some(sha256(&body)));
    let t = env.tree(&good).await;
    assert_eq!(std::fs::read(t.path().join("p")).unwrap(), body);

    let wrong = sha256(b"something else");
    let err = env
        .solve(&http_def(&format!("{base}/p"), "p", Some(wrong.clone())))
        .await
        .unwrap_err();
    assert!(
        err.contains("checksum mismatch") && err.contains(&wrong) && err.contains(&sha256(&body)),
        "{err}"
    );
    let err = env
        .solve(&http_def(&format!("{base}/p"), "p", Some("md5:00".into())))
        .await
        .unwrap_err();
    assert!(err.contains("invalid checksum \"md5:00\""), "{err}");
    // With the checksum as key, the server is not asked again.
    routes.lock().unwrap().clear();
    assert_eq!(env.solve(&good).await.unwrap().executed, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_errors_name_the_status_and_url() {
    let routes: Routes = Arc::new(Mutex::new(vec![(
        "/boom".into(),
        "500 Internal Server Error".into(),
        b"x".to_vec(),
    )]));
    let base = serve(routes);
    let env = Env::new(&[]);
    let err = env
        .solve(&http_def(&format!("{base}/missing"), "m", None))
        .await
        .unwrap_err();
    assert!(
        err.contains("HTTP 404") && err.contains("/missing"),
        "{err}"
    );
    let err = env
        .solve(&http_def(&format!("{base}/boom"), "b", None))
        .await
        .unwrap_err();
    assert!(err.contains("HTTP 500"), "{err}");
    let err = env
        .solve(&http_def("http://127.0.0.1:1/x", "x", None))
        .await
        .unwrap_err();
    assert!(err.contains("downloading http://127.0.0.1:1/x"), "{err}");
    // A failed download leaves no snapshot behind.
    let leftovers: Vec<_> = env
        .solver
        .snapshots
        .walk()
        .unwrap()
        .into_iter()
        .filter(|i| i.kind != snapshotter::Kind::Committed)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
