//! The container commands (`create`, `start`, `stop`, `ps`, `logs`, `inspect`, `stats`,
//! volumes, networks, ...) as library calls: typed commands (read from the CLI's flags by
//! field name) in, docker's output formats out. Images come through [`ImageSource`].

use anyhow::{bail, Result};
use serde::Deserialize;
use std::path::Path;

use crate::RunFlags;

/// Images for containers: the caller resolves and unpacks them (the build engine's store).
pub trait ImageSource {
    /// The image ready to base a container on (`platform`: the `--platform` flag).
    fn prepare(&self, image: &str, platform: Option<&str>) -> Result<crate::PreparedImage>;
    /// `inspect NAME` of a name that is no container: the image's details; the exit code.
    fn inspect_image(&self, name: &str) -> Result<i32>;
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum ContainerCommand {
    /// Create a container without starting it.
    Create(Box<RunFlags>),
    /// Start stopped containers.
    Start {
        /// Attach to the container's output and wait for it.
        attach: bool,
        /// Attach stdin too (a container created with -i).
        interactive: bool,
        /// Keys that detach (see [`crate::detach_keys`]).
        detach_keys: Option<String>,
        containers: Vec<String>,
    },
    /// Stop running containers (stop signal, then SIGKILL after the timeout).
    Stop {
        /// Seconds to wait before killing.
        time: Option<u32>,
        containers: Vec<String>,
    },
    /// Stop and start containers.
    Restart {
        time: Option<u32>,
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        signal: String,
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        force: bool,
        /// Also remove the containers' anonymous volumes.
        volumes: bool,
        containers: Vec<String>,
    },
    /// Wait for containers to exit and print their exit codes.
    Wait { containers: Vec<String> },
    /// List containers.
    Ps(PsArgs),
    /// Print a container's logs.
    Logs {
        follow: bool,
        /// Number of lines from the end (or "all").
        tail: String,
        /// Only lines since this time (RFC 3339, Unix seconds or e.g. 10m).
        since: Option<String>,
        /// Prefix each line with its time.
        timestamps: bool,
        container: String,
    },
    /// Show containers' details as JSON (or through a Go template); for an image name, the
    /// image's manifest and config.
    Inspect {
        format: Option<String>,
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        /// Keep stdin open (the terminal is passed through).
        interactive: bool,
        /// Use the caller's terminal.
        tty: bool,
        env: Vec<String>,
        user: Option<String>,
        workdir: Option<String>,
        container: String,
        command: Vec<String>,
    },
    /// Attach this terminal's stdin and output to a running container (made with -i/-t).
    Attach {
        /// Do not attach stdin.
        no_stdin: bool,
        /// Keys that detach (see [`crate::detach_keys`]).
        detach_keys: Option<String>,
        container: String,
    },
    /// Copy files between a running container and the host: NAME:PATH HOSTPATH or back.
    Cp { source: String, dest: String },
    /// Show running containers' CPU, memory and process count (one sample, as --no-stream).
    Stats {
        /// Accepted for docker compatibility: builder always prints one sample.
        no_stream: bool,
        containers: Vec<String>,
    },
    /// Show a container's processes (host pids).
    Top { container: String },
    /// List a container's published ports (or the host address of one).
    Port {
        container: String,
        /// PORT or PORT/PROTO.
        private_port: Option<String>,
    },
    /// Volumes: create, ls, inspect, rm, prune.
    Volume(VolumeCommand),
    /// Networks: create, ls, inspect, rm, prune.
    Network(NetworkCommand),
    /// Container management.
    Container(ContainerSubcommand),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum VolumeCommand {
    /// Create a named volume (a random name without one).
    Create {
        label: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    Ls { quiet: bool },
    /// Show volumes as JSON.
    Inspect {
        format: Option<String>,
        volumes: Vec<String>,
    },
    /// Remove volumes no container uses.
    Rm { force: bool, volumes: Vec<String> },
    /// Remove unused anonymous volumes (with -a, unused named ones too).
    Prune { all: bool, force: bool },
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum NetworkCommand {
    /// Create a user-defined bridge network (containers on it resolve each other by name).
    Create {
        /// Subnet in CIDR form (default: a free /24 in 10.89.0.0/16).
        subnet: Option<String>,
        label: Vec<String>,
        /// Only the bridge driver exists.
        driver: String,
        name: String,
    },
    /// List networks.
    Ls { quiet: bool },
    /// Show networks as JSON.
    Inspect {
        format: Option<String>,
        networks: Vec<String>,
    },
    /// Remove networks.
    Rm { networks: Vec<String> },
    /// Remove networks no container uses.
    Prune { force: bool },
    /// Connect a container to a network (a running one at once).
    Connect {
        /// Extra name of the container on the network.
        alias: Vec<String>,
        /// Static IPv4 address in the network's subnet.
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Do not fail when the container is not connected; release what it holds there.
        force: bool,
        network: String,
        container: String,
    },
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    all: bool,
    /// Only ids.
    quiet: bool,
    /// name=, status=, label=KEY[=VALUE], id=
    filter: Vec<String>,
    /// Go template, e.g. '{{.Names}} {{.Status}}' or 'table {{.ID}}\t{{.Names}}'.
    format: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub enum ContainerSubcommand {
    /// Remove all stopped containers.
    Prune {
        /// Do not ask for confirmation (there is no prompt; accepted for docker compatibility).
        force: bool,
    },
    /// List containers (as `ps`).
    Ls(PsArgs),
    /// Start the containers whose restart policy is `always` or `unless-stopped` (after a reboot).
    StartRestartable,
}

/// Runs a container command; errors print docker-style and give docker's exit codes.
pub fn dispatch(root: &Path, command: ContainerCommand, images: &dyn ImageSource) -> i32 {
    match run_command(root, command, images) {
        Ok(code) => code,
        Err(e) => report(e),
    }
}

pub fn report(e: anyhow::Error) -> i32 {
    eprintln!("Error: {e:#}");
    match e.downcast_ref::<crate::ExitError>() {
        Some(exit) => exit.code,
        None => crate::EXIT_OUR_ERROR,
    }
}

fn run_command(root: &Path, command: ContainerCommand, images: &dyn ImageSource) -> Result<i32> {
    let store = crate::ContainerStore::open(root)?;
    match command {
        ContainerCommand::Create(args) => {
            let c = create_container(root, &args, images)?;
            println!("{}", c.id());
            Ok(0)
        }
        ContainerCommand::Start {
            attach,
            interactive,
            detach_keys,
            containers,
        } => {
            if attach || interactive {
                let [one] = containers.as_slice() else {
                    bail!("you cannot start and attach multiple containers at once");
                };
                let c = store.find(one)?;
                crate::start(&store, &c)?;
                let options = crate::AttachOptions {
                    stdin: interactive,
                    tail: None,
                    detach_keys,
                };
                return crate::attach(&c, &options);
            }
            each(&containers, |name| crate::start(&store, &store.find(name)?))
        }
        ContainerCommand::Stop { time, containers } => {
            each(&containers, |name| crate::stop(&store.find(name)?, time))
        }
        ContainerCommand::Restart { time, containers } => each(&containers, |name| {
            crate::restart(&store, &store.find(name)?, time)
        }),
        ContainerCommand::Kill { signal, containers } => {
            each(&containers, |name| crate::kill(&store.find(name)?, &signal))
        }
        ContainerCommand::Rm {
            force,
            volumes,
            containers,
        } => each(&containers, |name| {
            crate::remove(&store, &store.find(name)?, force, volumes)
        }),
        ContainerCommand::Wait { containers } => wait(&store, &containers),
        ContainerCommand::Ps(args) => ps(&store, &args),
        ContainerCommand::Inspect { format, containers } => {
            if let [one] = containers.as_slice() {
                if format.is_none() && store.find(one).is_err() {
                    return images.inspect_image(one);
                }
            }
            inspect(&store, format.as_deref(), &containers)
        }
        ContainerCommand::Network(command) => network(&store, command),
        ContainerCommand::Volume(command) => volume(&store, command),
        other => run_in_container(&store, other),
    }
}

/// The commands that look into or act inside one container.
fn run_in_container(store: &crate::ContainerStore, command: ContainerCommand) -> Result<i32> {
    match command {
        ContainerCommand::Exec {
            interactive,
            tty,
            env,
            user,
            workdir,
            container,
            command,
        } => {
            let request = crate::ExecRequest {
                args: command,
                env: env.iter().map(|kv| with_value(kv)).collect(),
                user,
                workdir,
                tty,
                stdin: interactive,
            };
            crate::exec_to_stdio(&store.find(&container)?, &request)
        }
        ContainerCommand::Attach {
            no_stdin,
            detach_keys,
            container,
        } => {
            let options = crate::AttachOptions {
                stdin: !no_stdin,
                tail: Some(0),
                detach_keys,
            };
            crate::attach_running(&store.find(&container)?, &options)
        }
        ContainerCommand::Logs {
            follow,
            tail,
            since,
            timestamps,
            container,
        } => {
            let query = crate::LogsQuery {
                follow,
                tail: parse_tail(&tail)?,
                since: since
                    .as_deref()
                    .map(crate::LogsQuery::parse_since)
                    .transpose()?,
                timestamps,
            };
            let c = store.find(&container)?;
            crate::follow_logs(&c, &query, &mut std::io::stdout(), &mut std::io::stderr())?;
            Ok(0)
        }
        ContainerCommand::Cp { source, dest } => cp(store, &source, &dest),
        ContainerCommand::Top { container } => top(store, &container),
        ContainerCommand::Port {
            container,
            private_port,
        } => port(store, &container, private_port),
        ContainerCommand::Container(sub) => container_sub(store, sub),
        ContainerCommand::Stats { containers, .. } => stats(store, &containers),
        _ => bail!("internal error: command not handled"),
    }
}

/// `wait NAME...`: each exit code; 1 when a container was not found.
fn wait(store: &crate::ContainerStore, containers: &[String]) -> Result<i32> {
    let mut failed = false;
    for name in containers {
        match store.find(name).and_then(|c| crate::wait_exit(&c)) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("Error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `KEY` alone takes its value from this process's environment, as docker does.
fn with_value(kv: &str) -> String {
    match kv.split_once('=') {
        Some(_) => kv.to_string(),
        None => format!("{kv}={}", std::env::var(kv).unwrap_or_default()),
    }
}

/// `logs --tail`: a number of lines, or `all`.
fn parse_tail(tail: &str) -> Result<Option<usize>> {
    match tail {
        "all" => Ok(None),
        n => Ok(Some(n.parse().map_err(|_| {
            anyhow::anyhow!("--tail {n:?}: want a number or \"all\"")
        })?)),
    }
}

/// `cp NAME:PATH HOSTPATH` or `cp HOSTPATH NAME:PATH`.
fn cp(store: &crate::ContainerStore, source: &str, dest: &str) -> Result<i32> {
    match (container_path(source), container_path(dest)) {
        (Some((name, path)), None) => crate::copy_out(&store.find(name)?, path, Path::new(dest))?,
        (None, Some((name, path))) => crate::copy_in(&store.find(name)?, Path::new(source), path)?,
        _ => bail!("cp: exactly one of SOURCE and DEST must be CONTAINER:PATH"),
    }
    Ok(0)
}

/// `top NAME`: the container's processes (host pids).
fn top(store: &crate::ContainerStore, container: &str) -> Result<i32> {
    let c = store.find(container)?;
    let state = c.live_state()?;
    if state.status != crate::Status::Running {
        bail!("container {container} is not running");
    }
    let mut lines = vec!["UID\tPID\tPPID\tCMD".to_string()];
    for p in crate::container_processes(&state) {
        lines.push(format!("{}\t{}\t{}\t{}", p.uid, p.pid, p.ppid, p.command));
    }
    print!("{}", align_columns(&lines));
    Ok(0)
}

/// `port NAME [PORT[/PROTO]]`.
fn port(
    store: &crate::ContainerStore,
    container: &str,
    private_port: Option<String>,
) -> Result<i32> {
    let c = store.find(container)?;
    let state = c.live_state()?;
    let wanted = private_port.map(|p| {
        if p.contains('/') {
            p
        } else {
            format!("{p}/tcp")
        }
    });
    let mut found = false;
    for p in &state.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        match &wanted {
            Some(w) if *w == key => println!("{ip}:{}", p.host_port),
            Some(_) => continue,
            None => println!("{key} -> {ip}:{}", p.host_port),
        }
        found = true;
    }
    if let (Some(w), false) = (&wanted, found) {
        bail!("No public port '{w}' published for {container}");
    }
    Ok(0)
}

/// `container ls|prune|start-restartable`.
fn container_sub(store: &crate::ContainerStore, sub: ContainerSubcommand) -> Result<i32> {
    match sub {
        ContainerSubcommand::Ls(args) => ps(store, &args),
        ContainerSubcommand::Prune { force: _ } => {
            for c in store.list()? {
                let Some(state) = c.live_state_if_present()? else {
                    continue;
                };
                if matches!(
                    state.status,
                    crate::Status::Exited | crate::Status::Created | crate::Status::Dead
                ) {
                    crate::remove(store, &c, false, false)?;
                    println!("{}", c.id());
                }
            }
            Ok(0)
        }
        ContainerSubcommand::StartRestartable => {
            for name in crate::start_restartable(store)? {
                println!("{name}");
            }
            Ok(0)
        }
    }
}

/// Applies `f` to each name, printing the name on success as docker does; 1 if any failed.
fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut code = 0;
    for name in names {
        match f(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e:#}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn ps(store: &crate::ContainerStore, args: &PsArgs) -> Result<i32> {
    let filter = crate::PsFilter::parse(&args.filter)?;
    let mut selected = Vec::new();
    for c in store.list()? {
        let Some(state) = c.live_state_if_present()? else {
            continue;
        };
        let shown = args.all || filter.has_status() || state.status.is_active();
        if shown && filter.matches(&c, &state) {
            selected.push((c, state));
        }
    }
    selected.reverse(); // newest first, as docker lists them
    let rows = crate::ps_rows(&selected);
    if args.quiet {
        for row in &rows {
            println!("{}", row["ID"].as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    let format = args.format.clone().unwrap_or_else(|| {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}".into()
    });
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start().to_string()),
        None => (false, format.clone()),
    };
    let mut lines = Vec::new();
    if table {
        lines.push(crate::template::render(&body, &header_row())?);
    }
    for row in &rows {
        lines.push(crate::template::render(&body, row)?);
    }
    print!(
        "{}",
        if table {
            align_columns(&lines)
        } else {
            lines.iter().map(|l| format!("{l}\n")).collect()
        }
    );
    Ok(0)
}

fn header_row() -> serde_json::Value {
    serde_json::json!({"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
        "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE",
        "Status": "STATUS", "Names": "NAMES", "Labels": "LABELS"})
}

/// Pads tab-separated cells into columns (docker's tabwriter with 3 spaces of padding).
fn align_columns(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}", w = widths[i] + 3));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn inspect(store: &crate::ContainerStore, format: Option<&str>, names: &[String]) -> Result<i32> {
    let mut values = Vec::new();
    let mut code = 0;
    for name in names {
        match store.find(name).and_then(|c| Ok((c.live_state()?, c))) {
            Ok((state, c)) => values.push(crate::inspect_json(&c, &state)),
            Err(e) => {
                eprintln!("Error: {e:#}");
                code = 1;
            }
        }
    }
    match format {
        Some(f) => {
            for v in &values {
                println!("{}", crate::template::render(f, v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&values)?),
    }
    Ok(code)
}

/// `run` of a managed container: create, start, then print the id (`-d`) or follow its
/// output and return its exit code.
pub fn run_managed(root: &Path, args: RunFlags, images: &dyn ImageSource) -> Result<i32> {
    // A foreground --rm container is removed here, after its exit code was read; a detached
    // one by its monitor.
    let remove_after = args.rm && !args.detach;
    if let Err(e) = crate::detach_keys::resolve(args.detach_keys.as_deref()) {
        return Ok(report(e));
    }
    let mut args = args;
    args.rm = args.rm && args.detach;
    args.stdin_once = args.interactive && !args.detach;
    let c = match create_container(root, &args, images) {
        Ok(c) => c,
        Err(e) => return Ok(report(e)),
    };
    let store = crate::ContainerStore::open(root)?;
    if let Err(e) = crate::start(&store, &c) {
        return Ok(report(e));
    }
    if args.detach {
        println!("{}", c.id());
        return Ok(0);
    }
    let options = crate::AttachOptions {
        stdin: args.interactive,
        tail: None,
        detach_keys: args.detach_keys.clone(),
    };
    match crate::attach_until_detached(&c, &options)? {
        Some(code) => {
            if remove_after {
                crate::remove(&store, &c, false, true)?;
            }
            Ok(code)
        }
        None => {
            if remove_after {
                crate::remove_once_stopped(&store, &c)?;
            }
            Ok(0)
        }
    }
}

/// Creates a managed container from the flags (`create`, and `run -d`).
pub fn create_container(
    root: &Path,
    args: &RunFlags,
    images: &dyn ImageSource,
) -> Result<crate::Container> {
    let spec = crate::container_spec(args)?;
    let image = images.prepare(&args.image, args.platform.as_deref())?;
    crate::ContainerStore::open(root)?.create(&spec, &image)
}

fn network(store: &crate::ContainerStore, command: NetworkCommand) -> Result<i32> {
    let networks = crate::NetworkStore::open(&store.root)?;
    match command {
        NetworkCommand::Create {
            subnet,
            label,
            driver,
            name,
        } => {
            if driver != "bridge" {
                bail!("--driver {driver:?}: only the bridge driver is supported");
            }
            let labels = parse_labels(&label);
            println!("{}", networks.create(&name, subnet.as_deref(), labels)?.id);
            Ok(0)
        }
        NetworkCommand::Ls { quiet } => {
            let mut lines = vec!["NETWORK ID\tNAME\tDRIVER\tSUBNET".to_string()];
            for n in networks.list()? {
                if quiet {
                    println!("{}", &n.id[..12]);
                } else {
                    lines.push(format!("{}\t{}\tbridge\t{}", &n.id[..12], n.name, n.subnet));
                }
            }
            if !quiet {
                print!("{}", align_columns(&lines));
            }
            Ok(0)
        }
        NetworkCommand::Inspect {
            format,
            networks: names,
        } => {
            let values = network_values(store, &networks, &names)?;
            print_values(format.as_deref(), &values)
        }
        NetworkCommand::Rm { networks: names } => each(&names, |name| networks.remove(store, name)),
        NetworkCommand::Connect {
            alias,
            ip,
            network,
            container,
        } => {
            let opts = crate::ConnectOptions {
                aliases: alias,
                ipv4_address: ip,
            };
            crate::connect(store, &store.find(&container)?, &network, &opts).map(|()| 0)
        }
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => crate::disconnect(store, &store.find(&container)?, &network, force).map(|()| 0),
        NetworkCommand::Prune { force: _ } => {
            for n in networks.list()? {
                let used = store.list()?.iter().any(|c| c.on_network(&n.name));
                if n.is_user_defined() && !used {
                    networks.remove(store, &n.name)?;
                    println!("{}", n.name);
                }
            }
            Ok(0)
        }
    }
}

/// `network inspect`'s documents, docker's fields.
fn network_values(
    store: &crate::ContainerStore,
    networks: &crate::NetworkStore,
    names: &[String],
) -> Result<Vec<serde_json::Value>> {
    let mut values = Vec::new();
    for name in names {
        let n = networks.get(name)?;
        let members = crate::network_members(store, &n.name)?;
        values.push(
            serde_json::json!({"Name": n.name, "Id": n.id, "Created": n.created,
            "Driver": "bridge", "IPAM": {"Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
            "Options": {"com.docker.network.bridge.name": n.bridge}, "Labels": n.labels,
            "Containers": members}),
        );
    }
    Ok(values)
}

/// Inspect documents through a Go template (`-f`), or as a JSON array.
fn print_values(format: Option<&str>, values: &[serde_json::Value]) -> Result<i32> {
    match format {
        Some(f) => {
            for v in values {
                println!("{}", crate::template::render(f, v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(values)?),
    }
    Ok(0)
}

/// `--label KEY=VALUE` (KEY alone: an empty value).
fn parse_labels(labels: &[String]) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn volume(store: &crate::ContainerStore, command: VolumeCommand) -> Result<i32> {
    let volumes = crate::VolumeStore::open(&store.root)?;
    match command {
        VolumeCommand::Create { label, name } => {
            let labels = parse_labels(&label);
            println!("{}", volumes.create(name.as_deref(), labels)?.name);
            Ok(0)
        }
        VolumeCommand::Ls { quiet } => {
            let mut lines = vec!["DRIVER\tVOLUME NAME".to_string()];
            for v in volumes.list()? {
                if quiet {
                    println!("{}", v.name);
                } else {
                    lines.push(format!("local\t{}", v.name));
                }
            }
            if !quiet {
                print!("{}", align_columns(&lines));
            }
            Ok(0)
        }
        VolumeCommand::Inspect {
            format,
            volumes: names,
        } => {
            let mut values = Vec::new();
            for name in &names {
                let v = volumes.get(name)?;
                values.push(
                    serde_json::json!({"Name": v.name, "Driver": "local", "CreatedAt": v.created,
                    "Mountpoint": volumes.data_dir(&v.name), "Labels": v.labels, "Scope": "local",
                    "Options": {}, "Anonymous": v.anonymous}),
                );
            }
            print_values(format.as_deref(), &values)
        }
        VolumeCommand::Rm {
            force: _,
            volumes: names,
        } => each(&names, |name| volumes.remove(store, name)),
        VolumeCommand::Prune { all, force: _ } => {
            for v in volumes.list()? {
                if (v.anonymous || all) && volumes.users(store, &v.name)?.is_empty() {
                    volumes.remove(store, &v.name)?;
                    println!("{}", v.name);
                }
            }
            Ok(0)
        }
    }
}

/// `NAME:PATH` of `cp` (a host path may contain ':' only after a '/').
fn container_path(arg: &str) -> Option<(&str, &str)> {
    arg.split_once(':').filter(|(name, _)| !name.contains('/'))
}

/// `stats --no-stream`: CPU over a 500 ms sample, resident memory and process count, summed
/// over the container's processes.
fn stats(store: &crate::ContainerStore, names: &[String]) -> Result<i32> {
    let mut selected = Vec::new();
    for c in store.list()? {
        let Some(state) = c.live_state_if_present()? else {
            continue;
        };
        let wanted = names.is_empty()
            || names
                .iter()
                .any(|n| store.find(n).is_ok_and(|f| f.id() == c.id()));
        if wanted && state.status == crate::Status::Running {
            selected.push((c, state));
        }
    }
    let sample = |state: &crate::State| {
        let procs = crate::container_processes(state);
        let (cpu, mem) = procs
            .iter()
            .map(|p| crate::usage(p.pid))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (cpu, mem, procs.len())
    };
    let before: Vec<_> = selected.iter().map(|(_, s)| sample(s)).collect();
    let interval = std::time::Duration::from_millis(500);
    std::thread::sleep(interval);
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut lines = vec!["CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tPIDS".to_string()];
    for ((c, state), (cpu0, _, _)) in selected.iter().zip(before) {
        let (cpu1, mem, pids) = sample(state);
        let cpu = (cpu1.saturating_sub(cpu0)) as f64 / ticks / interval.as_secs_f64() * 100.0;
        let limit = c
            .config
            .limits
            .memory
            .map_or_else(host_memory, |m| m as f64);
        lines.push(format!(
            "{}\t{}\t{cpu:.2}%\t{:.1}MiB / {:.1}MiB\t{pids}",
            &c.id()[..12],
            c.config.name,
            mem as f64 / 1048576.0,
            limit / 1048576.0
        ));
    }
    print!("{}", align_columns(&lines));
    Ok(0)
}

fn host_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0)
}
