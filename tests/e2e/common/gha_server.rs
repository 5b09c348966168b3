//! A GitHub Actions cache service (protocol v2) for tests, written from the protocol: the three
//! Twirp JSON calls of `github.actions.results.api.v1.CacheService` and an Azure-Blob-like
//! store behind signed URLs (block upload, block list commit, GET). It can answer 429 to the
//! next Twirp calls and hand out already-expired URLs (403 from the blob store, as Azure
//! answers an expired SAS), and records what it served.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

const PREFIX: &str = "/twirp/github.actions.results.api.v1.CacheService/";

#[derive(Default)]
struct Entry {
    version: String,
    staged: HashMap<String, Vec<u8>>,
    data: Option<Vec<u8>>,
    /// Order of finalization (the newest prefix match wins), None until finalized.
    finalized: Option<u64>,
}

#[derive(Default)]
pub struct State {
    entries: HashMap<String, Entry>,
    /// Signed URL id → (entry key, expired).
    urls: HashMap<u64, (String, bool)>,
    seq: u64,
    throttle_next: usize,
    expire_next: usize,
    /// What was served, for assertions.
    pub throttled: usize,
    pub expired_refused: usize,
    pub calls: Vec<String>,
    pub bad_auth: usize,
}

/// A running test cache service; stops with the process (threads are detached).
pub struct GhaServer {
    pub url: String,
    pub token: String,
    state: Arc<Mutex<State>>,
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.into(),
    }
}

fn twirp_error(status: u16, code: &str, msg: &str) -> Reply {
    reply(status, json!({ "code": code, "msg": msg }).to_string())
}

impl GhaServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let server = GhaServer {
            url: format!("http://{addr}/"),
            token: format!("test-token-{}", std::process::id()),
            state: state.clone(),
        };
        let (token, base) = (server.token.clone(), server.url.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (state, token, base) = (state.clone(), token.clone(), base.clone());
                std::thread::spawn(move || serve(conn, &state, &token, &base));
            }
        });
        server
    }

    /// The next `n` Twirp calls get 429 with `Retry-After: 1`.
    pub fn throttle_next(&self, n: usize) {
        self.state.lock().unwrap().throttle_next = n;
    }

    /// The next `n` signed URLs handed out are already expired.
    pub fn expire_next_urls(&self, n: usize) {
        self.state.lock().unwrap().expire_next = n;
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    /// Keys of finalized entries.
    pub fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut keys: Vec<String> = s
            .entries
            .iter()
            .filter(|(_, e)| e.finalized.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, token: &str, base: &str) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Some(req) = read_request(&mut reader) else {
        return;
    };
    let out = if let Some(method) = req.path.strip_prefix(PREFIX) {
        twirp(&mut state.lock().unwrap(), method, &req, token, base)
    } else if let Some(id) = req.path.strip_prefix("/blob/") {
        blob(&mut state.lock().unwrap(), id, &req)
    } else {
        reply(404, "not found")
    };
    let mut conn = conn;
    let mut head = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        out.status,
        out.body.len()
    );
    for (k, v) in &out.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&out.body);
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A field by its proto name or its JSON (lowerCamelCase) name.
fn field<'a>(v: &'a Value, proto: &str, camel: &str) -> &'a Value {
    v.get(proto)
        .or_else(|| v.get(camel))
        .unwrap_or(&Value::Null)
}

fn signed_url(s: &mut State, base: &str, key: &str) -> String {
    s.seq += 1;
    let expired = s.expire_next > 0;
    s.expire_next = s.expire_next.saturating_sub(1);
    s.urls.insert(s.seq, (key.to_string(), expired));
    format!("{base}blob/{}?sv=2023-11-03&se=soon&sig=s{}", s.seq, s.seq)
}

