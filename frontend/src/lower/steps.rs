//! Lowering of RUN (flags, mounts, heredocs) and COPY/ADD (flags, heredocs, remote sources).

use super::mounts::{parse_mount, MountInput};
use super::sources::{http_filename, is_git_url, is_http_url, parse_git, validate_chmod};
use super::*;
use llb::graph::{ExecMount, MountKind};

/// What a stage's steps need to look up sources (`from=`) and mark vertices.
pub(super) struct StageCtx<'c> {
    pub index: usize,
    pub states: &'c [Option<StageState>],
    pub stage_index: &'c dyn Fn(&str, usize) -> Option<usize>,
    pub resolver: &'c dyn ImageResolver,
    pub escape: char,
    pub no_cache: bool,
}

/// Flags in source order, repeats kept (`--exclude` and `--mount` may repeat).
pub(super) fn collect_flags(
    ins: &Instruction,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for f in &ins.flags {
        let body = f.trim_start_matches('-');
        let (name, value) = body
            .split_once('=')
            .map(|(n, v)| (n, v.to_string()))
            .unwrap_or((body, "true".into()));
        if !allowed.contains(&name) {
            let hint = suggest(name, allowed.iter().copied())
                .map(|s| format!("; did you mean --{s}?"))
                .unwrap_or_default();
            let known = allowed
                .iter()
                .map(|a| format!("--{a}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "unknown flag: --{name} for {} (known flags: {}){hint}",
                ins.keyword.to_uppercase(),
                if known.is_empty() { "none" } else { &known },
            ));
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}

fn flag_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("invalid --{name}={value}: expected true or false")),
    }
}

impl Lowerer<'_> {
    /// An error at the column where `needle` (say, a flag) starts on the instruction's line.
    pub(super) fn err_near(
        &self,
        ins: &Instruction,
        needle: &str,
        message: impl Into<String>,
    ) -> DockerfileError {
        let column = (ins.start_line..=ins.end_line)
            .find_map(|line| {
                let text = self.source.get(line.wrapping_sub(1))?;
                text.find(needle)
                    .map(|i| (line, text[..i].chars().count() + 1))
            })
            .unwrap_or((ins.start_line, ins.column));
        self.err_at(column.0, column.1, message)
    }

    pub(super) fn context_vertex(&mut self) -> usize {
        self.add(
            Vertex {
                op: Op::Local {
                    name: CONTEXT_NAME.into(),
                },
                inputs: vec![],
                name: "[internal] load build context".into(),
                ignore_cache: false,
            },
            None,
        )
    }

    /// The vertex for `--from=`/`from=`: a named context, an earlier stage, or an image.
    pub(super) fn source_for_from(
        &mut self,
        cx: &StageCtx,
        ins: &Instruction,
        what: &str,
        reference: &str,
        platform: &str,
    ) -> Result<usize, DockerfileError> {
        if let Some(v) = self.named_context_vertex(cx, ins, reference, platform)? {
            return Ok(v);
        }
        if let Some(d) = (cx.stage_index)(reference, cx.index) {
            let Some(stage) = cx.states[d].as_ref() else {
                // Stages are picked before stage-level ARGs are known.
                return Err(self.err(ins, format!("{what}={reference}: that stage is not part of this build; its name may depend on an ARG declared inside a stage, which FROM-time stage selection cannot see")));
            };
            let v = stage.vertex;
            return Ok(self.or_scratch(v));
        }
        let lower = reference.to_lowercase();
        if let Ok(n) = lower.parse::<usize>() {
            if n >= self.stage_names.len() {
                return Err(self.err(ins, format!("invalid stage index {n}")));
            }
        }
        if self.stage_names.get(cx.index).cloned().flatten().as_deref() == Some(lower.as_str())
            || lower == cx.index.to_string()
        {
            return Err(self.err(
                ins,
                format!("circular dependency detected on stage: {lower}"),
            ));
        }
        let earlier: Vec<String> = (0..cx.index)
            .filter_map(|d| self.stage_names.get(d).cloned().flatten())
            .collect();
        let hint = suggest(&lower, earlier.iter().map(String::as_str));
        let (pinned, _) = cx.resolver.resolve(reference, platform).map_err(|e| match hint {
            Some(h) => self.err(ins, format!("{what}={reference}: no stage named {reference:?} comes before this one; did you mean {h:?}?")),
            None => self.err(ins, format!("{what}={reference}: no stage named {reference:?} comes before this one, and as an image: {e:#}")),
        })?;
        Ok(self.add(
            Vertex {
                op: Op::Image {
                    reference: pinned,
                    platform: platform.to_string(),
                },
                inputs: vec![],
                name: format!("FROM {reference}"),
                ignore_cache: false,
            },
            Some(ins),
        ))
    }

    fn mkfile_vertex(&mut self, files: Vec<(String, Vec<u8>, u32)>, name: &str) -> usize {
        self.add(
            Vertex {
                op: Op::File(FileOp {
                    actions: files
                        .into_iter()
                        .map(|(path, data, mode)| FileAction::Mkfile {
                            path,
                            data,
                            mode,
                            chown: None,
                        })
                        .collect(),
                }),
                inputs: vec![],
                name: name.into(),
                ignore_cache: false,
            },
            None,
        )
    }
}

