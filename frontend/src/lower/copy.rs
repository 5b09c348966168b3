//! Lowering of COPY and ADD in phases: flags, sources and destination, source groups
//! (local, remote, heredocs), the file op (plain, `--link` or rebased), history text.

use super::sources::{http_filename, is_git_url, is_http_url, parse_git, validate_chmod};
use super::steps::{collect_flags, flag_bool, StageCtx};
use super::*;
use crate::parser::Heredoc;

/// One group of COPY/ADD sources read from the same input.
struct SourceGroup {
    vertex: usize,
    sources: Vec<String>,
    unpack: bool,
}

/// COPY/ADD flags, expanded.
#[derive(Default)]
struct CopyFlags {
    from: Option<String>,
    chown: Option<Chown>,
    /// `--chown` as written (after expansion), for the history text.
    chown_text: Option<String>,
    chmod: Option<String>,
    checksum: Option<String>,
    exclude: Vec<String>,
    link: bool,
    parents: bool,
    keep_git_dir: bool,
    unpack: Option<bool>,
}

/// The expanded sources and destination of a COPY/ADD.
struct CopyOperands<'i> {
    /// Source words (paths or URLs), expanded.
    words: Vec<String>,
    /// Heredoc sources (`<<EOF`), in order.
    docs: Vec<&'i Heredoc>,
    /// The destination as written (after expansion).
    dest_word: String,
    /// The absolute destination (ending in '/' when it names a directory).
    dest: String,
}

pub(super) fn lower_copy(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    env: &[(String, String)],
    name: String,
) -> Result<(usize, String), DockerfileError> {
    let raw_flags = collect_flags(ins, allowed_flags(ins)).map_err(|e| l.err_near(ins, "--", e))?;
    let upper = ins.keyword.to_uppercase();
    if ins.args.len() < 2 {
        return Err(l.err(
            ins,
            format!(
                "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
        ));
    }
    let flags = copy_flags(l, cx, ins, env, &raw_flags)?;
    let operands = copy_operands(l, cx, state, ins, env)?;
    check_remote_flags(l, ins, &flags, &operands)?;
    let mut groups = Vec::new();
    let is_add = ins.keyword == "add";
    let (remote, local): (Vec<String>, Vec<String>) = operands
        .words
        .iter()
        .cloned()
        .partition(|w| is_add && (is_git_url(w) || is_http_url(w)));
    if !local.is_empty() {
        let vertex = match &flags.from {
            Some(f) => l.source_for_from(cx, ins, "COPY --from", f, &state.platform)?,
            None => l.context_vertex(),
        };
        groups.push(SourceGroup {
            vertex,
            sources: local,
            unpack: is_add && flags.unpack.unwrap_or(true),
        });
    }
    for w in &remote {
        groups.push(remote_group(l, ins, &flags, w, &operands.dest_word));
    }
    if !operands.docs.is_empty() {
        groups.push(heredoc_group(l, cx, ins, env, &operands.docs)?);
    }
    let result = copy_vertex(l, cx, state, ins, &flags, &groups, &operands.dest, name);
    Ok((result, copy_history(ins, flags, operands)))
}

fn allowed_flags(ins: &Instruction) -> &'static [&'static str] {
    if ins.keyword == "add" {
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
    }
}

/// Expands and checks the flags [`collect_flags`] found.
fn copy_flags(
    l: &Lowerer,
    cx: &StageCtx,
    ins: &Instruction,
    env: &[(String, String)],
    raw_flags: &[(String, String)],
) -> Result<CopyFlags, DockerfileError> {
    let mut flags = CopyFlags::default();
    for (flag, raw) in raw_flags {
        let needle = format!("--{flag}");
        let value = l
            .expand(ins, env, raw, cx.escape)
            .map_err(|e| l.err_near(ins, &needle, e.message))?;
        let as_bool = |v: &str| flag_bool(flag, v).map_err(|e| l.err_near(ins, &needle, e));
        match flag.as_str() {
            "from" => flags.from = Some(value),
            "chown" => {
                flags.chown = Some(parse_chown(&value));
                flags.chown_text = Some(value);
            }
            "chmod" => {
                validate_chmod(&value).map_err(|e| l.err_near(ins, &needle, e))?;
                flags.chmod = Some(value);
            }
            "checksum" => flags.checksum = Some(value),
            "exclude" => flags.exclude.push(value),
            "link" => flags.link = as_bool(&value)?,
            "parents" => flags.parents = as_bool(&value)?,
            "keep-git-dir" => flags.keep_git_dir = as_bool(&value)?,
            _ => flags.unpack = Some(as_bool(&value)?),
        }
    }
    Ok(flags)
}

/// Sources (heredocs `<<EOF` take the next body; other words are expanded) and destination.
fn copy_operands<'i>(
    l: &Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &'i Instruction,
    env: &[(String, String)],
) -> Result<CopyOperands<'i>, DockerfileError> {
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
    // BuildKit reads a destination of "." (or "") as a directory, like one ending in '/'.
    let dest_names_dir = dest_word.ends_with('/') || dest_word == "." || dest_word.is_empty();
    if words.len() + docs.len() > 1 && !dest_names_dir {
        let upper = ins.keyword.to_uppercase();
        return Err(l.err(ins, format!("when using {upper} with more than one source file, the destination must be a directory and end with a /")));
    }
    let workdir = state.config.config.working_dir.as_deref().unwrap_or("/");
    let mut dest = if dest_word.starts_with('/') {
        dest_word.clone()
    } else {
        join_path(workdir, &dest_word, true)
    };
    if dest_names_dir && !dest.ends_with('/') {
        dest.push('/');
    }
    Ok(CopyOperands {
        words,
        docs,
        dest_word,
        dest,
    })
}

