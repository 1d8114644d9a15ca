"""Built-in corpora: text every Python installation already has, so a demo needs no download.

``builtin:stdlib-docs`` is the docstrings of the running Python's standard library, one document
per module, in the order of the module's path (``__future__``, ``_aix_support``, ..., ``zoneinfo._zoneinfo``)::

    json       ->  "JSON (JavaScript Object Notation) <https://json.org> is a subset of ...
                    \\n\\nSerialize ``obj`` as a JSON formatted stream to ``fp`` ..."

A module's document is its module docstring, then each class, method and function docstring in
source order (``ast.get_docstring``, so indentation is cleaned), joined by blank lines. One
document per module, not per docstring: the docstrings of a module talk about one subject, and
a per-docstring split would be mostly one-liners ("Return self.") with a separator after each.
Test packages, IDLE, turtledemo, site-packages, the generated ``encodings`` codecs and the
machine-specific ``_sysconfigdata`` are left out. On CPython 3.11.7 that is 1.66 MB of mostly
English prose in 476 modules (the figure depends on the Python version, which metadata records).

Parsing the whole standard library takes seconds, so the result is cached as JSON under
``$LMFORGE_CACHE`` (default ``~/.cache/lmforge``), one file per Python version, written
atomically; a cache that cannot be read or written is simply rebuilt or skipped.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import platform
import sysconfig
import warnings
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import DataError
from lmforge.fileio import atomic_write_json

# Bump when the extraction rules change, so old caches are not reused.
EXTRACTOR_VERSION = 1

# Directory names skipped anywhere under the standard library.
SKIPPED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "turtledemo",
        "site-packages",
        "dist-packages",
        "encodings",  # ~120 generated codec modules with the same boilerplate docstring
        "ensurepip",
        "pydoc_data",  # generated help topics, not docstrings
        "__pycache__",
        "__phello__",
        "lib-dynload",
    }
)


def python_version() -> str:
    """``CPython 3.11.7``: what a cached builtin corpus is keyed by and what metadata records."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def cache_dir() -> Path:
    """``$LMFORGE_CACHE``, else ``$XDG_CACHE_HOME/lmforge``, else ``~/.cache/lmforge``."""
    if os.environ.get("LMFORGE_CACHE"):
        return Path(os.environ["LMFORGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmforge"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _skipped(relative: Path) -> bool:
    parts = relative.parts
    if any(part in SKIPPED_DIRS or part.startswith("config-") for part in parts[:-1]):
        return True
    name = parts[-1]
    return name.startswith(("test_", "_sysconfigdata")) or name == "setup.py"


def _module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_docstrings(source: bytes) -> list[str]:
    """Every docstring of a module (module, classes, functions, methods) in source order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SyntaxWarning for old escape sequences
        tree = ast.parse(source)
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                found.append(doc.strip())
        for child in ast.iter_child_nodes(node):  # fields in source order
            visit(child)

    visit(tree)
    return found


def extract_stdlib_docs(root: Path | None = None) -> list[tuple[str, str]]:
    """(module name, its docstrings joined by blank lines) for every module with any, by path."""
    root = root or stdlib_root()
    paths = sorted(
        (p.relative_to(root) for p in root.rglob("*.py")),
        key=lambda rel: rel.as_posix(),
    )
    documents = []
    for relative in paths:
        if _skipped(relative):
            continue
        try:
            docstrings = module_docstrings((root / relative).read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue  # a file this Python cannot parse (e.g. a Python 2 fixture) has no docs for us
        if docstrings:
            documents.append((_module_name(relative), "\n\n".join(docstrings)))
    return documents


def _cached(name: str, build: Callable[[], list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """``build()``'s documents, from the cache when a matching file is there."""
    key = f"{name}-{python_version().replace(' ', '-')}-v{EXTRACTOR_VERSION}.json"
    path = cache_dir() / key
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("python") == python_version() and cached.get("extractor_version") == EXTRACTOR_VERSION:
            return [(module, text) for module, text in cached["documents"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged: rebuild
    documents = build()
    payload = {"python": python_version(), "extractor_version": EXTRACTOR_VERSION, "documents": documents}
    with contextlib.suppress(OSError):  # a read-only home directory costs time, not correctness
        atomic_write_json(path, payload)
    return documents


BUILTINS: dict[str, tuple[str, Callable[[], list[tuple[str, str]]]]] = {
    "stdlib-docs": (
        "the docstrings of the Python standard library, one document per module",
        extract_stdlib_docs,
    ),
}


# (name, builder, cache directory) -> documents: prepare reads a source twice and describes it
# once, and parsing the JSON cache each time would cost more than the bookkeeping it serves.
_IN_MEMORY: dict[tuple[str, Callable[[], list[tuple[str, str]]], Path], list[tuple[str, str]]] = {}


def builtin_documents(name: str) -> list[tuple[str, str]]:
    """(document name, text) pairs of the built-in corpus ``name`` (cached per Python version)."""
    if name not in BUILTINS:
        known = ", ".join(f"builtin:{key}" for key in BUILTINS)
        raise DataError(f"unknown built-in corpus 'builtin:{name}'; the built-in corpora are: {known}")
    key = (name, BUILTINS[name][1], cache_dir())
    if key not in _IN_MEMORY:
        _IN_MEMORY[key] = _cached(name, BUILTINS[name][1])
    return list(_IN_MEMORY[key])


def builtin_description(name: str) -> str:
    return f"{BUILTINS[name][0]} ({python_version()})"
