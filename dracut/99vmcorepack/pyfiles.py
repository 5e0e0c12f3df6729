"""List the files python3 needs to run vmcorepack, one absolute path a line (dracut/99vmcorepack).

Run with the interpreter that will run vmcorepack in the initramfs (the venv's ``bin/python``).
The list is the interpreter and its venv files, every vmcorepack module reachable by an import
statement from ``vmcorepack.launch`` (the console script's entry point), and the file of every
module that importing those modules' third-party and standard-library imports loads, read from
``sys.modules``: the standard library's startup modules (encodings, site), numpy's own import
closure and its shared libraries' files (dracut resolves their ELF dependencies). Imports found by
reading the source, including those inside functions (codecs load zstandard, snappy or ctypes only
when asked), so a run with any option finds its module; modules that are not installed are left
out (vmcorepack's error names them). Optional modules that a kdump capture never uses can be left
out with ``--omit`` (default: tqdm, the progress bar; matplotlib; python-lzo, which the C
extension replaces).

    python3 pyfiles.py [--omit tqdm,matplotlib,lzo] [--entry vmcorepack.launch]
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path

#: Modules left out by default (see the module docstring).
OMIT = "tqdm,matplotlib,lzo,zstandard,lz4,snappy,cramjam"


def _imports(path: Path, package: str) -> set[str]:
    """Every module name an import statement in ``path`` names (``from a import b``: ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    names.discard("__future__")
    return names


def closure(entry: str, omit: set[str]) -> tuple[set[str], set[str]]:
    """(vmcorepack modules reachable from ``entry``, other modules they name)."""
    own: set[str] = set()
    other: set[str] = set()
    todo = [entry, "vmcorepack"]
    top = entry.partition(".")[0]
    while todo:
        name = todo.pop()
        if name in own:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or spec.origin in ("built-in", "frozen"):
            continue
        own.add(name)
        if not spec.origin.endswith(".py"):
            continue
        package = name if spec.submodule_search_locations else name.rpartition(".")[0]
        for imp in _imports(Path(spec.origin), package):
            if imp.partition(".")[0] == top:
                try:
                    found = importlib.util.find_spec(imp) is not None
                except ModuleNotFoundError:
                    found = False
                if found:
                    todo.append(imp)
            elif imp.partition(".")[0] not in omit:
                other.add(imp)
    return own, other


def files(entry: str, omit: set[str]) -> list[str]:
    """The paths to put into the initramfs."""
    own, other = closure(entry, omit)
    for name in sorted(own | other):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # optional (an attribute named by "from a import b", or a codec module not installed)
    out: set[str] = set()
    main = sys.modules["__main__"]  # this script (multiprocessing also names it __mp_main__)
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None) if mod is not main else None
        if f:
            out.add(os.path.abspath(f))
    exe = Path(sys.executable)
    out.add(str(exe))
    # The venv's python symlinks (bin/python -> python3 -> /usr/bin/python3) and its pyvenv.cfg,
    # which is what makes site add the venv's site-packages.
    while exe.is_symlink():
        exe = exe.parent / os.readlink(exe)
        out.add(str(exe))
    out.add(os.path.realpath(sys.executable))
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if cfg.exists():
        out.add(str(cfg))
    script = Path(sys.prefix) / "bin" / "vmcorepack"
    if script.exists():
        out.add(str(script))
    return sorted(out)


def main() -> int:
    """Print the list."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entry", default="vmcorepack.launch", help="entry module (default vmcorepack.launch)")
    p.add_argument("--omit", default=OMIT, help="top-level modules to leave out (comma list)")
    a = p.parse_args()
    for path in files(a.entry, {m for m in a.omit.split(",") if m}):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
