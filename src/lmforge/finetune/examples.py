"""Labelled examples for fine-tuning, from any source a user is likely to hold.

    builtin:stdlib-topics         the built-in task (data/stdlib_topics.py); "@val" picks its other split
    reviews.jsonl                 one JSON object per line: {"text": "...", "label": "pos"}
    reviews.csv                   a header row, then one example per row (Python's csv dialect)
    hf:glue:sst2@validation, x.parquet, x.arrow   rows through `datasets` (the lmforge[hf] extra)

A label may be a string or a number (``1`` and ``"1"`` are the same label: labels are names).
Errors name the file and the line (or row), because a 50,000-line file with one bad line is a
real file: a missing field, a line that is not JSON, an empty text.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import DataError

BUILTIN_TASKS = ("builtin:stdlib-topics",)


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    pair: str | None = None  # the second text of a sentence pair


@dataclass(frozen=True)
class Fields:
    text: str = "text"
    label: str = "label"
    pair: str | None = None


def is_builtin_task(source: str) -> bool:
    return source.split("@")[0] in BUILTIN_TASKS


def read_examples(source: str | Path, fields: Fields | None = None) -> list[Example]:
    """Every example of ``source``; one clear ``DataError`` for the first thing wrong in it."""
    text, fields = str(source), fields or Fields()
    if is_builtin_task(text):
        return _builtin(text)
    if text.startswith("hf:"):
        from lmforge.data.tables import load_hf

        return _from_rows(_dataset_rows(load_hf(text)), fields, text, unit="row")
    path = Path(source)
    if not path.is_file():
        raise DataError(
            f"{path} does not exist or is not a file; give a .jsonl or .csv file of labelled examples"
        )
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".arrow"):
        from lmforge.data.tables import load_table

        return _from_rows(_dataset_rows(load_table(path)), fields, str(path), unit="row")
    rows = _csv_rows(path) if suffix in (".csv", ".tsv") else _jsonl_rows(path)
    examples = _from_rows(rows, fields, str(path), unit="line")
    if not examples:
        raise DataError(f'{path} holds no examples; give one per line ({{"text": ..., "label": ...}})')
    return examples


def _builtin(source: str) -> list[Example]:
    from lmforge.data.stdlib_topics import stdlib_topics

    name, _, split = source.partition("@")
    split = split or "train"
    splits = stdlib_topics()
    if split not in splits:
        raise DataError(
            f"{source}: no split {split!r}; {name} has {' and '.join(f'{name}@{s}' for s in splits)}"
        )
    return [Example(row["text"], row["label"]) for row in splits[split]]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({error.reason}); save the file as UTF-8") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}:{number}: not a JSON object ({error.msg}); a .jsonl file holds one object per line"
            ) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, object]]:
    lines = _read_text(path).splitlines(keepends=True)
    reader = csv.DictReader(lines, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: not CSV ({error})") from None


def _dataset_rows(dataset) -> Iterator[tuple[int, object]]:
    yield from enumerate(dataset)


def _from_rows(rows: Iterator[tuple[int, object]], fields: Fields, where: str, unit: str) -> list[Example]:
    examples = []
    for number, row in rows:
        at = f"{where}:{number}" if unit == "line" else f"{where}: row {number}"
        if not isinstance(row, dict):
            raise DataError(
                f"{at}: expected an object with {fields.text!r} and {fields.label!r}, got {row!r:.60}"
            )
        text = _field(row, fields.text, at, "--text-field")
        pair = _field(row, fields.pair, at, "--text-pair-field") if fields.pair else None
        label = row.get(fields.label)
        if label is None or label == "":
            present = ", ".join(map(repr, row)) or "none"
            raise DataError(
                f"{at}: no {fields.label!r} label (fields: {present}); name the label's field with --label-field"
            )
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if not isinstance(label, (str, int, bool)):
            raise DataError(f"{at}: the label {label!r:.60} is not a name or a number")
        examples.append(Example(text, str(label), pair))
    return examples


def _field(row: dict, name: str, at: str, flag: str) -> str:
    value = row.get(name)
    if value is None:
        present = ", ".join(map(repr, row)) or "none"
        raise DataError(f"{at}: no {name!r} field (fields: {present}); name the text's field with {flag}")
    if not isinstance(value, str):
        raise DataError(f"{at}: the {name!r} field holds {type(value).__name__}, not text")
    return value
