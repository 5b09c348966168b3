//! `builder serve`: the gRPC service, its listeners (mutual TLS on TCP), health, metrics,
//! graceful shutdown and the store's GC policy.

use crate::backend::BuildBackend;
use crate::endpoint::{Address, TlsFiles};
use crate::proto::builder_server::BuilderServer;
use crate::session::{Metrics, Service};
use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// The server's config file (TOML).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// GC policy: after a build, prune the build cache down to this size (e.g. "20GB").
    pub keep_storage: Option<String>,
    /// Entitlements clients may ask for with `--allow` (network.host, security.insecure).
    #[serde(default)]
    pub allow_entitlements: Vec<String>,
    /// Seconds a SIGTERM waits for running builds before cancelling them.
    pub shutdown_timeout: Option<u64>,
    /// `--cache-from` values added to every build (a registry cache shared by replicas).
    #[serde(default)]
    pub cache_from: Vec<String>,
    /// `--cache-to` values added to every build.
    #[serde(default)]
    pub cache_to: Vec<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
    }
}

pub struct ServeOptions {
    pub addr: Address,
    pub tls: TlsFiles,
    pub insecure: bool,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub config: Config,
    pub root: PathBuf,
}

/// Checks the transport's security: mutual TLS on TCP unless `--insecure` on loopback.
fn server_tls(opts: &ServeOptions) -> Result<Option<ServerTlsConfig>> {
    let complete = opts.tls.ca.is_some() && opts.tls.cert.is_some() && opts.tls.key.is_some();
    match (&opts.addr, opts.insecure) {
        (Address::Unix(_), _) if opts.tls.is_empty() => Ok(None),
        (Address::Tcp { .. }, true) if !opts.addr.is_loopback() => bail!(
            "--insecure is allowed only on a loopback address or a unix socket, not {}",
            opts.addr
        ),
        (_, true) => Ok(None),
        _ if !complete => bail!(
            "{} needs mutual TLS: --tlscacert (the CA clients' certificates are checked \
             against), --tlscert and --tlskey (or --insecure on loopback)",
            opts.addr
        ),
        _ => {
            let identity = Identity::from_pem(
                opts.tls.cert.as_deref().unwrap_or_default(),
                opts.tls.key.as_deref().unwrap_or_default(),
            );
            let ca = Certificate::from_pem(opts.tls.ca.as_deref().unwrap_or_default());
            Ok(Some(
                ServerTlsConfig::new().identity(identity).client_ca_root(ca),
            ))
        }
    }
}

/// Serves until SIGTERM or SIGINT, then stops accepting and waits for running builds up to
/// the shutdown timeout before cancelling them.
pub async fn serve(opts: ServeOptions, backend: Arc<dyn BuildBackend>) -> Result<()> {
    let tls = server_tls(&opts)?;
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = opts.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-addr {addr}"))?;
        tokio::spawn(crate::metrics::serve(listener, metrics.clone()));
    }
    let (cancel_all, cancel_rx) = tokio::sync::watch::channel(false);
    let service = Service::new(opts.root.clone(), opts.config, backend, metrics, cancel_rx)?;
    let shutdown_timeout = service.shutdown_timeout();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<BuilderServer<Service>>().await;
    // Large HTTP/2 windows: context uploads are bulk transfers.
    let mut builder = Server::builder()
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder.add_service(health_service).add_service(
        BuilderServer::new(service)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        let _ = stop_rx.await;
    };
    let serving: crate::backend::BoxFuture<'_, Result<(), tonic::transport::Error>> =
        match &opts.addr {
            Address::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let listener = tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("listening on {}", opts.addr))?;
                eprintln!("builder serve: listening on {}", opts.addr);
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                Box::pin(router.serve_with_incoming_shutdown(incoming, stop))
            }
            Address::Tcp { host, port } => {
                let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                    .await
                    .with_context(|| format!("listening on {}", opts.addr))?;
                eprintln!("builder serve: listening on {}", opts.addr);
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                Box::pin(router.serve_with_incoming_shutdown(incoming, stop))
            }
        };
    let mut serving = serving;
    tokio::select! {
        r = &mut serving => return Ok(r?),
        _ = termination() => {}
    }
    health.set_not_serving::<BuilderServer<Service>>().await;
    eprintln!(
        "builder serve: stopping; waiting up to {}s for running builds",
        shutdown_timeout.as_secs()
    );
    let _ = stop_tx.send(());
    if tokio::time::timeout(shutdown_timeout, &mut serving)
        .await
        .is_err()
    {
        eprintln!("builder serve: cancelling the builds still running");
        let _ = cancel_all.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(25), serving).await;
    }
    Ok(())
}

async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_config_map_holds_a_valid_server_config() {
        let yaml = include_str!("../../deploy/kubernetes/configmap.yaml");
        let block = yaml
            .split("builder.toml: |\n")
            .nth(1)
            .expect("builder.toml key");
        let toml_text: String = block
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        let config: Config = toml::from_str(&toml_text).expect("valid TOML config");
        assert_eq!(config.keep_storage.as_deref(), Some("40GB"));
        assert!(config.cache_to[0].starts_with("type=registry"));
    }

    #[test]
    fn tcp_without_tls_needs_insecure_on_loopback() {
        let opts = |addr: &str, insecure| ServeOptions {
            addr: Address::parse(addr).unwrap(),
            tls: TlsFiles::default(),
            insecure,
            metrics_addr: None,
            config: Config::default(),
            root: PathBuf::from("/nonexistent"),
        };
        assert!(server_tls(&opts("tcp://127.0.0.1:1", false)).is_err());
        assert!(server_tls(&opts("tcp://0.0.0.0:1", true)).is_err());
        assert!(server_tls(&opts("tcp://127.0.0.1:1", true))
            .unwrap()
            .is_none());
        assert!(server_tls(&opts("unix:///run/x.sock", false))
            .unwrap()
            .is_none());
    }
}
