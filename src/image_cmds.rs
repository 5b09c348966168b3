//! Image commands beyond build: `pull`, `save`, `load`, `history` (run by
//! `engine::image_command`).

use std::path::PathBuf;

#[derive(clap::Subcommand, serde::Serialize)]
pub enum ImageCommand {
    /// Pull an image from its registry into the local store.
    Pull {
        /// Image reference, e.g. registry:5000/app:1.
        name: String,
        /// Platform to pull from a multi-platform image (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Write images to a tar archive (docker load format, or an OCI layout with --format oci).
    Save {
        /// Images to save.
        #[arg(required = true)]
        names: Vec<String>,
        /// File to write (`-` for stdout).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Archive format.
        #[arg(long, value_enum, default_value = "docker")]
        format: SaveFormat,
    },
    /// Load images from a docker or OCI archive (as written by save, docker save or -o type=oci).
    Load {
        /// Archive to read (`-` for stdin).
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
    },
    /// Show the history of an image's layers.
    History {
        name: String,
        /// Show full commands and digests.
        #[arg(long)]
        no_trunc: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum, serde::Serialize)]
pub enum SaveFormat {
    Docker,
    Oci,
}
