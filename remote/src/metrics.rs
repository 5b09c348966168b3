//! Prometheus text exposition of the server's counters on `--metrics-addr` (any path).

use crate::session::Metrics;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub fn render(m: &Metrics) -> String {
    let rows = [
        (
            "builder_builds_running",
            "gauge",
            "Builds running now.",
            m.builds_running.load(Ordering::Relaxed).to_string(),
        ),
        (
            "builder_builds_total",
            "counter",
            "Builds started.",
            m.builds_total.load(Ordering::Relaxed).to_string(),
        ),
        (
            "builder_builds_failed_total",
            "counter",
            "Builds that failed or were cancelled.",
            m.builds_failed.load(Ordering::Relaxed).to_string(),
        ),
        (
            "builder_cache_hits_total",
            "counter",
            "Build steps answered from the cache.",
            m.cache_hits.load(Ordering::Relaxed).to_string(),
        ),
        (
            "builder_exec_steps_run_total",
            "counter",
            "RUN steps executed (not answered from the cache); steps shared by concurrent builds count once.",
            solver::inflight::exec_steps_run().to_string(),
        ),
        (
            "builder_context_bytes_received_total",
            "counter",
            "Bytes of context files received.",
            m.context_bytes_received.load(Ordering::Relaxed).to_string(),
        ),
        (
            "builder_context_files_received_total",
            "counter",
            "Context files received.",
            m.context_files_received.load(Ordering::Relaxed).to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}

pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // The request itself does not matter: every path answers with the metrics.
            let mut buf = [0u8; 4096];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await;
            let body = render(&metrics);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        });
    }
}
