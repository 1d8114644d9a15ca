"""Where source/target pairs come from: a JSON Lines file, a TSV file, two parallel text files, or
a built-in task (``seq2seq_tasks.py``).

    read_pairs(resolve_pairs(["en-fr.jsonl"]))            {"source": "Go.", "target": "Va !"}  per line
    read_pairs(resolve_pairs(["en-fr.jsonl"], source_field="en", target_field="fr"))
    read_pairs(resolve_pairs(["en-fr.tsv"]))              Go.<TAB>Va !                          per line
    read_pairs(resolve_pairs(["train.en", "train.fr"]))   line i of one file with line i of the other
    read_pairs(resolve_pairs(["builtin:reverse?length=8-16"]))

TSV: exactly two tab-separated columns, source then target, no header and no quoting (a ``"`` is
an ordinary character, as in the sentence-pair files people share); a tab, newline or backslash
inside a field is written ``\\t``, ``\\n``, ``\\\\`` (the "linear TSV" escapes; ``\\r`` too), and a
backslash before anything else stays as it is. Blank lines of a .jsonl or .tsv file are skipped;
in parallel files a blank line is an empty side, since it pairs with the other file's line.

Every pair needs a non-empty source and target (whitespace only counts as empty): a model cannot
learn to map nothing, and an empty target would train only the end token. Bad input stops at
the first problem with one line naming the file and line: an empty side, a missing field (and
the fields the line has), parallel files of unequal length, bytes that are not UTF-8 (unless
``errors="replace"``), a file with no pairs at all. Text is kept as written, only the line end
removed. Pairs are held in memory: seq2seq corpora are sentence pairs, millions at most.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmforge.data.corpora import BUILTIN_PREFIX, Errors, _decode, _file_sha256
from lmforge.errors import DataError, UserInputError

PairKind = Literal["jsonl", "tsv", "parallel", "builtin"]
DEFAULT_SOURCE_FIELD, DEFAULT_TARGET_FIELD = "source", "target"
_ESCAPE = re.compile(r"\\([\\tnr])")
_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_FORMS = (
    "pairs come from one .jsonl file, one .tsv file, two parallel text files (--data SOURCES TARGETS) "
    "or a built-in task (builtin:stdlib-signatures, builtin:copy, builtin:reverse, builtin:sort)"
)


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    origin: str  # "path:line" or the builtin spec: where to look when it goes wrong
    group: str | None = None  # pairs of one group go to the same split; None: each pair alone


@dataclass(frozen=True)
class PairSource:
    """The ``--data`` values of a seq2seq dataset, resolved to one kind and its files."""

    specs: tuple[str, ...]
    kind: PairKind
    files: tuple[Path, ...] = ()


def resolve_pairs(
    specs: Sequence[str] | str,
    source_field: str = DEFAULT_SOURCE_FIELD,
    target_field: str = DEFAULT_TARGET_FIELD,
) -> PairSource:
    """Classify the sources; a missing file or a combination that holds no pairs is a ``DataError``."""
    from lmforge.data import seq2seq_tasks

    specs = (str(specs),) if isinstance(specs, (str, Path)) else tuple(str(spec) for spec in specs)
    if not specs:
        raise UserInputError(f"no data given; {_FORMS}")
    if len(specs) > 2:
        raise DataError(f"{len(specs)} sources given; {_FORMS}")
    if len(specs) == 1 and specs[0].startswith(BUILTIN_PREFIX):
        spec = specs[0]
        if seq2seq_tasks.is_task(spec):
            seq2seq_tasks.parse_task(spec)  # bad options fail now
            source = PairSource(specs, "builtin")
        else:
            from lmforge.data.builtin import BUILTINS

            what = (
                "is a language-model corpus (plain text, no pairs)"
                if spec.removeprefix(BUILTIN_PREFIX) in BUILTINS
                else "is unknown"
            )
            raise DataError(
                f"{spec} {what}; the built-in seq2seq tasks are: {seq2seq_tasks._known()} "
                "(synthetic ones take options, e.g. 'builtin:reverse?length=8-16,size=5000')"
            )
    else:
        paths = tuple(Path(spec).expanduser() for spec in specs)
        for path in paths:
            if not path.exists():
                raise DataError(f"{path}: no such file; {_FORMS}")
            if path.is_dir():
                raise DataError(f"{path} is a directory; {_FORMS}")
        suffixes = [path.suffix.lower() for path in paths]
        if len(paths) == 1 and suffixes[0] in (".jsonl", ".tsv"):
            source = PairSource(specs, "jsonl" if suffixes[0] == ".jsonl" else "tsv", paths)
        elif len(paths) == 1:
            raise DataError(f"{paths[0]} is one text file, which holds no pairs; {_FORMS}")
        elif any(suffix in (".jsonl", ".tsv") for suffix in suffixes):
            raise DataError(
                f"two sources given ({', '.join(specs)}): parallel files are plain text, one sentence per "
                "line; a .jsonl or .tsv file holds both sides on its own, give it alone"
            )
        else:
            source = PairSource(specs, "parallel", paths)
    changed = [
        flag
        for flag, value, default in (
            ("--source-field", source_field, DEFAULT_SOURCE_FIELD),
            ("--target-field", target_field, DEFAULT_TARGET_FIELD),
        )
        if value != default
    ]
    if changed and source.kind != "jsonl":
        raise UserInputError(
            f"{' and '.join(changed)} name fields of a .jsonl file; {', '.join(specs)} is {source.kind} data"
        )
    return source


def _lines(path: Path, errors: Errors) -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) of a file; a byte-order mark is not text."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, errors, offset, number)
            offset += len(raw)
            if number == 1:
                line = line.removeprefix("\ufeff")
            yield number, line.removesuffix("\n").removesuffix("\r")


def _checked(source: str, target: str, where: str, names: tuple[str, str]) -> Pair:
    for side, text, name in (("source", source, names[0]), ("target", target, names[1])):
        if not text.strip():
            raise DataError(
                f"{where}: the {side}{name} is empty; every pair needs a non-empty source and target "
                "(fix or drop that line)"
            )
    return Pair(source, target, where)


def _jsonl_pairs(path: Path, source_field: str, target_field: str, errors: Errors) -> Iterator[Pair]:
    names = (f" ({source_field!r})", f" ({target_field!r})")
    for number, line in _lines(path, errors):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        example = f'{{"{source_field}": "...", "{target_field}": "..."}}'
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{where}: not valid JSON ({error.msg} at column {error.colno}); each line must be one "
                f"JSON object such as {example}"
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: a JSON {type(record).__name__}, not an object such as {example}")
        values = []
        for flag, field in (("--source-field", source_field), ("--target-field", target_field)):
            if field not in record:
                fields = ", ".join(repr(key) for key in record) or "none"
                raise DataError(f"{where}: no {field!r} field (fields: {fields}); name the field with {flag}")
            if not isinstance(record[field], str):
                raise DataError(
                    f"{where}: the {field!r} field is a JSON {type(record[field]).__name__}, not a string"
                )
            values.append(record[field])
        yield _checked(values[0], values[1], where, names)


def unescape_tsv(field: str) -> str:
    r"""``a\tb\\n`` -> ``a<TAB>b\n``: the linear-TSV escapes; any other backslash stays."""
    return _ESCAPE.sub(lambda match: _UNESCAPED[match.group(1)], field)


def _tsv_pairs(path: Path, errors: Errors) -> Iterator[Pair]:
    for number, line in _lines(path, errors):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{number}: {len(fields)} tab-separated field{'s' if len(fields) != 1 else ''}; a .tsv "
                "pair file has exactly two, source<TAB>target (write a tab inside a field as \\t)"
            )
        yield _checked(unescape_tsv(fields[0]), unescape_tsv(fields[1]), f"{path}:{number}", ("", ""))


def _parallel_pairs(sources: Path, targets: Path, errors: Errors) -> Iterator[Pair]:
    source_lines, target_lines = list(_lines(sources, errors)), list(_lines(targets, errors))
    if len(source_lines) != len(target_lines):
        raise DataError(
            f"{sources} has {len(source_lines):,} lines but {targets} has {len(target_lines):,}; parallel "
            "files pair line i of one with line i of the other, so they need the same number of lines"
        )
    for (number, source), (_, target) in zip(source_lines, target_lines):
        for side, path, text in (("source", sources, source), ("target", targets, target)):
            if not text.strip():
                raise DataError(
                    f"{path}:{number}: the {side} is an empty line; every pair needs a non-empty source and "
                    f"target (fix or drop line {number} in both files)"
                )
        yield Pair(source, target, f"{sources}:{number}")


def read_pairs(
    source: PairSource,
    source_field: str = DEFAULT_SOURCE_FIELD,
    target_field: str = DEFAULT_TARGET_FIELD,
    errors: Errors = "strict",
) -> list[Pair]:
    """Every pair of ``source`` in order; none at all is a ``DataError``."""
    if source.kind == "builtin":
        from lmforge.data.seq2seq_tasks import task_pairs

        spec = source.specs[0]
        pairs = [Pair(p.source, p.target, spec, p.group) for p in task_pairs(spec)]
    elif source.kind == "jsonl":
        pairs = list(_jsonl_pairs(source.files[0], source_field, target_field, errors))
    elif source.kind == "tsv":
        pairs = list(_tsv_pairs(source.files[0], errors))
    else:
        pairs = list(_parallel_pairs(source.files[0], source.files[1], errors))
    if not pairs:
        what = "are empty" if source.kind == "parallel" else "is empty or only blank lines"
        raise DataError(f"{' and '.join(source.specs)} {what}: no pairs to prepare")
    return pairs


def describe_pairs(source: PairSource, pairs: Sequence[Pair], source_field: str, target_field: str) -> dict:
    """What metadata records about the pairs' origin: spec(s), kind, description, bytes, sha256.

    sha256 is that of the file (``sha256sum FILE``), for parallel files that of their
    ``sha256sum`` listing (``HASH  NAME\\n`` each), and for a built-in task that of the pairs'
    UTF-8 text, each side followed by a NUL byte.
    """
    from lmforge.data.seq2seq_tasks import describe_task

    entry: dict = {"spec": " ".join(source.specs), "kind": source.kind, "pairs": len(pairs)}
    if source.kind == "builtin":
        digest, size = hashlib.sha256(), 0
        for pair in pairs:
            for text in (pair.source, pair.target):
                data = text.encode("utf-8")
                digest.update(data + b"\0")
                size += len(data)
        return {
            **entry,
            "description": describe_task(source.specs[0]),
            "bytes": size,
            "sha256": digest.hexdigest(),
        }
    hashes = [_file_sha256(path) for path in source.files]
    if len(hashes) == 1:
        sha256 = hashes[0][0]
    else:
        listing = "".join(f"{digest}  {path.as_posix()}\n" for (digest, _), path in zip(hashes, source.files))
        sha256 = hashlib.sha256(listing.encode("utf-8")).hexdigest()
    description = {
        "jsonl": f"JSON Lines, one pair per line (fields {source_field!r} -> {target_field!r})",
        "tsv": "TSV, one pair per line (source<TAB>target)",
        "parallel": "two parallel text files, one pair per line (source file, target file)",
    }[source.kind]
    return {**entry, "description": description, "bytes": sum(size for _, size in hashes), "sha256": sha256}
