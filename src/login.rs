//! `builder login` / `builder logout`: flags read into `distribution::login`.

#[derive(clap::Args, serde::Serialize)]
pub struct LoginArgs {
    /// Registry host, e.g. registry.example.com:5000 (default: Docker Hub).
    pub server: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(clap::Args, serde::Serialize)]
pub struct LogoutArgs {
    /// Registry host (default: Docker Hub).
    pub server: Option<String>,
}
