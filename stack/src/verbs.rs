//! The per-service verbs of `builder compose` (ps, logs, exec, run, start, stop, ...) and
//! the foreground part of `up`: thin mappings onto `stack` and `runtime`.

use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::command::{Command as StackCommand, UpArgs};
use crate::Stack;

/// The containers of the named services; when none are named, all the project's, including
/// those of services a profile now hides.
fn containers_of(stack: &Stack, services: &[String]) -> Result<Vec<runtime::Container>> {
    if services.is_empty() {
        let mut all = stack.containers()?;
        all.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        return Ok(all);
    }
    let mut out = Vec::new();
    for s in stack.selected(services, true)? {
        out.extend(stack.service_containers(&s)?);
    }
    Ok(out)
}

/// Applies `f` to each container; reports errors and returns 1 if any failed.
fn each(containers: &[runtime::Container], f: impl Fn(&runtime::Container) -> Result<()>) -> i32 {
    let mut code = 0;
    for c in containers {
        if let Err(e) = f(c) {
            eprintln!("error: {}: {e:#}", c.config.name);
            code = 1;
        }
    }
    code
}

/// Runs one compose command on a loaded project (`ls` needs none: see [`ls`]).
pub fn run(stack: &Stack, images: &dyn crate::ImageProvider, command: StackCommand) -> Result<i32> {
    match command {
        StackCommand::Up(args) => up(stack, images, args),
        StackCommand::Down {
            volumes,
            rmi,
            remove_orphans,
            timeout,
        } => {
            let o = crate::DownOptions {
                volumes,
                remove_orphans,
                timeout,
            };
            down(stack, images, &o, rmi.as_deref())
        }
        StackCommand::Ls { .. } => bail!("compose ls lists projects: call crate::verbs::ls"),
        StackCommand::Ps {
            all,
            quiet,
            format,
            services,
        } => ps(stack, &services, all, quiet, &format),
        StackCommand::Logs {
            follow,
            tail,
            timestamps,
            no_log_prefix,
            services,
        } => logs(
            stack,
            &services,
            follow,
            tail.as_deref(),
            timestamps,
            no_log_prefix,
        ),
        StackCommand::Exec {
            no_tty,
            index,
            env,
            user,
            workdir,
            service,
            command,
            ..
        } => {
            let c = stack.service_container(&service, index)?;
            let (tty, stdin) = runtime::compose_exec_stdio(no_tty);
            let request = runtime::ExecRequest {
                args: command,
                env,
                user,
                workdir,
                tty,
                stdin,
            };
            runtime::exec_to_stdio(&c, &request)
        }
        StackCommand::Run {
            rm,
            detach,
            no_tty,
            service,
            command,
        } => one_off(stack, images, &service, command, rm, detach, no_tty),
        StackCommand::Top { services } => top(stack, &services),
        StackCommand::Port {
            index,
            service,
            private_port,
        } => port(stack, &service, index, &private_port),
        StackCommand::Images => list_images(stack),
        StackCommand::Wait { services } => wait(stack, &services),
        StackCommand::Pull { services } => pull(stack, images, &services),
        StackCommand::Push { services } => push(stack, &services),
        StackCommand::Build { services } => build(stack, images, &services),
        other => lifecycle(stack, other),
    }
}

/// `down`, then `--rmi`'s images.
fn down(
    stack: &Stack,
    images: &dyn crate::ImageProvider,
    options: &crate::DownOptions,
    rmi: Option<&str>,
) -> Result<i32> {
    crate::down(stack, options)?;
    if let Some(which) = rmi {
        remove_images(stack, images, which)?;
    }
    Ok(0)
}

