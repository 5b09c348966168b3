//! `builder`: a daemonless Dockerfile build engine. This binary is glue: the
//! work happens in the `frontend`, `solver`, `snapshotter`, `executor` and
//! `exporter` crates.

mod build;
mod cache_flags;
mod build_context;
mod checks_output;
mod cli;
mod platform_flags;
mod platforms;
mod progress;
mod push;
mod run;
mod secrets;

use clap::Parser as _;

fn main() {
    // The executor re-executes this binary to set up containers from a
    // single-threaded process; that must happen before anything else starts.
    if std::env::args().nth(1).as_deref() == Some(executor::HELPER_ARG) {
        executor::helper_main();
    }
    let cli = cli::Cli::parse();
    let code = match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
