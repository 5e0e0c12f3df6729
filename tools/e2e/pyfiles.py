"""The files a Python program needs, found by running it: for a RAM copy in an initramfs.

A kdump initramfs holds what the capture kernel runs in RAM. For vmcorepack that is the
interpreter, the shared objects it maps (libpython, libc, numpy's bundled OpenBLAS,
vmcorepack's C extension, the codec libraries it dlopen()s), and only the modules it imports,
byte-compiled. This module finds them by tracing real runs (``sys.modules`` and
``/proc/self/maps`` just before the process exits) rather than from a list kept by hand, so a
new import is picked up by the next build:

    python tools/e2e/pyfiles.py [--python PY] OUT.json -- CMD [ARGS...] [-- CMD ...]

``trace()`` runs each command (a Python script or console script, with its arguments) under a
small wrapper; ``plan()`` turns the traces into (source, destination, kind) entries; and
``add_to_cpio()`` adds them to a tools/e2e/mkinitramfs.py ``Cpio`` under a root directory,
with each ``.py`` compiled to a sourceless ``.pyc`` at the same path. Paths stay as they are
on the host, so the same command line runs chrooted into that root. A module imported only on
a path no traced run took (an error path, another codec) is missing from the copy: trace the
runs that matter.
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Runs the traced command in-process (runpy), then writes what it loaded; os._exit is wrapped
#: because vmcorepack.launch ends with it (it skips atexit handlers).
_WRAPPER = r"""
import json, os, runpy, sys
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
real_exit = os._exit

def dump():
    mods = {}
    for name, m in list(sys.modules.items()):
        f = getattr(m, "__file__", None)
        if f:
            mods[name] = f
    maps = set()
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                maps.add(parts[5].strip())
    with open(out, "w") as fh:
        json.dump({"modules": mods, "maps": sorted(maps), "executable": sys.executable,
                   "prefix": sys.prefix, "base_prefix": sys.base_prefix, "path": sys.path}, fh)

def wrapped_exit(status):
    dump()
    real_exit(status)

os._exit = wrapped_exit
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
dump()
"""


def trace(python: str, argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python argv[0] argv[1:]`` and return what it loaded.

    Args:
        python: The interpreter (as the capture kernel will run it).
        argv: A script or console-script path and its arguments.
        env: Environment (default: this one).

    Returns:
        ``{"modules": {name: file}, "maps": [mapped files], "executable", "prefix", "base_prefix"}``.
    """
    with tempfile.TemporaryDirectory(prefix="pyfiles-") as tmp:
        out = Path(tmp) / "trace.json"
        wrapper = Path(tmp) / "wrapper.py"
        wrapper.write_text(_WRAPPER)
        r = subprocess.run([python, str(wrapper), str(out), *argv], env=env, capture_output=True, text=True)
        if not out.exists():
            raise RuntimeError(f"pyfiles: tracing {argv} wrote nothing (exit {r.returncode}): {r.stderr.strip()}")
        data: dict[str, Any] = json.loads(out.read_text())
    data["argv"] = argv
    return data


def _resolve(path: str) -> tuple[list[str], str]:
    """The symbolic links met on the way to ``path`` (directories too: /lib64, /lib) and its real path."""
    links: list[str] = []
    queue = list(Path(path).parts[1:])
    cur = "/"
    for _ in range(200):
        if not queue:
            break
        nxt = os.path.join(cur, queue.pop(0))
        if os.path.islink(nxt):
            links.append(nxt)
            target = os.readlink(nxt)
            new = os.path.normpath(os.path.join(cur, target))  # absolute targets replace cur
            queue = list(Path(new).parts[1:]) + queue
            cur = "/"
        else:
            cur = nxt
    return links, cur


def _links_to(paths: list[str]) -> list[str]:
    """The symbolic links in each file's directory that resolve to that file."""
    want = {os.path.realpath(p) for p in paths}
    out: list[str] = []
    for d in {os.path.dirname(p) for p in paths}:
        out.extend(e.path for e in os.scandir(d) if e.is_symlink() and os.path.realpath(e.path) in want)
    return out