/// The RUN command after heredoc handling, and a script to mount at /dev/pipes if any.
fn run_command(state: &StageState, ins: &Instruction) -> (Vec<String>, Option<(String, String)>) {
    if ins.json || ins.heredocs.is_empty() {
        return (command_args(state, ins), None);
    }
    let mut args = if state.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        state.shell.clone()
    };
    let cmdline = ins.args.join(" ");
    let only_heredoc = cmdline.trim().starts_with("<<")
        && !cmdline.trim().contains(char::is_whitespace)
        && ins.heredocs.len() == 1;
    if only_heredoc {
        let doc = &ins.heredocs[0];
        if doc.content.starts_with("#!") {
            // A script with a shebang runs as an executable file, as BuildKit does.
            args.push(format!("/dev/pipes/{}", doc.name));
            return (args, Some((doc.name.clone(), doc.content.clone())));
        }
        args.push(doc.content.clone());
        return (args, None);
    }
    // The shell reads the heredocs itself: command line, then each body and terminator.
    let mut full = cmdline;
    for doc in &ins.heredocs {
        full.push('\n');
        full.push_str(&doc.content);
        full.push_str(&doc.name);
    }
    args.push(full);
    (args, None)
}

pub(super) fn lower_run(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    env: &[(String, String)],
    name: String,
) -> Result<(usize, Vec<String>), DockerfileError> {
    let flags = collect_flags(ins, &["mount", "network", "security"])
        .map_err(|e| l.err_near(ins, "--", e))?;
    let root = l.or_scratch(state.vertex);
    let mut inputs = vec![root];
    let mut mounts: Vec<ExecMount> = Vec::new();
    let defaults = &l.opts.run;
    let mut network = defaults.network.unwrap_or(NetworkMode::Host);
    let mut insecure = false;
    let mut ssh_count = 0;
    for (flag, raw) in &flags {
        let needle = format!("--{flag}");
        let value = l
            .expand(ins, env, raw, cx.escape)
            .map_err(|e| l.err_near(ins, &needle, e.message))?;
        match flag.as_str() {
            "network" => {
                network = match value.as_str() {
                    "default" => NetworkMode::Host,
                    "host" if defaults.entitlements.network_host => NetworkMode::Host,
                    "host" => {
                        return Err(l.err_near(
                            ins,
                            &needle,
                            "network.host is not allowed: RUN --network=host needs the network.host entitlement (build flag --allow network.host)",
                        ))
                    }
                    "none" => NetworkMode::None,
                    other => {
                        let hint = suggest(other, ["default", "none", "host"])
                            .map(|s| format!("; did you mean {s}?"))
                            .unwrap_or_default();
                        return Err(l.err_near(
                            ins,
                            &needle,
                            format!("unsupported network mode {other:?}; use default, none or host{hint}"),
                        ));
                    }
                }
            }
            "security" => match value.as_str() {
                "sandbox" => {}
                "insecure" if defaults.entitlements.security_insecure => insecure = true,
                "insecure" => {
                    return Err(l.err_near(
                        ins,
                        &needle,
                        "security.insecure is not allowed: RUN --security=insecure needs the security.insecure entitlement (build flag --allow security.insecure)",
                    ))
                }
                other => {
                    return Err(l.err_near(
                        ins,
                        &needle,
                        format!("unsupported security mode {other:?}; use sandbox or insecure"),
                    ))
                }
            },
            _ => {
                let expand = |s: &str| -> Result<String, String> {
                    l.expand(ins, env, s, cx.escape).map_err(|e| e.message)
                };
                // The whole value is expanded per field, so quotes inside fields survive.
                let mut parsed = parse_mount(raw, &expand, &mut ssh_count)
                    .map_err(|e| l.err_near(ins, &needle, format!("--mount: {e}")))?;
                let input = match &parsed.input {
                    MountInput::None => None,
                    MountInput::Context => Some(l.context_vertex()),
                    MountInput::From(f) => {
                        Some(l.source_for_from(cx, ins, "--mount from", f, &state.platform)?)
                    }
                };
                if let Some(v) = input {
                    inputs.push(v);
                    parsed.set_input(inputs.len() - 1);
                }
                // A relative target is below the working directory (a cache id keeps the raw text).
                let target = &mut parsed.mount.target;
                if !target.is_empty() && !target.starts_with('/') {
                    let workdir = state.config.config.working_dir.as_deref().unwrap_or("/");
                    *target = join_path(workdir, target, false);
                }
                if mounts.iter().any(|m| {
                    m.target == parsed.mount.target && !parsed.mount.target.is_empty()
                }) {
                    return Err(l.err_near(
                        ins,
                        &needle,
                        format!("--mount: two mounts share the target {}", parsed.mount.target),
                    ));
                }
                mounts.push(parsed.mount);
            }
        }
    }
    let (args, script) = run_command(state, ins);
    if let Some((file, data)) = script {
        let v = l.mkfile_vertex(
            vec![(format!("/{file}"), data.into_bytes(), 0o755)],
            "[internal] preparing inline document",
        );
        inputs.push(v);
        mounts.push(ExecMount {
            target: "/dev/pipes/".into(),
            kind: MountKind::Bind {
                input: inputs.len() - 1,
                source: "/".into(),
                readonly: true,
            },
        });
    }
    let mut run_env = state.config.config.env.clone();
    for (k, v) in &state.args {
        if state.args_over_env.contains(k) {
            env_set(&mut run_env, k, v);
        } else if env_get(&run_env, k).is_none() {
            run_env.push(format!("{k}={v}"));
        }
    }
    add_proxy_env(&mut run_env, &l.opts.build_args);
    let exec = ExecOp {
        args: args.clone(),
        env: run_env,
        cwd: state
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into()),
        user: state.config.config.user.clone().unwrap_or_default(),
        network,
        mounts,
        insecure,
        extra_hosts: defaults.extra_hosts.clone(),
        ulimits: defaults.ulimits.clone(),
        shm_size: defaults.shm_size,
    };
    let vertex = l.add(
        Vertex {
            op: Op::Exec(exec),
            inputs,
            name,
            ignore_cache: cx.no_cache,
        },
        Some(ins),
    );
    Ok((vertex, args))
}

