#!/usr/bin/env python3
"""Compares one fixture's builder build with its BuildKit build (see compat-buildkit.sh).

Prints the differences and exits 1 if there are any. Trees: names, types, modes, uid/gid,
contents, link targets, xattrs, and mtimes unless both sides' are from the build itself.
Configs: the fields `docker inspect` shows, history texts and empty-layer flags.
"""
import hashlib
import json
import sys
import tarfile

CONFIG_KEYS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
               "Labels", "Healthcheck", "StopSignal", "Shell", "OnBuild", "ArgsEscaped"]
# mtimes from 2021 on are the build's own (the script sets context files to 2020-01-01).
BUILD_TIMES = 1609459200
KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
         tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
         tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


def tree(path):
    out = {}
    with tarfile.open(path) as tar:
        for m in tar:
            name = m.name.lstrip("./").rstrip("/") or "."
            entry = {"kind": KINDS.get(m.type, m.type), "mode": oct(m.mode), "uid": m.uid,
                     "gid": m.gid, "mtime": int(m.mtime),
                     "xattrs": {k: v for k, v in m.pax_headers.items() if "xattr" in k}}
            if m.issym() or m.islnk():
                entry["link"] = m.linkname.lstrip("./") if m.islnk() else m.linkname
            if m.isfile():
                data = tar.extractfile(m).read()
                entry["size"] = len(data)
                entry["sha"] = hashlib.sha256(data).hexdigest()[:16]
            out[name] = entry
    return out


def image_config(path):
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return json.load(tar.extractfile(manifest[0]["Config"]))


def compare_trees(bk, ours, diffs):
    for name in sorted(set(bk) | set(ours)):
        a, b = bk.get(name), ours.get(name)
        if a is None or b is None:
            diffs.append(f"tree {name}: only in {'builder' if a is None else 'buildkit'}"
                         f" ({(a or b)['kind']})")
            continue
        if a["mtime"] >= BUILD_TIMES and b["mtime"] >= BUILD_TIMES:
            a, b = dict(a, mtime=0), dict(b, mtime=0)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"tree {name}: {key} buildkit={a.get(key)!r} builder={b.get(key)!r}")


def history(config):
    """(created_by, empty_layer) pairs, less the base image's import entry (docker import
    writes none, builder import its own)."""
    entries = [(h.get("created_by"), bool(h.get("empty_layer"))) for h in config.get("history", [])]
    return [e for e in entries if e[0] is not None and e[0] != "builder import"]


def compare_configs(bk, ours, diffs):
    a, b = bk.get("config", {}), ours.get("config", {})
    for key in CONFIG_KEYS:
        if (a.get(key) or None) != (b.get(key) or None):
            diffs.append(f"config {key}: buildkit={a.get(key)!r} builder={b.get(key)!r}")
    for key in ["author", "os", "architecture", "variant"]:
        if bk.get(key) != ours.get(key):
            diffs.append(f"image {key}: buildkit={bk.get(key)!r} builder={ours.get(key)!r}")
    ha, hb = history(bk), history(ours)
    if ha != hb:
        diffs.append("history:\n  buildkit=" + "\n           ".join(map(repr, ha))
                     + "\n  builder= " + "\n           ".join(map(repr, hb)))


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def last_error(log):
    """builder's `error: ...` line (a source excerpt follows it), else the log's last line."""
    lines = [l for l in log.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    return (errors or lines or [""])[-1]


def main():
    name, d = sys.argv[1], sys.argv[2]
    rc_bk, rc_ours = read(f"{d}/bk.rc").strip(), read(f"{d}/b.rc").strip()
    diffs = []
    if (rc_bk == "0") != (rc_ours == "0"):
        diffs.append(f"exit: buildkit={rc_bk} builder={rc_ours}")
    if rc_bk != "0" or rc_ours != "0":
        diffs.append(f"error buildkit: {last_error(read(f'{d}/bk.log'))}")
        diffs.append(f"error builder:  {last_error(read(f'{d}/b.log'))}")
        if rc_bk != "0" and rc_ours != "0":
            print(f"{name}: both fail (compare the messages)\n  " + "\n  ".join(diffs))
            return 0
    else:
        compare_trees(tree(f"{d}/bk.tar"), tree(f"{d}/b.tar"), diffs)
        compare_configs(image_config(f"{d}/bk-image.tar"), image_config(f"{d}/b-image.tar"),
                        diffs)
    if diffs:
        print(f"{name}: DIFFERENT\n  " + "\n  ".join(diffs))
        return 1
    print(f"{name}: same")
    return 0


if __name__ == "__main__":
    sys.exit(main())
