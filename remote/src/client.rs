//! The client of `builder serve`: connects (choosing a node, falling over to the next when one
//! is down), uploads what differs of the contexts, relays the build's output and writes
//! back its results.

use crate::endpoint::{order_nodes, Address, TlsFiles};
use crate::proto::builder_client::BuilderClient;
use crate::proto::{
    client_message::Msg as In, server_message::Msg as Out, ClientMessage, Entry, FileChunk,
    Manifest, OutputChunk, Start, UploadDone,
};
use anyhow::{anyhow, bail, Context as _, Result};
use solver::context::LocalSource;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A directory to upload: "main", "dockerfile" or "named:NAME".
pub struct LocalContext {
    pub name: String,
    /// This machine and the directory's absolute path: selects the server's copy.
    pub key: String,
    pub source: Box<dyn LocalSource>,
}

/// Where a streamed-back output goes on this machine.
#[derive(Clone)]
pub enum Dest {
    Dir(PathBuf),
    File(PathBuf),
}

pub struct RemoteBuild {
    pub start: Start,
    pub contexts: Vec<LocalContext>,
    /// One per `start.outputs`; None for outputs that stay on the server or go to stdout.
    pub dests: Vec<Option<Dest>>,
    pub iidfile: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    /// Print `context_bytes_sent` as a JSON line (`--progress=rawjson`) instead of text.
    pub json_progress: bool,
    pub quiet: bool,
    /// `--ssh` agents relayed over the session: id and socket on this machine.
    pub ssh: Vec<(String, PathBuf)>,
}

/// The builder's nodes and this client's TLS material.
pub struct Connection {
    pub nodes: Vec<Address>,
    pub tls: TlsFiles,
}

/// What one remote build did.
pub struct Outcome {
    pub exit_code: i32,
    pub node: Address,
    pub context_bytes_sent: u64,
}

pub async fn build(conn: &Connection, mut build: RemoteBuild) -> Result<Outcome> {
    let mut manifests = Vec::new();
    let mut roots = Vec::new();
    for ctx in &build.contexts {
        manifests.push(crate::manifest::walk(ctx.source.as_ref())?);
        roots.push(crate::manifest::root_entry(ctx.source.as_ref())?);
    }
    let key = build
        .contexts
        .iter()
        .find(|c| c.name == "main")
        .map(|c| c.key.clone())
        .unwrap_or_default();
    build.start.ssh_ids = build.ssh.iter().map(|(id, _)| id.clone()).collect();
    let mut failed: Vec<Address> = Vec::new();
    loop {
        let (node, channel) = connect_any(conn, &key, &failed).await?;
        let mut session = ClientSession::new(&build, &manifests, node.clone());
        match session.run(channel, &roots, &conn.tls).await {
            Ok(code) => {
                return Ok(Outcome {
                    exit_code: code,
                    node,
                    context_bytes_sent: session.bytes_sent,
                })
            }
            // A node that died before the build gave anything back: the next node builds it.
            Err(e)
                if session.lost
                    && !session.produced_output
                    && failed.len() + 1 < conn.nodes.len() =>
            {
                eprintln!("builder: {e:#}; building on the next node");
                failed.push(node);
            }
            Err(e) => return Err(e),
        }
    }
}

async fn send(tx: &mpsc::Sender<ClientMessage>, msg: In) -> Result<()> {
    tx.send(ClientMessage { msg: Some(msg) })
        .await
        .map_err(|_| anyhow!("the connection to the builder closed"))
}

/// Tries the nodes in their order for `key`; a node that cannot be reached gives way to the
/// next, a refused certificate does not (it would be refused everywhere).
async fn connect_any(conn: &Connection, key: &str, skip: &[Address]) -> Result<(Address, Channel)> {
    let mut ordered = order_nodes(&conn.nodes, key);
    ordered.retain(|n| !skip.contains(n));
    if ordered.is_empty() {
        bail!("no builder node given");
    }
    let mut failures = Vec::new();
    for node in ordered {
        match connect(node, &conn.tls).await {
            Ok(channel) => return Ok((node.clone(), channel)),
            Err(e) if is_unreachable(&e) => {
                let msg = format!("{node}: {}", chain(&e));
                eprintln!("builder: {msg}; trying the next node");
                failures.push(msg);
            }
            Err(e) => return Err(explain_connect(node, &conn.tls, &e)),
        }
    }
    bail!(
        "no builder node could be reached:\n  {}",
        failures.join("\n  ")
    )
}