/// start, stop, restart, kill, rm.
fn lifecycle(stack: &Stack, command: StackCommand) -> Result<i32> {
    let store = &stack.store;
    let code = match command {
        StackCommand::Start { services } => each(&containers_of(stack, &services)?, |c| {
            runtime::start(store, c)
        }),
        StackCommand::Stop { timeout, services } => {
            let mut cs = containers_of(stack, &services)?;
            cs.reverse();
            each(&cs, |c| runtime::stop(c, timeout))
        }
        StackCommand::Restart { timeout, services } => {
            each(&containers_of(stack, &services)?, |c| {
                runtime::restart(store, c, timeout)
            })
        }
        StackCommand::Kill { signal, services } => each(&containers_of(stack, &services)?, |c| {
            runtime::kill(c, &signal)
        }),
        StackCommand::Rm {
            force,
            stop,
            volumes,
            services,
        } => each(&containers_of(stack, &services)?, |c| {
            if stop {
                runtime::stop(c, None)?;
            }
            runtime::remove(store, c, force, volumes)
        }),
        _ => unreachable!("up, down and ls are handled by the caller"),
    };
    Ok(code)
}

fn logs(
    stack: &Stack,
    services: &[String],
    follow: bool,
    tail: Option<&str>,
    timestamps: bool,
    no_prefix: bool,
) -> Result<i32> {
    let tail = match tail {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| anyhow::anyhow!("--tail {n:?}: want a number or all"))?,
        ),
    };
    let opts = crate::LogOptions {
        follow,
        tail,
        timestamps,
        color: std::io::stdout().is_terminal(),
        no_prefix,
    };
    crate::stream_logs(&containers_of(stack, services)?, &opts)?;
    Ok(0)
}

fn list_images(stack: &Stack) -> Result<i32> {
    println!("{:<28} {:<40} IMAGE ID", "CONTAINER", "IMAGE");
    for c in stack.containers()? {
        let id = c.config.image_id.trim_start_matches("sha256:");
        let short = &id[..id.len().min(12)];
        println!("{:<28} {:<40} {short}", c.config.name, c.config.image);
    }
    Ok(0)
}

/// Prints each container's exit code; returns the highest.
fn wait(stack: &Stack, services: &[String]) -> Result<i32> {
    let mut code = 0;
    for c in containers_of(stack, services)? {
        let exit = runtime::wait_exit(&c)?;
        println!("{exit}");
        code = code.max(exit);
    }
    Ok(code)
}

fn pull(stack: &Stack, images: &dyn crate::ImageProvider, services: &[String]) -> Result<i32> {
    for s in stack.selected(services, true)? {
        if stack.model.services[&s].image.is_some() {
            images.pull(&stack.image_of(&s))?;
        }
    }
    Ok(0)
}

fn build(stack: &Stack, images: &dyn crate::ImageProvider, services: &[String]) -> Result<i32> {
    let requests: Vec<crate::BuildRequest> = stack
        .selected(services, true)?
        .into_iter()
        .filter_map(|s| stack.build_request(&s).transpose())
        .collect::<Result<_>>()?;
    images.build(&requests)?;
    Ok(0)
}

fn ps(stack: &Stack, services: &[String], all: bool, quiet: bool, format: &str) -> Result<i32> {
    let mut rows = Vec::new();
    for c in containers_of(stack, services)? {
        let Some(state) = c.live_state_if_present()? else {
            continue;
        };
        if all || state.status.is_active() {
            rows.push((c, state));
        }
    }
    if quiet {
        rows.iter().for_each(|(c, _)| println!("{}", c.id()));
        return Ok(0);
    }
    let mut json = runtime::ps_rows(&rows);
    for (row, (c, s)) in json.iter_mut().zip(&rows) {
        row["Service"] = c
            .config
            .labels
            .get(crate::SERVICE)
            .cloned()
            .unwrap_or_default()
            .into();
        row["Project"] = stack.name.clone().into();
        row["Health"] = s
            .health
            .as_ref()
            .map(|h| h.status.clone())
            .unwrap_or_default()
            .into();
        row["ExitCode"] = s.exit_code.into();
        row["Name"] = c.config.name.clone().into();
    }
    match format {
        "json" => println!("{}", serde_json::Value::Array(json)),
        "table" => {
            println!(
                "{:<28} {:<24} {:<12} {:<28} PORTS",
                "NAME", "IMAGE", "SERVICE", "STATUS"
            );
            for r in &json {
                let f = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                println!(
                    "{:<28} {:<24} {:<12} {:<28} {}",
                    f("Name"),
                    f("Image"),
                    f("Service"),
                    f("Status"),
                    f("Ports")
                );
            }
        }
        other => bail!("--format {other:?}: want table or json"),
    }
    Ok(0)
}

