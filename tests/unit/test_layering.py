"""The import rule of docs/style.md: a module imports only its own layer or lower ones."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "vmcorepack"

LAYERS = {
    "errors": 0,
    "constants": 0,
    "sysmem": 0,
    "formats": 1,
    "native": 1,
    "vmcoreinfo": 2,
    "sources": 2,
    "bitmap": 2,
    "codecs": 2,
    "_native": 1,  # the C extension behind native
    "kernel": 3,
    "filter": 3,
    "erase": 3,
    "userfilter": 3,
    "dmesg": 3,
    "writer": 4,
    "reader": 4,
    "refilter": 4,
    "pack": 5,  # the pack run; its modules import one another lowest first (pack/__init__.py)
    "pipeline": 6,  # the public names of pack, kept for callers
    "verify": 6,
    "fixtures": 6,
    "split": 6,
    "elfout": 6,
    "info": 6,
    "streams": 2,
    "procs": 2,
    "cli": 7,
    "mkfixture": 7,
    "launch": 8,
    "__main__": 9,
    "__init__": 0,
}
CLI_ONLY = {"argparse", "tqdm"}


def _layer(module: str) -> int:
    head = module.split(".")[0]
    assert head in LAYERS, f"module {module} has no layer in test_layering.LAYERS"
    return LAYERS[head]


def test_imports_respect_layers() -> None:
    problems = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        me = parts[0] if parts[0] != "__init__" else "__init__"
        if len(parts) > 1 and parts[-1] == "__init__":
            me = parts[0]
        mine = _layer(me)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "vmcorepack":
                    names = [a.name for a in node.names if a.name != "__version__"]
                elif node.module.startswith("vmcorepack."):
                    names = [node.module.removeprefix("vmcorepack.")]
                elif node.module.split(".")[0] in CLI_ONLY and mine < LAYERS["cli"]:
                    problems.append(f"{rel} imports {node.module}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("vmcorepack."):
                        names.append(a.name.removeprefix("vmcorepack."))
                    elif a.name.split(".")[0] in CLI_ONLY and mine < LAYERS["cli"]:
                        problems.append(f"{rel} imports {a.name}")
            for n in names:
                if _layer(n) > mine:
                    problems.append(f"{rel} (layer {mine}) imports {n} (layer {_layer(n)})")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
                and mine < LAYERS["cli"]
            ):
                problems.append(f"{rel} calls print")
    assert not problems, "\n".join(problems)


#: The modules of vmcorepack.pack, lowest first: each imports only earlier ones.
PACK_ORDER = ["options", "encoding", "bitmaps", "sequencer", "workers", "repair", "dump"]


def test_pack_modules_import_lower_ones_only() -> None:
    problems = []
    assert sorted(PACK_ORDER) == sorted(p.stem for p in (SRC / "pack").glob("*.py") if p.stem != "__init__")
    for me in PACK_ORDER:
        tree = ast.parse((SRC / "pack" / f"{me}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vmcorepack.pack."):
                other = node.module.removeprefix("vmcorepack.pack.")
                if PACK_ORDER.index(other) >= PACK_ORDER.index(me):
                    problems.append(f"pack/{me} imports pack/{other}")
    assert not problems, "\n".join(problems)
