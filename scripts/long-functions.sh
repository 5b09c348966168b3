#!/usr/bin/env bash
# Lists non-test Rust functions longer than a limit (default 120 lines), longest first.
# Usage: scripts/long-functions.sh [LIMIT] [DIR...]   (default: every workspace crate's src/)
# Exits 1 when any function is over the limit, so CI can gate on it.
set -euo pipefail
cd "$(dirname "$0")/.."
limit="${1:-120}"
shift || true
dirs=("$@")
if [ ${#dirs[@]} -eq 0 ]; then
  # Every workspace member's src/ and the CLI's own.
  mapfile -t dirs < <(sed -n 's/^members = \[\(.*\)\]/\1/p' Cargo.toml | tr -d '" ' | tr ',' '\n' | sed 's|$|/src|')
  dirs+=(src)
fi
python3 - "$limit" "${dirs[@]}" <<'PY'
import os, re, sys

limit = int(sys.argv[1])
FN = re.compile(r'\bfn\s+([A-Za-z_][A-Za-z0-9_]*)')

def strip(src):
    """Blanks comments, strings and char literals (keeping newlines) so braces count true."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i)); i = j
        elif src.startswith('/*', i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith('/*', j): depth += 1; j += 2
                elif src.startswith('*/', j): depth -= 1; j += 2
                else: j += 1
            out.append(re.sub(r'[^\n]', ' ', src[i:j])); i = j
        elif re.match(r'b?r#*"', src[i:i + 260]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == '_')):
            m = re.match(r'b?r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r'[^\n]', ' ', src[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == '\\' else 1
            j += 1
            out.append(re.sub(r'[^\n]', ' ', src[i:j])); i = j
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", src[i:])
            if m:
                out.append(' ' * m.end()); i += m.end()
            else:
                out.append(c); i += 1  # a lifetime
        else:
            out.append(c); i += 1
    return ''.join(out)

def test_spans(code):
    """Line ranges of #[cfg(test)] items and #[test] functions."""
    spans = []
    for m in re.finditer(r'#\[(cfg\(test\)|test|tokio::test[^\]]*)\]', code):
        open_ = code.find('{', m.end())
        semi = code.find(';', m.end())
        if open_ < 0 or (0 <= semi < open_):
            continue
        close = match(code, open_)
        spans.append((code.count('\n', 0, m.start()), code.count('\n', 0, close)))
    return spans

def match(code, open_):
    depth = 0
    for j in range(open_, len(code)):
        if code[j] == '{': depth += 1
        elif code[j] == '}':
            depth -= 1
            if depth == 0: return j
    return len(code) - 1

rows = []
for root in sys.argv[2:]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith('.rs') or f == 'tests.rs':
                continue
            path = os.path.join(dirpath, f)
            code = strip(open(path, encoding='utf-8').read())
            spans = test_spans(code)
            for m in FN.finditer(code):
                # The body opens at the first '{' after the signature; ';' first means no body.
                open_ = code.find('{', m.end())
                semi = code.find(';', m.end())
                if open_ < 0 or (0 <= semi < open_):
                    continue
                start = code.count('\n', 0, m.start())
                if any(a <= start <= b for a, b in spans):
                    continue
                lines = code.count('\n', m.start(), match(code, open_)) + 1
                if lines > limit:
                    rows.append((lines, f'{path}:{start + 1}', m.group(1)))
for lines, where, name in sorted(rows, reverse=True):
    print(f'{lines:5} {name:32} {where}')
print(f'{len(rows)} non-test functions over {limit} lines', file=sys.stderr)
sys.exit(1 if rows else 0)
PY