fn top(stack: &Stack, services: &[String]) -> Result<i32> {
    for c in containers_of(stack, services)? {
        let state = c.live_state()?;
        println!("{}", c.config.name);
        println!("{:<8} {:<8} CMD", "PID", "PPID");
        for p in runtime::container_processes(&state) {
            println!("{:<8} {:<8} {}", p.pid, p.ppid, p.command);
        }
        println!();
    }
    Ok(0)
}

fn port(stack: &Stack, service: &str, index: u32, private: &str) -> Result<i32> {
    let c = stack.service_container(service, index)?;
    let (port, proto) = private.split_once('/').unwrap_or((private, "tcp"));
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("{private:?}: not a port"))?;
    let state = c.live_state()?;
    match state
        .ports
        .iter()
        .find(|p| p.container_port == port && p.protocol == proto)
    {
        Some(p) => {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            println!("{ip}:{}", p.host_port);
            Ok(0)
        }
        None => bail!("no port {port}/{proto} published for {}", c.config.name),
    }
}

/// `compose push`: each built service's image to its registry, in this process.
fn push(stack: &Stack, services: &[String]) -> Result<i32> {
    let store = engine::image_command::open_store(stack.root())?;
    let rt = tokio::runtime::Runtime::new()?;
    for s in stack.selected(services, true)? {
        if stack.model.services[&s].build.is_none() {
            continue;
        }
        let image = stack.image_of(&s);
        rt.block_on(engine::image_command::push(&store, &image))
            .with_context(|| format!("pushing {image}"))?;
    }
    Ok(0)
}

/// `compose run`: a one-off container of the service, its dependencies brought up first.
fn one_off(
    stack: &Stack,
    images: &dyn crate::ImageProvider,
    service: &str,
    command: Vec<String>,
    rm: bool,
    detach: bool,
    no_tty: bool,
) -> Result<i32> {
    let deps: Vec<String> = stack
        .model
        .services
        .get(service)
        .map(|s| s.depends_on.keys().cloned().collect())
        .unwrap_or_default();
    if !deps.is_empty() {
        crate::up(
            stack,
            images,
            &crate::UpOptions {
                services: deps,
                ..Default::default()
            },
        )?;
    }
    let image = images.prepare(&stack.image_of(service))?;
    let hash = crate::config_hash(&stack.service_json[service], &image.image_id);
    let cx = crate::SpecContext {
        stack,
        service,
        number: 1,
        config_hash: &hash,
        oneoff: true,
    };
    let mut spec = crate::service_spec(&cx)?;
    if !command.is_empty() {
        spec.command = Some(command);
    }
    spec.auto_remove = rm && detach;
    spec.stdio = crate::one_off_stdio(spec.stdio, detach, no_tty);
    spec.restart = runtime::RestartPolicy::No;
    let c = stack.store.create(&spec, &image)?;
    runtime::start(&stack.store, &c)?;
    if detach {
        println!("{}", c.config.name);
        return Ok(0);
    }
    let options = runtime::AttachOptions {
        stdin: true,
        tail: None,
        detach_keys: None,
    };
    let code = runtime::attach_until_detached(&c, &options)?;
    match (rm, code) {
        (true, Some(_)) => runtime::remove(&stack.store, &c, false, true)?,
        // Detached: it runs on, and goes when it stops.
        (true, None) => runtime::remove_once_stopped(&stack.store, &c)?,
        (false, _) => {}
    }
    Ok(code.unwrap_or(0))
}

