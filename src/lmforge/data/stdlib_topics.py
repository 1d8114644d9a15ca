"""``builtin:stdlib-topics``: a labelled task every Python installation already has.

Each example is one paragraph of a standard-library docstring, labelled with the top-level
package it comes from (``asyncio``, ``email``, ``http``, ...), so a classifier must tell apart
what the paragraphs talk about: event loops and futures, MIME parts and headers, requests and
cookies. It is built from ``builtin:stdlib-docs`` (data/builtin.py, cached per Python version)::

    {"text": "Return a Future object that resolves when ...", "label": "asyncio", "module": "asyncio.tasks"}

The split is by module, never by paragraph: every module of a package goes wholly to train or
wholly to validation (modules sorted by name, every fourth from the second on to validation), so
a model cannot score by recognising a module's phrasing in both splits. A paragraph needs at
least eight words (one-liners like "Return self." say nothing of their topic), and no package
gives more than ``PER_LABEL`` paragraphs to a split, spread evenly over its modules' order, so
the classes are balanced enough for accuracy to mean something.

Not every Python ships every package's sources: Debian's and Ubuntu's leave ``tkinter`` to the
``python3-tk`` package. A package with fewer than ``MIN_PER_SPLIT`` paragraphs in either split is
left out (``labels()`` says which are in), so no label is one a split never shows.
"""

from __future__ import annotations

import functools
from collections import defaultdict

from lmforge.data.batching import evenly_spread
from lmforge.data.builtin import builtin_documents

PACKAGES = ("asyncio", "email", "http", "importlib", "multiprocessing", "tkinter", "unittest", "xml")
PER_LABEL = {"train": 240, "val": 60}
MIN_WORDS = 8
MIN_PER_SPLIT = 10


def paragraphs(text: str) -> list[str]:
    """The docstring paragraphs of a module's document that say something (prose, not doctests)."""
    found = []
    for paragraph in text.split("\n\n"):
        paragraph = paragraph.strip()
        if len(paragraph.split()) >= MIN_WORDS and not paragraph.startswith(">>>"):
            found.append(paragraph)
    return found


@functools.cache  # a second read in one process (train, then val; a benchmark's many runs) is free
def stdlib_topics() -> dict[str, list[dict[str, str]]]:
    """{"train": [...], "val": [...]}: examples with "text", "label" and "module". Shared between
    callers (cached): read it, do not change it."""
    by_package: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for module, text in builtin_documents("stdlib-docs"):
        package = module.split(".")[0]
        if package in PACKAGES:
            by_package[package].append((module, text))
    splits: dict[str, list[dict[str, str]]] = {"train": [], "val": []}
    for package in PACKAGES:
        chosen: dict[str, list[dict[str, str]]] = {"train": [], "val": []}
        for index, (module, text) in enumerate(sorted(by_package[package])):
            split = "val" if index % 4 == 1 else "train"
            chosen[split] += [{"text": p, "label": package, "module": module} for p in paragraphs(text)]
        if min(len(examples) for examples in chosen.values()) < MIN_PER_SPLIT:
            continue  # its sources are missing from this Python (module docstring)
        for split, examples in chosen.items():
            splits[split] += evenly_spread(examples, PER_LABEL[split])
    return splits


def labels() -> list[str]:
    """The packages this Python's sources give a label: ``PACKAGES``, less any left out."""
    present = {row["label"] for row in stdlib_topics()["train"]}
    return [package for package in PACKAGES if package in present]
