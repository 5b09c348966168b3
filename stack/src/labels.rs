//! docker compose's container labels, and the hash that tells whether a container still
//! matches its service's configuration.

use sha2::{Digest, Sha256};

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const NETWORK: &str = "com.docker.compose.network";
pub const VOLUME: &str = "com.docker.compose.volume";

/// Hash of the service's canonical configuration and its image's digest: a container whose
/// label differs is recreated by `up`.
pub fn config_hash(service: &serde_json::Value, image_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(service.to_string().as_bytes());
    h.update(b"\0");
    h.update(image_id.as_bytes());
    hex::encode(h.finalize())
}