/// BuildKit's predefined proxy args: given as build args, they reach every RUN (in both
/// cases) without an ARG, and stay out of the image history.
fn add_proxy_env(run_env: &mut Vec<String>, build_args: &BTreeMap<String, String>) {
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ] {
        // The last of the differently-cased build args, in sorted order, wins.
        let Some(value) = build_args
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .next_back()
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        for key in [name.to_string(), name.to_lowercase()] {
            if env_get(run_env, &key).is_none() {
                run_env.push(format!("{key}={value}"));
            }
        }
    }
}

/// One group of COPY/ADD sources read from the same input.
struct SourceGroup {
    vertex: usize,
    sources: Vec<String>,
    unpack: bool,
}

pub(super) fn lower_copy(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    env: &[(String, String)],
    name: String,
) -> Result<(usize, String), DockerfileError> {
    let kw = ins.keyword.as_str();
    let allowed: &[&str] = if kw == "add" {
        &[
            "chown",
            "chmod",
            "link",
            "exclude",
            "checksum",
            "keep-git-dir",
            "unpack",
        ]
    } else {
        &["from", "chown", "chmod", "link", "exclude", "parents"]
    };
    let flags = collect_flags(ins, allowed).map_err(|e| l.err_near(ins, "--", e))?;
    let upper = kw.to_uppercase();
    if ins.args.len() < 2 {
        return Err(l.err(
            ins,
            format!(
                "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
        ));
    }
    let (mut from, mut chown, mut chmod, mut checksum) = (None, None, None, None);
    let mut chown_text = None;
    let (mut link, mut parents, mut keep_git_dir, mut unpack_flag) = (false, false, false, None);
    let mut exclude = Vec::new();
    for (flag, raw) in &flags {
        let needle = format!("--{flag}");
        let value = l
            .expand(ins, env, raw, cx.escape)
            .map_err(|e| l.err_near(ins, &needle, e.message))?;
        let as_bool = |v: &str| flag_bool(flag, v).map_err(|e| l.err_near(ins, &needle, e));
        match flag.as_str() {
            "from" => from = Some(value),
            "chown" => {
                chown = Some(parse_chown(&value));
                chown_text = Some(value);
            }
            "chmod" => {
                validate_chmod(&value).map_err(|e| l.err_near(ins, &needle, e))?;
                chmod = Some(value);
            }
            "checksum" => checksum = Some(value),
            "exclude" => exclude.push(value),
            "link" => link = as_bool(&value)?,
            "parents" => parents = as_bool(&value)?,
            "keep-git-dir" => keep_git_dir = as_bool(&value)?,
            _ => unpack_flag = Some(as_bool(&value)?),
        }
    }

    // Sources: heredocs (`<<EOF`) take the next body; other words are expanded.
    let mut heredocs = ins.heredocs.iter();
    let (raw_sources, raw_dest) = ins.args.split_at(ins.args.len() - 1);
    let mut words = Vec::new();
    let mut docs = Vec::new();
    for a in raw_sources {
        if !ins.json && a.starts_with("<<") {
            if let Some(doc) = heredocs.next() {
                docs.push(doc);
                continue;
            }
        }
        // BuildKit expands the JSON form's words too.
        words.push(l.expand(ins, env, a, cx.escape)?);
    }
    let dest_word = l.expand(ins, env, &raw_dest[0], cx.escape)?;
    let docs_names: Vec<String> = docs.iter().map(|d| d.name.clone()).collect();
    // BuildKit reads a destination of "." (or "") as a directory, like one ending in '/'.
    let dest_names_dir = dest_word.ends_with('/') || dest_word == "." || dest_word.is_empty();
    if words.len() + docs.len() > 1 && !dest_names_dir {
        return Err(l.err(ins, format!("when using {upper} with more than one source file, the destination must be a directory and end with a /")));
    }
    let workdir = state
        .config
        .config
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let mut dest = if dest_word.starts_with('/') {
        dest_word.clone()
    } else {
        join_path(&workdir, &dest_word, true)
    };
    if dest_names_dir && !dest.ends_with('/') {
        dest.push('/');
    }

    let is_remote = |w: &String| kw == "add" && (is_git_url(w) || is_http_url(w));
    let http_count = words
        .iter()
        .filter(|w| kw == "add" && is_http_url(w))
        .count();
    let git_count = words
        .iter()
        .filter(|w| kw == "add" && is_git_url(w))
        .count();
    if checksum.is_some() && (http_count == 0 || http_count != words.len() || !docs.is_empty()) {
        return Err(l.err_near(
            ins,
            "--checksum",
            "ADD --checksum can only be used with HTTP(S) sources",
        ));
    }
    if keep_git_dir && git_count == 0 {
        return Err(l.err_near(
            ins,
            "--keep-git-dir",
            "ADD --keep-git-dir can only be used with a git source",
        ));
    }
    if let Some(c) = &checksum {
        let valid = c.split_once(':').is_some_and(|(algo, hex)| {
            matches!(algo, "sha256" | "sha384" | "sha512")
                && !hex.is_empty()
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return Err(l.err_near(
                ins,
                "--checksum",
                format!("invalid --checksum={c}: expected sha256:<hex digest>"),
            ));
        }
    }

    let mut groups: Vec<SourceGroup> = Vec::new();
    let local: Vec<String> = words.iter().filter(|w| !is_remote(w)).cloned().collect();
    if !local.is_empty() {
        let vertex = match &from {
            Some(f) => l.source_for_from(cx, ins, "COPY --from", f, &state.platform)?,
            None => l.context_vertex(),
        };
        groups.push(SourceGroup {
            vertex,
            sources: local,
            unpack: kw == "add" && unpack_flag.unwrap_or(true),
        });
    }
    for w in words.iter().filter(|w| is_remote(w)) {
        let (op, sources, unpack) = if is_git_url(w) {
            let g = parse_git(w);
            (
                Op::Git {
                    remote: g.remote,
                    reference: g.reference,
                    subdir: g.subdir,
                    keep_git_dir,
                },
                vec!["/".to_string()],
                false,
            )
        } else {
            let filename = http_filename(w, &dest_word);
            (
                Op::Http {
                    url: w.clone(),
                    filename: filename.clone(),
                    checksum: checksum.clone(),
                },
                vec![format!("/{filename}")],
                unpack_flag.unwrap_or(false),
            )
        };
        let vertex = l.add(
            Vertex {
                op,
                inputs: vec![],
                name: format!("[internal] fetch {w}"),
                ignore_cache: false,
            },
            Some(ins),
        );
        groups.push(SourceGroup {
            vertex,
            sources,
            unpack,
        });
    }
    if !docs.is_empty() {
        let mut files = Vec::new();
        let mut sources = Vec::new();
        for doc in docs {
            let data = if doc.expand {
                let env_vec = env.to_vec();
                Expander::new(&env_vec, cx.escape)
                    .with_raw_quotes(true)
                    .with_raw_escapes(true)
                    .process_word(&doc.content)
                    .map_err(|e| l.err(ins, format!("heredoc {}: {e}", doc.name)))?
            } else {
                doc.content.clone()
            };
            files.push((format!("/{}", doc.name), data.into_bytes(), 0o644));
            sources.push(format!("/{}", doc.name));
        }
        let vertex = l.mkfile_vertex(files, "[internal] preparing inline document");
        groups.push(SourceGroup {
            vertex,
            sources,
            unpack: false,
        });
    }

    let base = l.or_scratch(state.vertex);
    // A COPY whose result cannot depend on the base beyond where its files land (no owner
    // names to look up in the base's /etc/passwd) is made on an empty tree ahead of the base
    // and rebased onto it: it runs in parallel with earlier steps and survives base changes.
    let numeric = |s: &str| s.parse::<u32>().is_ok();
    let owner_is_numeric = chown
        .as_ref()
        .is_none_or(|c| numeric(&c.user) && c.group.as_deref().is_none_or(numeric));
    let rebase = !link && kw == "copy" && owner_is_numeric && state.vertex.is_some();
    // With --link (or a rebase) the files land on an empty tree that is then layered onto the base.
    let target = if link || rebase {
        l.or_scratch(None)
    } else {
        base
    };
    let mut inputs = vec![target];
    let mut actions = Vec::new();
    for g in &groups {
        inputs.push(g.vertex);
        actions.push(FileAction::Copy {
            src_input: inputs.len() - 1,
            sources: g.sources.clone(),
            dest: dest.clone(),
            chown: chown.clone(),
            chmod: chmod.clone(),
            exclude: exclude.clone(),
            parents,
            unpack: g.unpack,
        });
    }
    let copied = l.add(
        Vertex {
            op: Op::File(FileOp { actions }),
            inputs,
            name: name.clone(),
            ignore_cache: cx.no_cache,
        },
        Some(ins),
    );
    let result = if link {
        l.add(
            Vertex {
                op: Op::Merge,
                inputs: vec![base, copied],
                name: format!("{name} (link)"),
                ignore_cache: cx.no_cache,
            },
            Some(ins),
        )
    } else if rebase {
        let mut inputs = vec![base, copied];
        inputs.extend(groups.iter().map(|g| g.vertex));
        l.add(
            Vertex {
                op: Op::Rebase,
                inputs,
                name,
                ignore_cache: cx.no_cache,
            },
            Some(ins),
        )
    } else {
        copied
    };
    // The history text, as BuildKit writes it: flags that change the files, sources, destination.
    let mut shown = vec![kw.to_uppercase()];
    if parents {
        shown.push("--parents".into());
    }
    if let Some(c) = chown_text.filter(|c| !c.is_empty()) {
        shown.push(format!("--chown={c}"));
    }
    if let Some(c) = chmod.filter(|c| !c.is_empty()) {
        shown.push(format!("--chmod={c}"));
    }
    shown.extend(words);
    shown.extend(docs_names.iter().map(|name| format!("<<{name}")));
    shown.push(dest_word);
    Ok((result, shown.join(" ")))
}
