//! `builder`: a daemonless Dockerfile build engine. This binary is glue: the
//! work happens in the `frontend`, `solver`, `snapshotter`, `executor` and
//! `exporter` crates.

mod build;
mod cli;
mod compose_cmd;
mod compose_stack;
mod containers;
mod image_cmds;
mod isolation;
mod login;
mod prune;
mod remote_cmd;
mod run;

use clap::Parser as _;

fn main() {
    // The executor re-executes this binary to set up containers from a
    // single-threaded process; that must happen before anything else starts.
    if std::env::args().nth(1).as_deref() == Some(executor::HELPER_ARG) {
        executor::helper_main();
    }
    if std::env::args().nth(1).as_deref() == Some(runtime::MONITOR_ARG) {
        runtime::monitor_main();
    }
    // A non-root user builds in a user namespace of its own; entering it needs one thread.
    executor::userns::enter_rootless_namespace(&[runtime::MONITOR_ARG]);
    quiet_on_broken_pipe();
    let cli = cli::Cli::try_parse().unwrap_or_else(|e| exit_on_bad_args(e));
    let code = match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// `builder images | head`: when the reader has gone, `println!` panics on EPIPE (Rust ignores
/// SIGPIPE, and restoring it would let a registry that drops a connection kill a push). End
/// quietly instead, with the status a shell gives a process SIGPIPE ended (128+13).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map_or("", String::as_str);
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Bad command-line arguments: an unknown flag is named the way docker names it
/// (`unknown flag: --foo`); everything else (help, version, bad values) is clap's own.
fn exit_on_bad_args(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::UnknownArgument {
        if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
            if arg.starts_with('-') {
                let flag = arg.split('=').next().unwrap_or(arg);
                eprintln!("error: unknown flag: {flag}");
                eprintln!("See 'builder --help'.");
                std::process::exit(2);
            }
        }
    }
    e.exit()
}