def plan(traces: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(path, kind) entries for the traced runs: kind is ``py`` (compile), ``file`` or ``symlink``.

    Args:
        traces: Results of :func:`trace`.
        extra: More files to copy as they are (scripts, configuration, the ELF interpreter).

    Returns:
        Sorted, unique entries; every symbolic link on the way to a file (a merged-/usr
        ``/lib64``, a venv's ``bin/python``) is an entry of its own.
    """
    files: set[str] = set(extra)
    for t in traces:
        files.update(t["modules"].values())
        mapped = [m for m in t["maps"] if os.path.isfile(m)]
        files.update(mapped)
        # /proc/self/maps names real files; the dynamic linker and dlopen() open sonames
        # (libexpat.so.1, liblzo2.so.2), the links next to them.
        files.update(_links_to(mapped))
        files.add(t["executable"])
        if t["prefix"] != t["base_prefix"]:  # a venv: its marker file
            files.add(os.path.join(t["prefix"], "pyvenv.cfg"))
        for d in t["path"]:
            if d.endswith("-packages"):  # site runs every .pth file there
                files.update(str(p) for p in Path(d).glob("*.pth"))
    files.add("/etc/ld.so.cache")
    entries: dict[str, str] = {}
    for f in sorted(files):
        if not os.path.exists(f):
            continue
        if f.endswith(".py") and f not in extra:
            # Byte-code goes where the module was found: a link to a .py (Debian's
            # sitecustomize.py) becomes a .pyc of its own, not a link to a missing .py.
            links, real_dir = _resolve(os.path.dirname(f))
            links, real = links, os.path.join(real_dir, os.path.basename(f))
        else:
            links, real = _resolve(f)
        for link in links:
            entries[link] = "symlink"
        # Extra files are run by path (a script given to python3): they stay as they are.
        entries[real] = "py" if real.endswith(".py") and f not in extra else "file"
    return sorted(entries.items())


def ldd_files(binary: str) -> list[str]:
    """``binary`` and the shared objects ``ldd`` says it loads (for a native tool in the same root)."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True)
    out = [binary]
    for line in r.stdout.splitlines():
        words = line.replace("=>", " ").split()
        out.extend(w for w in words if w.startswith("/"))
    return out


def pyc_path(path: str) -> str:
    """Where the sourceless byte-code of ``path`` goes (``x.py`` -> ``x.pyc``)."""
    return path[:-3] + ".pyc"


def add_to_cpio(cpio: Any, root: str, entries: list[tuple[str, str]]) -> int:
    """Add ``entries`` to ``cpio`` (tools/e2e/mkinitramfs.py ``Cpio``) under directory ``root``.

    Args:
        cpio: The archive.
        root: Directory of the archive the tree goes under (no leading slash).
        entries: From :func:`plan`.

    Returns:
        Bytes of file data added.
    """
    dirs: set[str] = set()
    total = 0

    def ensure_dir(d: str) -> None:
        if d in ("", "/") or d in dirs:
            return
        ensure_dir(os.path.dirname(d))
        dirs.add(d)
        cpio.dir(f"{root}{d}")

    with tempfile.TemporaryDirectory(prefix="pyfiles-") as tmp:
        for path, kind in entries:
            ensure_dir(os.path.dirname(path))
            if kind == "symlink":
                cpio.symlink(f"{root}{path}", os.readlink(path))
                continue
            if kind == "py":
                cfile = os.path.join(tmp, "x.pyc")
                # (path itself may be a link: compile what it points to, store it here)
                py_compile.compile(path, cfile=cfile, dfile=path, doraise=True)
                data = Path(cfile).read_bytes()
                name = pyc_path(path)
            else:
                data = Path(path).read_bytes()
                name = path
            mode = os.stat(path).st_mode & 0o777
            cpio.file(f"{root}{name}", data, mode)
            total += len(data)
    return total


def main(argv: list[str] | None = None) -> int:
    """Command line: trace commands and write the plan as JSON."""
    args = sys.argv[1:] if argv is None else argv
    head, _, rest = " ".join(args).partition(" -- ")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", default=sys.executable)
    p.add_argument("out", type=Path)
    a = p.parse_args(head.split())
    traces = [trace(a.python, cmd.split()) for cmd in rest.split(" -- ") if cmd.strip()]
    a.out.write_text(json.dumps(plan(traces), indent=0) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