/// Foreground `up`: prefixed logs until every container stops. The first Ctrl-C stops them
/// gracefully (stop_signal, stop_grace_period), a second kills them.
fn foreground(
    stack: &Stack,
    services: &[String],
    abort_on_exit: bool,
    exit_code_from: Option<&str>,
    interrupts: &'static AtomicUsize,
) -> Result<i32> {
    let containers = containers_of(stack, services)?;
    let opts = crate::LogOptions {
        follow: true,
        color: std::io::stdout().is_terminal(),
        ..Default::default()
    };
    std::thread::scope(|s| {
        s.spawn(|| watch(&containers, abort_on_exit, interrupts));
        crate::stream_logs(&containers, &opts)
    })?;
    match exit_code_from {
        Some(service) => Ok(stack.service_container(service, 1)?.live_state()?.exit_code),
        None => Ok(0),
    }
}

/// Stops everything on Ctrl-C (kills on the second) or, with `abort_on_exit`, when one
/// container exits; returns when none is running.
fn watch(containers: &[runtime::Container], abort_on_exit: bool, interrupts: &AtomicUsize) {
    let running = |c: &runtime::Container| c.live_state().is_ok_and(|s| s.status.is_active());
    let mut stopping = false;
    loop {
        let any_exited = containers.iter().any(|c| !running(c));
        if !containers.iter().any(running) {
            return;
        }
        let presses = interrupts.load(Ordering::SeqCst);
        if presses >= 2 {
            eprintln!("Killing...");
            each(containers, |c| runtime::kill(c, "SIGKILL"));
            return;
        }
        if !stopping && (presses == 1 || (abort_on_exit && any_exited)) {
            stopping = true;
            eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
            // Each in its own thread, so that a second Ctrl-C is seen meanwhile.
            for c in containers.iter() {
                let c = c.clone();
                std::thread::spawn(move || runtime::stop(&c, None));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `compose ls`: the projects with containers in the store.
pub fn ls(root: &Path, all: bool, quiet: bool) -> Result<i32> {
    let store = runtime::ContainerStore::open(root)?;
    let projects = crate::list_projects(&store)?;
    if !quiet {
        println!("{:<24} {:<16} CONFIG DIR", "NAME", "STATUS");
    }
    for (name, (running, total, dir)) in projects {
        if running == 0 && !all {
            continue;
        }
        match quiet {
            true => println!("{name}"),
            false => println!(
                "{name:<24} {:<16} {dir}",
                format!("running({running}/{total})")
            ),
        }
    }
    Ok(0)
}

fn remove_images(stack: &Stack, images: &dyn crate::ImageProvider, which: &str) -> Result<()> {
    for (name, service) in &stack.model.services {
        let local = service.build.is_some();
        if which == "all" || (which == "local" && local) {
            let image = stack.image_of(name);
            if images.untag(&image)? {
                eprintln!(" Image {image}  Removed");
            }
        }
    }
    Ok(())
}

/// Ctrl-C presses seen (the first stops gracefully, the second kills).
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn up(stack: &Stack, images: &dyn crate::ImageProvider, args: UpArgs) -> Result<i32> {
    let mut scale = BTreeMap::new();
    for s in &args.scale {
        let (name, n) = s.split_once('=').context("--scale: want SERVICE=N")?;
        let n: u32 = n
            .parse()
            .with_context(|| format!("--scale {s:?}: N must be a number"))?;
        scale.insert(name.to_string(), n);
    }
    let opts = crate::UpOptions {
        services: args.services.clone(),
        no_deps: args.no_deps,
        force_recreate: args.force_recreate,
        build: args.build,
        no_build: args.no_build,
        scale,
        remove_orphans: args.remove_orphans,
        wait: args.wait,
        wait_timeout: args.wait_timeout.map(Duration::from_secs),
    };
    if !(args.detach || args.wait) {
        // Before any container starts: a Ctrl-C from now on stops the stack gracefully.
        // SAFETY: the handler only increments an atomic.
        unsafe {
            libc::signal(
                libc::SIGINT,
                on_interrupt as *const () as libc::sighandler_t,
            )
        };
    }
    let services = crate::up(stack, images, &opts)?;
    if args.detach || args.wait {
        return Ok(0);
    }
    foreground(
        stack,
        &services,
        args.abort_on_container_exit || args.exit_code_from.is_some(),
        args.exit_code_from.as_deref(),
        &INTERRUPTS,
    )
}
