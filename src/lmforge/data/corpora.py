"""Where text comes from: files, directories, globs, JSON Lines, tables, downloads and built-in corpora.

    iter_texts(["input.txt"])                       -> 1 document: the whole file (tiny Shakespeare)
    iter_texts(["notes/"])                          -> 1 document per .txt/.md file, recursively, by path
    iter_texts(["books/*.txt"])                     -> 1 document per matching file, by path (** recurses)
    iter_texts(["chat.jsonl"], text_field="body")   -> 1 document per line: that line's "body" field
    iter_texts(["builtin:stdlib-docs"])             -> 1 document per standard-library module
    iter_texts(["tinyshakespeare"])                 -> a named corpus (catalog.py), downloaded once
    iter_texts(["https://host/corpus.txt"])         -> downloaded once into the cache, then as a file
    iter_texts(["hf:wikitext:wikitext-2-raw-v1"])   -> 1 document per row (tables.py; also .parquet,
                                                       .csv and .arrow files)

A local path wins over a corpus name, so a file called ``tinyshakespeare`` is read, not downloaded.

Text must be UTF-8 (a leading byte-order mark is dropped). Bytes that are not stop with the file,
byte offset and line, unless ``errors="replace"`` turns them into U+FFFD. Documents that are empty
or only whitespace are skipped, and a source left with no document is an error: training on
nothing fails later in a far less clear way. Every path is checked before the first document is
read, so a typo in the third source fails at once, not after the first two are tokenized.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmforge.errors import DataError, UserInputError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIX = ".jsonl"
BUILTIN_PREFIX = "builtin:"
Errors = Literal["strict", "replace"]
_REPLACE_HINT = "convert it to UTF-8, or pass --errors replace to read bad bytes as U+FFFD"


@dataclass(frozen=True)
class Document:
    text: str
    origin: str  # "path", "path:line" (jsonl) or "builtin:NAME:module": where to look when it goes wrong


@dataclass(frozen=True)
class Source:
    """One ``--data`` value, resolved: what kind it is and which files stand behind it."""

    spec: str
    kind: Literal["file", "jsonl", "table", "directory", "glob", "builtin", "url", "named", "hf"]
    files: tuple[Path, ...] = ()  # empty for builtin and hf; the cached copy for url and named
    base: Path | None = None  # a directory source's root, for file names in the sha256 listing
    url: str | None = None  # where a url or named source was downloaded from

    @property
    def builtin_name(self) -> str:
        return self.spec.removeprefix(BUILTIN_PREFIX)


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _is_text_file(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES and not any(p.startswith(".") for p in path.parts)


def _file_kind(path: Path) -> Literal["file", "jsonl", "table"]:
    from lmforge.data.tables import is_table_file

    if path.suffix.lower() == JSONL_SUFFIX:
        return "jsonl"
    return "table" if is_table_file(path) else "file"


def resolve_source(spec: str) -> Source:
    """Classify ``spec`` and list its files; a missing path or an empty match is a ``DataError``.

    A URL or a corpus name is downloaded here (once; later calls find it in the cache), so every
    source is on disk before the first document is read.
    """
    from lmforge.data import download
    from lmforge.data.tables import HF_PREFIX, HFSpec

    spec = str(spec)
    if spec.startswith(HF_PREFIX):
        HFSpec.parse(spec)  # a malformed spec fails now, not after the sources before it are read
        return Source(spec, "hf")
    if download.is_url(spec):
        url, _ = download.split_checksum(spec)
        return Source(spec, "url", (download.fetch(spec),), url=url)
    if spec.startswith(BUILTIN_PREFIX):
        from lmforge.data.builtin import BUILTINS

        if spec.removeprefix(BUILTIN_PREFIX) not in BUILTINS:
            from lmforge.data.seq2seq_tasks import is_task

            if is_task(spec):
                raise DataError(
                    f"{spec} is a seq2seq task (source/target pairs), not a text corpus; prepare it with "
                    "--task seq2seq for an encoder-decoder model"
                )
            known = ", ".join(BUILTIN_PREFIX + name for name in BUILTINS)
            raise DataError(f"unknown built-in corpus {spec!r}; the built-in corpora are: {known}")
        return Source(spec, "builtin")
    path = Path(spec).expanduser()
    if path.is_file():
        return Source(spec, _file_kind(path), (path,))
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and _is_text_file(p.relative_to(path))),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise DataError(f"{spec} is a directory with no .txt or .md files in it (searched recursively)")
        return Source(spec, "directory", tuple(files), base=path)
    if _is_glob(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(
                f"the pattern {spec!r} matches no files; check the path (quote it so the shell leaves it)"
            )
        return Source(spec, "glob", tuple(files))
    from lmforge.data.catalog import CATALOG

    if spec in CATALOG:
        corpus = CATALOG[spec]
        if corpus.needs_datasets:
            from lmforge.data.tables import require_datasets

            require_datasets(f"{spec} (a Parquet file)")  # before downloading it, not after
        path = download.fetch(corpus.url, sha256=corpus.sha256, label=corpus.name)
        return Source(spec, "named", (path,), url=corpus.url)
    raise DataError(
        f"{spec}: no such file or directory (nor a corpus name: {', '.join(CATALOG)}; see lmforge corpora)"
    )


def resolve_sources(specs: Sequence[str]) -> list[Source]:
    if isinstance(specs, (str, Path)):
        specs = [str(specs)]
    if not specs:
        raise UserInputError(
            "no data given; pass --data with a file, directory, glob, .jsonl, URL, corpus name, hf:NAME "
            "or builtin:NAME"
        )
    return [resolve_source(str(spec)) for spec in specs]


def _decode(data: bytes, path: Path, errors: Errors, offset: int = 0, line: int | None = None) -> str:
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as error:
        where = offset + error.start
        line = line if line is not None else data.count(b"\n", 0, error.start) + 1
        bad = data[error.start : error.end].hex(" ").upper()
        raise DataError(
            f"{path}: byte offset {where} (line {line}) is not valid UTF-8 (0x{bad}, {error.reason}); {_REPLACE_HINT}"
        ) from None


def read_text(path: Path, errors: Errors = "strict") -> str:
    """A whole file as text; a byte-order mark is not text."""
    return _decode(path.read_bytes(), path, errors).removeprefix("\ufeff")


def _jsonl_documents(path: Path, text_field: str, errors: Errors) -> Iterator[Document]:
    offset = 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, errors, offset, line_number)
            offset += len(raw)
            if line_number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}:{line_number}: not valid JSON ({error.msg} at column {error.colno}); each line "
                    f'must be one JSON object such as {{"{text_field}": "..."}}'
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{line_number}: a JSON {type(record).__name__}, not an object; each line must be "
                    f'one JSON object such as {{"{text_field}": "..."}}'
                )
            if text_field not in record:
                fields = ", ".join(repr(key) for key in record) or "none"
                raise DataError(
                    f"{path}:{line_number}: no {text_field!r} field (fields: {fields}); "
                    "name the field that holds the text with --text-field"
                )
            value = record[text_field]
            if not isinstance(value, str):
                raise DataError(
                    f"{path}:{line_number}: the {text_field!r} field is a JSON {type(value).__name__}, not a string"
                )
            yield Document(value, f"{path}:{line_number}")


def _table_documents(dataset, text_field: str, where: str, join_rows: bool) -> Iterator[Document]:
    from lmforge.data.tables import row_texts

    rows = row_texts(dataset, text_field, where)
    if join_rows:  # rows that are the lines of one text (WikiText)
        yield Document("".join(text for _, text in rows), where)
    else:
        for row, text in rows:
            yield Document(text, f"{where}:row {row}")


def _raw_documents(source: Source, text_field: str, errors: Errors) -> Iterator[Document]:
    if source.kind == "builtin":
        from lmforge.data.builtin import builtin_documents

        for module, text in builtin_documents(source.builtin_name):
            yield Document(text, f"{source.spec}:{module}")
        return
    if source.kind == "hf":
        from lmforge.data.tables import load_hf

        yield from _table_documents(load_hf(source.spec), text_field, source.spec, join_rows=False)
        return
    corpus = None
    if source.kind == "named":
        from lmforge.data.catalog import CATALOG

        corpus = CATALOG[source.spec]
    for path in source.files:
        kind = _file_kind(path)
        if kind == "jsonl":
            yield from _jsonl_documents(path, text_field, errors)
        elif kind == "table":
            from lmforge.data.tables import load_table

            field = "text" if corpus is not None else text_field  # catalog tables hold "text"
            yield from _table_documents(
                load_table(path), field, str(path), join_rows=corpus is not None and corpus.join_rows
            )
        elif corpus is not None and corpus.separator:
            for number, text in enumerate(read_text(path, errors).split(corpus.separator)):
                yield Document(text, f"{source.spec}:document {number}")
        else:
            yield Document(read_text(path, errors), str(path))


def source_documents(
    source: Source, *, text_field: str = "text", errors: Errors = "strict"
) -> Iterator[Document]:
    """The non-blank documents of one source; none at all is a ``DataError``."""
    found = 0
    for document in _raw_documents(source, text_field, errors):
        if document.text.strip():
            found += 1
            yield document
    if not found:
        what = {
            "file": "the file is empty or only whitespace",
            "jsonl": f"every line is blank or has an empty {text_field!r} field",
            "table": f"every row's {text_field!r} is empty or null",
            "hf": f"every row's {text_field!r} is empty or null",
            "url": "the downloaded file is empty or only whitespace",
            "named": "the downloaded file is empty or only whitespace",
            "directory": "every .txt/.md file in it is empty or only whitespace",
            "glob": "every matching file is empty or only whitespace",
            "builtin": "the built-in corpus came out empty",
        }[source.kind]
        raise DataError(f"{source.spec} yields no text: {what}; give a source with some text")


def iter_documents(
    specs: Sequence[str], *, text_field: str = "text", errors: Errors = "strict"
) -> Iterator[Document]:
    """Every document of every source, in order (see the module docstring for what a document is)."""
    sources = resolve_sources(specs)  # every path checked before the first document is read
    for source in sources:
        yield from source_documents(source, text_field=text_field, errors=errors)


def iter_texts(specs: Sequence[str], *, text_field: str = "text", errors: Errors = "strict") -> Iterator[str]:
    for document in iter_documents(specs, text_field=text_field, errors=errors):
        yield document.text


def _file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def describe_source(source: Source, *, text_field: str = "text") -> dict:
    """What metadata records about a source: spec, kind, description, files, bytes and sha256.

    sha256 is that of the file for a single file (what ``sha256sum FILE`` prints). For several
    files it is the sha256 of their ``sha256sum``-style listing (``HASH  NAME\\n`` per file, names
    relative to the directory for a directory source), so renaming a file changes it too. For a
    builtin or an ``hf:`` dataset it is over the documents' UTF-8 text, each followed by a NUL
    byte. A downloaded source (URL or corpus name) is described by its cached file, plus its URL.
    """
    if source.kind == "hf":
        digest, size, count = hashlib.sha256(), 0, 0
        for document in _raw_documents(source, text_field, "strict"):
            data = document.text.encode("utf-8")
            digest.update(data + b"\0")
            size += len(data)
            count += 1
        return {
            "spec": source.spec,
            "kind": "hf",
            "description": f"Hugging Face dataset, one document per row (column {text_field!r})",
            "files": 0,
            "rows": count,
            "bytes": size,
            "sha256": digest.hexdigest(),
        }
    if source.kind == "builtin":
        from lmforge.data.builtin import builtin_description, builtin_documents, python_version

        documents = builtin_documents(source.builtin_name)
        digest, size = hashlib.sha256(), 0
        for _, text in documents:
            data = text.encode("utf-8")
            digest.update(data + b"\0")
            size += len(data)
        return {
            "spec": source.spec,
            "kind": "builtin",
            "description": builtin_description(source.builtin_name),
            "files": len(documents),
            "bytes": size,
            "sha256": digest.hexdigest(),
            "python_version": python_version(),
        }
    hashes = [(_file_sha256(path), path) for path in source.files]
    if len(hashes) == 1:
        sha256 = hashes[0][0][0]
    else:
        listing = "".join(
            f"{file_hash}  {(path.relative_to(source.base) if source.base else path).as_posix()}\n"
            for (file_hash, _), path in hashes
        )
        sha256 = hashlib.sha256(listing.encode("utf-8")).hexdigest()
    count = len(source.files)
    if source.kind in ("url", "named"):
        description = _describe_download(source, text_field)
    else:
        description = {
            "file": "text file, one document",
            "jsonl": f"JSON Lines, one document per line (field {text_field!r})",
            "table": f"{source.files[0].suffix.lower()[1:]} table, one document per row (column {text_field!r})",
            "directory": f"directory, {count} .txt/.md file{'s' if count != 1 else ''}, one document each",
            "glob": f"pattern, {count} file{'s' if count != 1 else ''}, one document each",
        }[source.kind]
    described = {
        "spec": source.spec,
        "kind": source.kind,
        "description": description,
        "files": count,
        "bytes": sum(size for (_, size), _ in hashes),
        "sha256": sha256,
    }
    if source.url is not None:
        described["url"] = source.url
    return described


def _describe_download(source: Source, text_field: str) -> str:
    if source.kind == "named":
        from lmforge.data.catalog import CATALOG

        corpus = CATALOG[source.spec]
        return f"{corpus.description}; licence: {corpus.licence}"
    kind = _file_kind(source.files[0])
    what = {
        "file": "text file, one document",
        "jsonl": f"JSON Lines, one document per line (field {text_field!r})",
        "table": f"table, one document per row (column {text_field!r})",
    }[kind]
    return f"downloaded {what}"


def describe_sources(
    specs: Sequence[str], *, text_field: str = "text", errors: Errors = "strict", count_documents: bool = True
) -> list[dict]:
    """``describe_source`` for each spec, with its number of (non-blank) documents when asked."""
    described = []
    for source in resolve_sources(specs):
        entry = describe_source(source, text_field=text_field)
        if count_documents:
            entry["documents"] = sum(
                1 for _ in source_documents(source, text_field=text_field, errors=errors)
            )
        described.append(entry)
    return described
