//! `--ssh` with a remote builder: the client's SSH agents are relayed over the build's
//! session, as BuildKit forwards them. The server listens on a socket per agent id in the
//! build's scratch directory (the build mounts it as it would a local agent); each
//! connection to it becomes a stream of [`SshData`] to the client, which connects to its own
//! agent. No key ever reaches the server's disk: only the agent protocol passes through.

use crate::proto::{client_message, server_message, ClientMessage, ServerMessage, SshData};
use anyhow::{bail, Context as _, Result};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// Writers of the open connections, by connection number.
type Writers = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Option<Vec<u8>>>>>>;

/// The client's `--ssh` values: the agent socket of each id on the client.
pub fn client_agents(specs: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let auth_sock = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
    specs
        .iter()
        .map(|s| engine::secrets::parse_ssh(s, auth_sock.clone()))
        .collect()
}

/// Copies `reader` to the session as `wrap(data)` messages, then a close.
fn pump<M: Send + 'static>(
    mut reader: OwnedReadHalf,
    conn: u32,
    id: String,
    tx: mpsc::Sender<M>,
    wrap: fn(SshData) -> M,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            let data = SshData {
                conn,
                id: id.clone(),
                data: buf[..n].to_vec(),
                close: false,
            };
            if tx.send(wrap(data)).await.is_err() {
                return;
            }
        }
        let close = SshData {
            conn,
            id,
            data: Vec::new(),
            close: true,
        };
        let _ = tx.send(wrap(close)).await;
    });
}

/// Writes what the session brings for one connection; None shuts it down.
fn sink(mut writer: OwnedWriteHalf, conn: u32, writers: &Writers) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    writers.lock().unwrap().insert(conn, tx);
    let writers = writers.clone();
    tokio::spawn(async move {
        while let Some(Some(data)) = rx.recv().await {
            if writer.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
        writers.lock().unwrap().remove(&conn);
    });
}

/// Hands session data to its connection's writer.
fn deliver(writers: &Writers, data: SshData) {
    let writers = writers.lock().unwrap();
    if let Some(w) = writers.get(&data.conn) {
        let _ = w.send((!data.close).then_some(data.data));
    }
}

/// The server's side: a listening socket per agent id, for one build.
pub struct ServerAgents {
    pub sockets: Vec<(String, PathBuf)>,
    writers: Writers,
    accepting: Vec<tokio::task::JoinHandle<()>>,
}

type ServerTx = mpsc::Sender<Result<ServerMessage, tonic::Status>>;

fn to_client(data: SshData) -> Result<ServerMessage, tonic::Status> {
    Ok(ServerMessage {
        msg: Some(server_message::Msg::Ssh(data)),
    })
}

impl ServerAgents {
    /// Listens for each of `ids` in `dir` (a private scratch directory).
    pub fn listen(dir: &Path, ids: &[String], tx: &ServerTx) -> Result<Self> {
        let writers = Writers::default();
        let next = Arc::new(AtomicU32::new(0));
        let (mut sockets, mut accepting) = (Vec::new(), Vec::new());
        for (n, id) in ids.iter().enumerate() {
            if id.is_empty() || id.len() > 64 || sockets.iter().any(|(i, _)| i == id) {
                bail!("protocol: bad or repeated --ssh id {id:?}");
            }
            let path = dir.join(format!("ssh-{n}.sock"));
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("listening on {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            let (id2, tx, writers, next) = (id.clone(), tx.clone(), writers.clone(), next.clone());
            accepting.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let conn = next.fetch_add(1, Ordering::Relaxed);
                    let (reader, writer) = stream.into_split();
                    sink(writer, conn, &writers);
                    let open = SshData {
                        conn,
                        id: id2.clone(),
                        data: Vec::new(),
                        close: false,
                    };
                    if tx.send(to_client(open)).await.is_err() {
                        return;
                    }
                    pump(reader, conn, id2.clone(), tx.clone(), to_client);
                }
            }));
            sockets.push((id.clone(), path));
        }
        Ok(Self {
            sockets,
            writers,
            accepting,
        })
    }

    /// Data the client's agent sent for one connection.
    pub fn deliver(&self, data: SshData) {
        deliver(&self.writers, data);
    }
}

impl Drop for ServerAgents {
    fn drop(&mut self) {
        for task in &self.accepting {
            task.abort();
        }
        self.writers.lock().unwrap().clear();
    }
}

fn to_server(data: SshData) -> ClientMessage {
    ClientMessage {
        msg: Some(client_message::Msg::Ssh(data)),
    }
}

/// The client's side: connects to its agent when the server opens a connection.
pub struct ClientAgents {
    sockets: HashMap<String, PathBuf>,
    writers: Writers,
    tx: mpsc::Sender<ClientMessage>,
}

impl ClientAgents {
    pub fn new(sockets: &[(String, PathBuf)], tx: mpsc::Sender<ClientMessage>) -> Self {
        Self {
            sockets: sockets.iter().cloned().collect(),
            writers: Writers::default(),
            tx,
        }
    }

    pub async fn handle(&self, data: SshData) {
        let known = self.writers.lock().unwrap().contains_key(&data.conn);
        if !known && !data.close {
            if let Err(e) = self.open(&data).await {
                eprintln!("builder: --ssh {}: {e:#}", data.id);
                let close = SshData {
                    close: true,
                    data: Vec::new(),
                    ..data
                };
                let _ = self.tx.send(to_server(close)).await;
                return;
            }
        }
        if known || !data.data.is_empty() {
            deliver(&self.writers, data);
        }
    }

    async fn open(&self, data: &SshData) -> Result<()> {
        let Some(path) = self.sockets.get(&data.id) else {
            bail!("the builder asked for an agent this build did not forward");
        };
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to {}", path.display()))?;
        let (reader, writer) = stream.into_split();
        sink(writer, data.conn, &self.writers);
        pump(
            reader,
            data.conn,
            data.id.clone(),
            self.tx.clone(),
            to_server,
        );
        Ok(())
    }
}
