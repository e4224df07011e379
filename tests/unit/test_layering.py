"""STYLE.md's layering rules, enforced by reading the source with ``ast`` (nothing is imported).

1. Pure layers (protocol codecs, DSP, config, brain, routing) import no trio, asyncio, socket,
   time or threading, directly or through another module of this repository (package
   ``__init__`` files included: importing a submodule runs them). Imports under
   ``if TYPE_CHECKING:`` do not run and are not counted.
2. ``media_sidecar`` never imports ``fastagi_server``: shared contracts live in
   ``media_sidecar`` and the control plane imports them, one direction only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("media_sidecar", "fastagi_server")
FORBIDDEN_IN_PURE = frozenset({"trio", "asyncio", "socket", "time", "threading"})
PURE_LAYERS = (
    "media_sidecar/protocol",
    "media_sidecar/dsp",
    "media_sidecar/config",
    "media_sidecar/brain",
    "fastagi_server/agi/protocol.py",
    "fastagi_server/ami/codec.py",
    "fastagi_server/routing.py",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path | None:
    """The repository file for a dotted module name, or None (stdlib, third party, missing)."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` (their ``else`` still runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) for every import that runs, relative ones resolved.

    ``from a.b import c`` yields both ``a.b`` and ``a.b.c`` (c may be a submodule)."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: list[tuple[int, str]] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_chains(start: Path) -> Iterator[tuple[list[str], int, str]]:
    """Walk the repository-internal import graph from ``start``; yield (chain, line, import)
    for every import that is not a repository module (stdlib and third party)."""
    seen: set[Path] = set()
    todo: list[tuple[Path, list[str]]] = [(start, [module_name(start)])]
    for name in _with_parents(module_name(start))[:-1]:
        parent = module_path(name)
        if parent is not None:
            todo.append((parent, [module_name(start), f"(package) {name}"]))
    while todo:
        path, chain = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for line, name in imports(path):
            top = name.split(".")[0]
            if top not in PACKAGES:
                yield chain, line, name
                continue
            for part in _with_parents(name):
                target = module_path(part)
                if target is not None and target not in seen:
                    todo.append((target, [*chain, part]))


def pure_files() -> list[Path]:
    files: list[Path] = []
    for entry in PURE_LAYERS:
        path = ROOT / entry
        if path.is_dir():
            files += sorted(path.rglob("*.py"))
        elif path.is_file():
            files.append(path)
        # A layer that does not exist yet has nothing to check.
    return files


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", pure_files(), ids=_ids(pure_files()))
def test_pure_layers_import_no_io_or_concurrency(path: Path) -> None:
    problems = sorted(
        {
            f"{' -> '.join(chain)} line {line}: import {name}"
            for chain, line, name in import_chains(path)
            if name.split(".")[0] in FORBIDDEN_IN_PURE
        }
    )
    assert not problems, "a pure layer imports I/O or concurrency:\n" + "\n".join(problems)


def sidecar_files() -> list[Path]:
    return sorted((ROOT / "media_sidecar").rglob("*.py"))


@pytest.mark.parametrize("path", sidecar_files(), ids=_ids(sidecar_files()))
def test_media_sidecar_never_imports_fastagi_server(path: Path) -> None:
    bad = [
        f"line {line}: import {name}"
        for line, name in imports(path)
        if name.split(".")[0] == "fastagi_server"
    ]
    assert not bad, f"{path.relative_to(ROOT)} imports the control plane: {bad}"


# -- the checker itself ---------------------------------------------------------------------------


def test_the_pure_layer_list_finds_files() -> None:
    names = _ids(pure_files())
    assert "fastagi_server/routing.py" in names
    assert "media_sidecar/config/loader.py" in names
    assert "media_sidecar/protocol/audiosocket.py" in names


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def test_checker_sees_every_import_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    _write(tmp_path, "media_sidecar/__init__.py", "")
    _write(tmp_path, "media_sidecar/dsp/__init__.py", "")
    _write(tmp_path, "media_sidecar/dsp/helper.py", "def f():\n    import time\n")
    _write(tmp_path, "media_sidecar/protocol/__init__.py", "")
    mod = _write(
        tmp_path,
        "media_sidecar/protocol/codec.py",
        "from typing import TYPE_CHECKING\n"
        "import socket as s, json\n"
        "from trio.lowlevel import checkpoint\n"
        "from ..dsp import helper\n"
        "from fastagi_server import routing\n"
        "if TYPE_CHECKING:\n"
        "    import asyncio\n"
        "else:\n"
        "    import threading\n",
    )
    names = {name for _, name in imports(mod)}
    assert {"socket", "json", "trio.lowlevel", "media_sidecar.dsp.helper", "threading"} <= names
    assert "fastagi_server" in names
    assert "asyncio" not in names  # under TYPE_CHECKING only
    reached = {(chain[-1], name) for chain, _, name in import_chains(mod)}
    assert ("media_sidecar.dsp.helper", "time") in reached  # found through the chain