async fn connect(node: &Address, tls: &TlsFiles) -> Result<Channel, tonic::transport::Error> {
    match node {
        Address::Unix(path) => {
            let path = path.clone();
            Endpoint::from_static("http://localhost")
                .connect_timeout(Duration::from_secs(5))
                .initial_stream_window_size(16 << 20)
                .initial_connection_window_size(32 << 20)
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
        }
        Address::Tcp { host, port } => {
            let scheme = if tls.is_empty() { "http" } else { "https" };
            let host_part = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host_part}:{port}"))?
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(20))
                // HTTP/2's default 64 KiB windows cap a bulk upload at a few dozen MB/s.
                .initial_stream_window_size(16 << 20)
                .initial_connection_window_size(32 << 20)
                .tcp_nodelay(true)
                .keep_alive_while_idle(true);
            if !tls.is_empty() {
                let mut config = ClientTlsConfig::new().domain_name(host.clone());
                if let Some(ca) = &tls.ca {
                    config = config.ca_certificate(Certificate::from_pem(ca));
                }
                if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                    config = config.identity(Identity::from_pem(cert, key));
                }
                endpoint = endpoint.tls_config(config)?;
            }
            endpoint.connect().await
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn is_unreachable(e: &tonic::transport::Error) -> bool {
    let text = chain(e).to_ascii_lowercase();
    [
        "connection refused",
        "timed out",
        "no route to host",
        "network is unreachable",
        "no such file or directory",
        "connection reset",
        "failed to lookup address",
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// A TLS failure said in terms of the flags that fix it.
fn explain_tls(node: &Address, tls: &TlsFiles, text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    // Plain HTTP/2 to a TLS listener fails on the TLS record it gets back, or on the
    // connection the server drops.
    let plain_to_tls = tls.is_empty()
        && matches!(node, Address::Tcp { .. })
        && [
            "frame with invalid size",
            "frame_size",
            "broken pipe",
            "connection error",
            "connection closed",
            "operation was canceled",
        ]
        .iter()
        .any(|p| lower.contains(p));
    if plain_to_tls
        || lower.contains("certificaterequired")
        || lower.contains("certificate required")
    {
        return Some(format!(
            "{node} requires a client certificate (mutual TLS) and none was given: set \
             BUILDER_CERT_PATH to a directory with ca.pem, cert.pem and key.pem, or use a \
             builder made with `builder builder create --tlscert --tlskey`"
        ));
    }
    if [
        "unknownca",
        "badcertificate",
        "unknown ca",
        "bad certificate",
        "decrypterror",
    ]
    .iter()
    .any(|p| lower.contains(p))
    {
        let what = if tls.cert.is_some() {
            "refused this client's certificate (it is not signed by the CA the server trusts)"
        } else {
            "refused the connection during the TLS handshake"
        };
        return Some(format!("{node} {what}"));
    }
    if lower.contains("invalid peer certificate") {
        return Some(format!(
            "the certificate of {node} is not trusted: check the CA certificate (ca.pem / \
             --tlscacert) ({text})"
        ));
    }
    None
}

fn explain_connect(node: &Address, tls: &TlsFiles, e: &tonic::transport::Error) -> anyhow::Error {
    let text = chain(e);
    match explain_tls(node, tls, &text) {
        Some(msg) => anyhow!("{msg}"),
        None => anyhow!("connecting to the builder at {node}: {text}"),
    }
}

/// The first call on a TLS connection is where a refused client certificate shows: TLS 1.3
/// reports it after the client's side of the handshake, and the alert may be lost when the
/// server closes the connection first.
fn explain_first_call(node: &Address, tls: &TlsFiles, s: tonic::Status) -> anyhow::Error {
    let e = explain_status(node, tls, s);
    let text = format!("{e:#}");
    let lower = text.to_ascii_lowercase();
    let closed = [
        "connection closed",
        "broken pipe",
        "connection reset",
        "operation was canceled",
    ]
    .iter()
    .any(|p| lower.contains(p));
    if tls.cert.is_some() && matches!(node, Address::Tcp { .. }) && closed {
        return anyhow!(
            "{node} refused this client's certificate (it is not signed by the CA the server \
             trusts) or closed the connection during the TLS handshake ({text})"
        );
    }
    e
}

fn explain_status(node: &Address, tls: &TlsFiles, s: tonic::Status) -> anyhow::Error {
    let text = match std::error::Error::source(&s) {
        Some(src) => format!("{}: {}", s.message(), chain(src)),
        None => s.message().to_string(),
    };
    match explain_tls(node, tls, &text) {
        Some(msg) => anyhow!("{msg}"),
        None => anyhow!("the builder at {node}: {text}"),
    }
}

struct ClientSession<'a> {
    agents: crate::ssh::ClientAgents,
    build: &'a RemoteBuild,
    manifests: &'a [Vec<Entry>],
    tx: mpsc::Sender<ClientMessage>,
    rx: Option<mpsc::Receiver<ClientMessage>>,
    needs: HashMap<u32, Vec<u32>>,
    bytes_sent: u64,
    outputs: HashMap<String, tempfile::NamedTempFile>,
    node: Address,
    /// The files being sent, while the build runs; gives the bytes sent.
    upload: Option<tokio::task::JoinHandle<Result<u64>>>,
    /// The connection broke before the server's result.
    lost: bool,
    /// Something reached stdout or an output: a retry elsewhere would repeat it.
    produced_output: bool,
}

impl<'a> ClientSession<'a> {
    fn new(build: &'a RemoteBuild, manifests: &'a [Vec<Entry>], node: Address) -> Self {
        let (tx, rx) = mpsc::channel::<ClientMessage>(16);
        ClientSession {
            agents: crate::ssh::ClientAgents::new(&build.ssh, tx.clone()),
            build,
            manifests,
            tx,
            rx: Some(rx),
            needs: HashMap::new(),
            bytes_sent: 0,
            outputs: HashMap::new(),
            node,
            upload: None,
            lost: false,
            produced_output: false,
        }
    }

    /// Sends the request and manifests, then relays the session until the server's result.
    async fn run(&mut self, channel: Channel, roots: &[Entry], tls: &TlsFiles) -> Result<i32> {
        let mut client = BuilderClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        send(&self.tx, In::Start(self.build.start.clone())).await?;
        for (i, entries) in self.manifests.iter().enumerate() {
            let manifest = Manifest {
                context: i as u32,
                entries: entries.clone(),
                root: Some(roots[i].clone()),
            };
            send(&self.tx, In::Manifest(manifest)).await?;
        }
        let rx = self.rx.take().expect("run once");
        let node = self.node.clone();
        let response = client
            .build(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| explain_first_call(&node, tls, s))?;
        self.relay(response.into_inner(), &node, tls).await
    }

    async fn relay(
        &mut self,
        mut inbound: tonic::Streaming<crate::proto::ServerMessage>,
        node: &Address,
        tls: &TlsFiles,
    ) -> Result<i32> {
        loop {
            let received = tokio::select! {
                m = inbound.message() => m,
                sent = async { self.upload.as_mut().expect("guarded").await }, if self.upload.is_some() => {
                    self.upload = None;
                    self.bytes_sent += sent.map_err(|e| anyhow!("upload task: {e}"))??;
                    continue;
                }
            };
            let msg = match received {
                Ok(Some(m)) => m.msg,
                Ok(None) => {
                    self.lost = true;
                    bail!("the builder at {node} closed the session before the build finished")
                }
                Err(s) => {
                    self.lost = true;
                    let e = explain_status(node, tls, s);
                    bail!("lost the connection to the builder at {node} during the build: {e:#}")
                }
            };
            match msg {
                Some(Out::Need(need)) => {
                    self.needs.insert(need.context, need.indexes);
                    if self.needs.len() == self.manifests.len() {
                        self.upload = Some(self.start_upload()?);
                    }
                }
                Some(Out::Stderr(b)) => {
                    let _ = std::io::stderr().write_all(&b);
                }
                Some(Out::Stdout(b)) => {
                    self.produced_output = true;
                    let _ = std::io::stdout().write_all(&b);
                }
                Some(Out::Output(chunk)) => {
                    self.produced_output = true;
                    self.receive_output(chunk)?
                }
                Some(Out::Ssh(data)) => self.agents.handle(data).await,
                Some(Out::Result(r)) => {
                    // The server answers after the whole upload, unless the upload failed.
                    if let Some(upload) = self.upload.take() {
                        if r.exit_code == 0 || upload.is_finished() {
                            self.bytes_sent += upload.await.map_err(|e| anyhow!("{e}"))??;
                        } else {
                            upload.abort();
                        }
                    }
                    if !r.error.is_empty() {
                        eprintln!("error: {} (on the builder at {node})", r.error);
                    }
                    return Ok(r.exit_code);
                }
                None => {}
            }
        }
    }

    /// Starts sending the files the server asked for (the Dockerfile's context first: the
    /// build starts when it is complete), while the session goes on relaying the build.
    fn start_upload(&mut self) -> Result<tokio::task::JoinHandle<Result<u64>>> {
        let total: usize = self
            .manifests
            .iter()
            .map(|m| m.iter().filter(|e| e.mode & 0o170000 == 0o100000).count())
            .sum();
        let manifest_bytes: usize = self
            .manifests
            .iter()
            .map(|m| {
                prost::Message::encoded_len(&Manifest {
                    context: 0,
                    entries: m.clone(),
                    root: None,
                })
            })
            .sum();
        self.bytes_sent += manifest_bytes as u64;
        let mut contexts: Vec<u32> = self.needs.keys().copied().collect();
        let name = |c: &u32| self.build.contexts[*c as usize].name.as_str();
        contexts.sort_by_key(|c| (name(c) != "dockerfile", *c));
        let mut wanted = Vec::new();
        for c in contexts {
            let root = self.build.contexts[c as usize].source.root().to_path_buf();
            for &i in &self.needs[&c] {
                let entry = self.manifests[c as usize]
                    .get(i as usize)
                    .ok_or_else(|| anyhow!("the builder asked for a file not in the manifest"))?;
                wanted.push((c, i, root.join(&entry.path)));
            }
        }
        let files = wanted.len();
        let tx = self.tx.clone();
        let (json, quiet, node) = (
            self.build.json_progress,
            self.build.quiet,
            self.node.clone(),
        );
        let before = self.bytes_sent;
        Ok(tokio::spawn(async move {
            // One thread reads the files in order (no hop to a blocking pool per file).
            let sent = tokio::task::spawn_blocking({
                let tx = tx.clone();
                move || send_files(&tx, wanted)
            })
            .await??;
            send(&tx, In::UploadDone(UploadDone {})).await?;
            let all = before + sent;
            if json {
                eprintln!(
                    "{{\"context_bytes_sent\":{all},\"context_files_sent\":{files},\"context_files\":{total},\"builder\":\"{node}\"}}"
                );
            } else if !quiet {
                eprintln!(
                    "#0 context: {} sent to {node} ({files} of {total} files changed); context_bytes_sent={all}",
                    human(all),
                );
            }
            Ok(sent)
        }))
    }

    fn receive_output(&mut self, chunk: OutputChunk) -> Result<()> {
        if !self.outputs.contains_key(&chunk.name) {
            self.outputs
                .insert(chunk.name.clone(), tempfile::NamedTempFile::new()?);
        }
        let file = self.outputs.get_mut(&chunk.name).expect("inserted");
        file.write_all(&chunk.data)?;
        if chunk.eof {
            let file = self.outputs.remove(&chunk.name).expect("present");
            self.place_output(&chunk.name, file)?;
        }
        Ok(())
    }

    fn place_output(&self, name: &str, file: tempfile::NamedTempFile) -> Result<()> {
        let dest = match name {
            "iidfile" => self.build.iidfile.clone().map(Dest::File),
            "metadata" => self.build.metadata_file.clone().map(Dest::File),
            _ => name
                .strip_prefix("out")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| self.build.dests.get(i).cloned().flatten()),
        };
        match dest {
            Some(Dest::File(path)) => {
                // A new file as a local build makes it (not the temporary file's 0600).
                let mut out = std::fs::File::create(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                std::io::copy(&mut std::fs::File::open(file.path())?, &mut out)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Some(Dest::Dir(dir)) => {
                std::fs::create_dir_all(&dir)?;
                let mut archive = tar::Archive::new(std::fs::File::open(file.path())?);
                archive.set_preserve_permissions(true);
                archive.set_preserve_mtime(true);
                archive
                    .unpack(&dir)
                    .with_context(|| format!("writing the output to {}", dir.display()))?;
            }
            None => {}
        }
        Ok(())
    }
}

/// Sends each file in 1 MiB chunks; returns the bytes sent.
fn send_files(tx: &mpsc::Sender<ClientMessage>, files: Vec<(u32, u32, PathBuf)>) -> Result<u64> {
    use std::io::Read as _;
    let mut sent = 0u64;
    for (context, index, path) in files {
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        loop {
            let mut buf = Vec::with_capacity(1 << 20);
            let n = (&mut file).take(1 << 20).read_to_end(&mut buf)?;
            let eof = n < (1 << 20);
            sent += n as u64;
            let chunk = FileChunk {
                context,
                index,
                data: buf,
                eof,
            };
            tx.blocking_send(ClientMessage {
                msg: Some(In::File(chunk)),
            })
            .map_err(|_| anyhow!("the connection to the builder closed"))?;
            if eof {
                break;
            }
        }
    }
    Ok(sent)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1}MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1}kB", bytes as f64 / 1e3)
    }
}
