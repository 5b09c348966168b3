//! The remote build farm: `builder serve` (gRPC, mutual TLS on TCP) and the client side of
//! `builder build --builder ...`, with fsutil-style incremental context upload.

pub mod backend;
pub mod builders;
pub mod client;
pub mod command;
pub mod credentials;
pub mod endpoint;
pub mod inprocess;
pub mod manifest;
pub mod metrics;
pub mod render;
pub mod server;
pub mod session;
pub mod ssh;
pub mod sync;
pub mod upload;

pub mod proto {
    tonic::include_proto!("builder.remote.v1");
}

pub use backend::{BuildBackend, BuildJob, ProcessBackend};
pub use endpoint::{Address, TlsFiles};
pub use inprocess::InProcessBackend;
