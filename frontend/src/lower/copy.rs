//! Lowering of COPY and ADD in phases: flags, sources and destination, source groups
//! (local, remote, heredocs), the file op (plain, `--link` or rebased), history text.

use super::sources::{http_filename, is_git_url, is_http_url, parse_git};
use super::steps::StageCtx;
use super::*;
use crate::command::{parse_checksum, CopyCommand, CopyFlag, CopyOptions};
use crate::parser::Heredoc;

/// One group of COPY/ADD sources read from the same input.
struct SourceGroup {
    vertex: usize,
    sources: Vec<String>,
    unpack: bool,
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
    cmd: &CopyCommand,
    env: &[(String, String)],
    name: String,
) -> Result<(usize, String), DockerfileError> {
    let expand = |w: &str| l.expand(ins, env, w, cx.escape).map_err(|e| e.message);
    let flags = cmd.resolve(&expand).map_err(|e| l.command_error(e))?;
    let operands = copy_operands(l, cx, state, ins, cmd, env)?;
    check_remote_flags(l, cmd, &flags, &operands)?;
    let mut groups = Vec::new();
    let is_add = cmd.is_add;
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

/// Sources (heredocs `<<EOF` take the next body; other words are expanded) and destination.
fn copy_operands<'i>(
    l: &Lowerer,
    cx: &StageCtx,
    state: &StageState,
    ins: &Instruction,
    cmd: &'i CopyCommand,
    env: &[(String, String)],
) -> Result<CopyOperands<'i>, DockerfileError> {
    let mut heredocs = cmd.heredocs.iter();
    let mut words = Vec::new();
    let mut docs = Vec::new();
    for a in &cmd.sources {
        if !cmd.json && a.starts_with("<<") {
            if let Some(doc) = heredocs.next() {
                docs.push(doc);
                continue;
            }
        }
        // BuildKit expands the JSON form's words too.
        words.push(l.expand(ins, env, a, cx.escape)?);
    }
    let dest_word = l.expand(ins, env, &cmd.dest, cx.escape)?;
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
    cmd: &CopyCommand,
    flags: &CopyOptions,
    operands: &CopyOperands,
) -> Result<(), DockerfileError> {
    let is_add = cmd.is_add;
    let words = &operands.words;
    let http_count = words.iter().filter(|w| is_add && is_http_url(w)).count();
    let git_count = words.iter().filter(|w| is_add && is_git_url(w)).count();
    let only_http = http_count != 0 && http_count == words.len() && operands.docs.is_empty();
    let at = |flag: CopyFlag, message: String| {
        let span = cmd
            .span_of(flag)
            .unwrap_or(command::Span { line: 0, column: 0 });
        l.err_at(span.line, span.column, message)
    };
    if flags.checksum.is_some() && !only_http {
        let message = "ADD --checksum can only be used with HTTP(S) sources";
        return Err(at(CopyFlag::Checksum, message.into()));
    }
    if flags.keep_git_dir && git_count == 0 {
        let message = "ADD --keep-git-dir can only be used with a git source";
        return Err(at(CopyFlag::KeepGitDir, message.into()));
    }
    if let Some(c) = &flags.checksum {
        parse_checksum(c).map_err(|e| at(CopyFlag::Checksum, e))?;
    }
    Ok(())
}

/// An ADD source fetched from git or HTTP.
fn remote_group(
    l: &mut Lowerer,
    ins: &Instruction,
    flags: &CopyOptions,
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
    flags: &CopyOptions,
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
fn copy_history(ins: &Instruction, flags: CopyOptions, operands: CopyOperands) -> String {
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