fn twirp(s: &mut State, method: &str, req: &Request, token: &str, base: &str) -> Reply {
    if req.method != "POST" {
        return twirp_error(404, "bad_route", "POST only");
    }
    if req.headers.get("authorization") != Some(&format!("Bearer {token}")) {
        s.bad_auth += 1;
        return twirp_error(401, "unauthenticated", "bad token");
    }
    if s.throttle_next > 0 {
        s.throttle_next -= 1;
        s.throttled += 1;
        let mut r = twirp_error(429, "resource_exhausted", "slow down");
        r.headers.push(("retry-after", "1".into()));
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return twirp_error(400, "malformed", "body is not JSON");
    };
    let key = field(&body, "key", "key")
        .as_str()
        .unwrap_or("")
        .to_string();
    let version = field(&body, "version", "version").as_str().unwrap_or("");
    if key.is_empty() || key.len() > 512 || key.contains(',') || version.is_empty() {
        return twirp_error(400, "invalid_argument", "bad key or version");
    }
    s.calls.push(format!("{method} {key}"));
    match method {
        "CreateCacheEntry" => {
            if let Some(e) = s.entries.get(&key) {
                if e.finalized.is_some() || e.version != version {
                    return twirp_error(409, "already_exists", "entry exists");
                }
            }
            let e = s.entries.entry(key.clone()).or_default();
            e.version = version.to_string();
            let url = signed_url(s, base, &key);
            reply(
                200,
                json!({ "ok": true, "signed_upload_url": url }).to_string(),
            )
        }
        "FinalizeCacheEntryUpload" => {
            let size = field(&body, "size_bytes", "sizeBytes");
            let size: Option<usize> = size
                .as_str()
                .and_then(|v| v.parse().ok())
                .or(size.as_u64().map(|v| v as usize));
            s.seq += 1;
            let seq = s.seq;
            match s.entries.get_mut(&key) {
                Some(e) if e.data.as_ref().map(Vec::len) == size && e.finalized.is_none() => {
                    e.finalized = Some(seq);
                    reply(
                        200,
                        json!({ "ok": true, "entry_id": seq.to_string() }).to_string(),
                    )
                }
                _ => reply(200, json!({ "ok": false }).to_string()),
            }
        }
        "GetCacheEntryDownloadURL" => {
            let restore: Vec<String> = field(&body, "restore_keys", "restoreKeys")
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            match find(s, &key, &restore, version) {
                Some(matched) => {
                    let url = signed_url(s, base, &matched);
                    let answer =
                        json!({ "ok": true, "signed_download_url": url, "matched_key": matched });
                    reply(200, answer.to_string())
                }
                None => reply(200, json!({ "ok": false }).to_string()),
            }
        }
        _ => twirp_error(404, "bad_route", "no such method"),
    }
}

/// The exact key, else the newest entry matching a restore key by prefix (as the service does).
fn find(s: &State, key: &str, restore: &[String], version: &str) -> Option<String> {
    let ok = |e: &Entry| e.finalized.is_some() && e.version == version;
    if s.entries.get(key).is_some_and(ok) {
        return Some(key.to_string());
    }
    restore.iter().find_map(|prefix| {
        s.entries
            .iter()
            .filter(|(k, e)| k.starts_with(prefix.as_str()) && ok(e))
            .max_by_key(|(_, e)| e.finalized)
            .map(|(k, _)| k.clone())
    })
}

fn azure_error(status: u16, code: &str) -> Reply {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
    );
    let mut r = reply(status, body);
    r.headers.push(("x-ms-error-code", code.to_string()));
    r
}

fn blob(s: &mut State, id: &str, req: &Request) -> Reply {
    let Some((key, expired)) = id.parse().ok().and_then(|id: u64| s.urls.get(&id).cloned()) else {
        return azure_error(404, "BlobNotFound");
    };
    if expired || !req.query.contains_key("sig") {
        s.expired_refused += 1;
        return azure_error(403, "AuthenticationFailed");
    }
    let Some(entry) = s.entries.get_mut(&key) else {
        return azure_error(404, "BlobNotFound");
    };
    match (
        req.method.as_str(),
        req.query.get("comp").map(String::as_str),
    ) {
        ("PUT", Some("block")) => match req.query.get("blockid") {
            Some(block) if entry.finalized.is_none() => {
                entry.staged.insert(block.clone(), req.body.clone());
                reply(201, "")
            }
            _ => azure_error(400, "InvalidQueryParameterValue"),
        },
        ("PUT", Some("blocklist")) => {
            let xml = String::from_utf8_lossy(&req.body).into_owned();
            let mut data = Vec::new();
            for part in xml.split("<Latest>").skip(1) {
                let id = part.split("</Latest>").next().unwrap_or("");
                match entry.staged.get(id) {
                    Some(b) => data.extend_from_slice(b),
                    None => return azure_error(400, "InvalidBlockList"),
                }
            }
            entry.data = Some(data);
            reply(201, "")
        }
        ("GET", None) => match (&entry.data, entry.finalized) {
            (Some(d), Some(_)) => reply(200, d.clone()),
            _ => azure_error(404, "BlobNotFound"),
        },
        _ => azure_error(400, "UnsupportedHttpVerb"),
    }
}
