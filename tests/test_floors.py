"""Imports only go down the floors of docs/architecture.md: a lower floor never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import lmforge

ROOT = Path(lmforge.__file__).parent
FLOOR = {
    "cli": 5,
    "__main__": 5,
    "commands": 4,
    "serve": 4,
    "run": 3,
    "recipe": 3,
    "recipe_seq2seq": 3,
    "evaluate_seq2seq": 3,
    "inference": 3,
    "inference_masked": 3,
    "inference_seq2seq": 3,
    "embeddings": 3,
    "estimate": 3,
    "interop": 3,
    "finetune": 3,
    "align": 3,
    "data": 2,
    "train": 2,
    "generate": 2,
    "parallel": 2,
    "models": 1,
    "tokenizers": 1,
    "hardware": 0,
    "kernels": 0,
    "resources": 0,
    "gpus": 0,
    "fonts": 0,
    "bounds": 0,
    "fileio": 0,
    "errors": 0,
}


def imported_parts(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, first part below lmforge) of every absolute lmforge import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmforge."):
            found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("lmforge.")
            ]
    return found


def test_every_module_has_a_floor_and_no_import_goes_up():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        me = rel.parts[0].removesuffix(".py")
        if me == "__init__":
            continue
        assert me in FLOOR, f"{rel}: give its package a floor in this test and in docs/architecture.md"
        for line, target in imported_parts(ast.parse(path.read_text(encoding="utf-8"))):
            if target in FLOOR and FLOOR[target] > FLOOR[me]:
                upward.append(f"{rel}:{line}: {me} imports {target}")
    assert upward == []