/// `--checksum` needs HTTP sources only and a valid digest; `--keep-git-dir` a git source.
fn check_remote_flags(
    l: &Lowerer,
    ins: &Instruction,
    flags: &CopyFlags,
    operands: &CopyOperands,
) -> Result<(), DockerfileError> {
    let is_add = ins.keyword == "add";
    let words = &operands.words;
    let http_count = words.iter().filter(|w| is_add && is_http_url(w)).count();
    let git_count = words.iter().filter(|w| is_add && is_git_url(w)).count();
    let only_http = http_count != 0 && http_count == words.len() && operands.docs.is_empty();
    if flags.checksum.is_some() && !only_http {
        return Err(l.err_near(
            ins,
            "--checksum",
            "ADD --checksum can only be used with HTTP(S) sources",
        ));
    }
    if flags.keep_git_dir && git_count == 0 {
        return Err(l.err_near(
            ins,
            "--keep-git-dir",
            "ADD --keep-git-dir can only be used with a git source",
        ));
    }
    if let Some(c) = &flags.checksum {
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
    Ok(())
}

/// An ADD source fetched from git or HTTP.
fn remote_group(
    l: &mut Lowerer,
    ins: &Instruction,
    flags: &CopyFlags,
    url: &str,
    dest_word: &str,
) -> SourceGroup {
    let (op, sources, unpack) = if is_git_url(url) {
        let g = parse_git(url);
        let op = Op::Git {
            remote: g.remote,
            reference: g.reference,
            subdir: g.subdir,
            keep_git_dir: flags.keep_git_dir,
        };
        (op, vec!["/".to_string()], false)
    } else {
        let filename = http_filename(url, dest_word);
        let op = Op::Http {
            url: url.to_string(),
            filename: filename.clone(),
            checksum: flags.checksum.clone(),
        };
        (
            op,
            vec![format!("/{filename}")],
            flags.unpack.unwrap_or(false),
        )
    };
    let vertex = l.add(
        Vertex {
            op,
            inputs: vec![],
            name: format!("[internal] fetch {url}"),
            ignore_cache: false,
        },
        Some(ins),
    );
    SourceGroup {
        vertex,
        sources,
        unpack,
    }
}

/// Heredoc sources, written as files by one vertex (expanded unless the name was quoted).
fn heredoc_group(
    l: &mut Lowerer,
    cx: &StageCtx,
    ins: &Instruction,
    env: &[(String, String)],
    docs: &[&Heredoc],
) -> Result<SourceGroup, DockerfileError> {
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
    Ok(SourceGroup {
        vertex,
        sources,
        unpack: false,
    })
}

/// The file op copying every group to `dest`, layered onto the base as asked.
#[allow(clippy::too_many_arguments)]
fn copy_vertex(
    l: &mut Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    flags: &CopyFlags,
    groups: &[SourceGroup],
    dest: &str,
    name: String,
) -> usize {
    let base = l.or_scratch(state.vertex);
    // A COPY whose result cannot depend on the base beyond where its files land (no owner
    // names to look up in the base's /etc/passwd) is made on an empty tree ahead of the base
    // and rebased onto it: it runs in parallel with earlier steps and survives base changes.
    let numeric = |s: &str| s.parse::<u32>().is_ok();
    let owner_is_numeric = flags
        .chown
        .as_ref()
        .is_none_or(|c| numeric(&c.user) && c.group.as_deref().is_none_or(numeric));
    let rebase = !flags.link && ins.keyword == "copy" && owner_is_numeric && state.vertex.is_some();
    // With --link (or a rebase) the files land on an empty tree that is then layered onto the base.
    let target = if flags.link || rebase {
        l.or_scratch(None)
    } else {
        base
    };
    let mut inputs = vec![target];
    let mut actions = Vec::new();
    for g in groups {
        inputs.push(g.vertex);
        actions.push(FileAction::Copy {
            src_input: inputs.len() - 1,
            sources: g.sources.clone(),
            dest: dest.to_string(),
            chown: flags.chown.clone(),
            chmod: flags.chmod.clone(),
            exclude: flags.exclude.clone(),
            parents: flags.parents,
            unpack: g.unpack,
        });
    }
    let vertex = |op, inputs, name| Vertex {
        op,
        inputs,
        name,
        ignore_cache: cx.no_cache,
    };
    let file_op = Op::File(FileOp { actions });
    if flags.link {
        let copied = l.add(vertex(file_op, inputs, name.clone()), Some(ins));
        let link_name = format!("{name} (link)");
        l.add(vertex(Op::Merge, vec![base, copied], link_name), Some(ins))
    } else if rebase {
        let copied = l.add(vertex(file_op, inputs, name.clone()), Some(ins));
        let mut inputs = vec![base, copied];
        inputs.extend(groups.iter().map(|g| g.vertex));
        l.add(vertex(Op::Rebase, inputs, name), Some(ins))
    } else {
        l.add(vertex(file_op, inputs, name), Some(ins))
    }
}

/// The history text, as BuildKit writes it: flags that change the files, sources, destination.
fn copy_history(ins: &Instruction, flags: CopyFlags, operands: CopyOperands) -> String {
    let mut shown = vec![ins.keyword.to_uppercase()];
    if flags.parents {
        shown.push("--parents".into());
    }
    if let Some(c) = flags.chown_text.filter(|c| !c.is_empty()) {
        shown.push(format!("--chown={c}"));
    }
    if let Some(c) = flags.chmod.filter(|c| !c.is_empty()) {
        shown.push(format!("--chmod={c}"));
    }
    shown.extend(operands.words);
    shown.extend(operands.docs.iter().map(|doc| format!("<<{}", doc.name)));
    shown.push(operands.dest_word);
    shown.join(" ")
}
