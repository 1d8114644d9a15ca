"""Rows of a table as documents: ``hf:NAME[:CONFIG][@SPLIT]`` and Parquet, CSV and Arrow files.

    hf:roneneldan/TinyStories@validation        -> one document per row's "text" (Hugging Face Hub)
    hf:wikitext:wikitext-2-raw-v1@test          -> dataset "wikitext", config "wikitext-2-raw-v1"
    hf:./saved                                  -> a directory written by Dataset.save_to_disk
    reviews.csv  (--text-field body)            -> one document per row's "body"
    part-0.parquet, data-00000-of-00001.arrow   -> one document per row's "text"

All of them go through the Hugging Face ``datasets`` library, imported only when such a source
is used: it is the optional extra ``pip install 'lmforge[hf]'``, and without it the source stops
with one line saying so. The split defaults to ``train``. Rows whose text is null are skipped
like blank documents; a column that holds something other than text is an error naming the row.
``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` keep ``datasets`` to what is already cached.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

HF_PREFIX = "hf:"
TABLE_SUFFIXES = (".parquet", ".csv", ".arrow")
INSTALL_HINT = "pip install 'lmforge[hf]'"
_BATCH_ROWS = 1024


@dataclass(frozen=True)
class HFSpec:
    name: str
    config: str | None
    split: str | None  # None: "train", or the only split there is

    @classmethod
    def parse(cls, spec: str) -> HFSpec:
        """``"hf:wikitext:wikitext-2-raw-v1@test"`` -> ``HFSpec("wikitext", "wikitext-2-raw-v1", "test")``."""
        body = spec.removeprefix(HF_PREFIX)
        body, at, split = body.rpartition("@") if "@" in body else (body, "", "")
        name, _, config = body.partition(":")
        if not name or (at and not split):
            raise DataError(
                f"{spec}: expected hf:NAME[:CONFIG][@SPLIT], e.g. hf:wikitext:wikitext-2-raw-v1@train"
            )
        return cls(name, config or None, split or None)


def is_table_file(path: Path) -> bool:
    return path.suffix.lower() in TABLE_SUFFIXES


def require_datasets(what: str) -> None:
    """Stop before a download whose file only ``datasets`` can read, when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        raise DataError(f"{what} is read with the `datasets` library, which is not installed: {INSTALL_HINT}")


def _datasets(what: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{what} is read with the `datasets` library, which is not installed: {INSTALL_HINT}"
        ) from None
    if not sys.stderr.isatty():
        datasets.disable_progress_bars()  # its "Generating train split" bars, in logs or under --json
    return datasets


def load_hf(spec: str) -> Any:
    """The ``datasets.Dataset`` an ``hf:`` spec names (a saved directory, or the Hub's cache)."""
    parsed = HFSpec.parse(spec)
    ds = _datasets(spec)
    local = Path(parsed.name).expanduser()
    from_disk = local.is_dir() and any(
        (local / name).exists() for name in ("dataset_dict.json", "state.json")
    )
    try:
        if from_disk:
            loaded = ds.load_from_disk(str(local))
        else:
            loaded = ds.load_dataset(parsed.name, parsed.config, split=parsed.split or "train")
    except Exception as error:  # noqa: BLE001 - datasets raises many types; the user needs one line
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{spec}: cannot load it with datasets ({message})") from None
    if isinstance(loaded, ds.DatasetDict):
        split = parsed.split or "train"
        if split not in loaded:
            raise DataError(f"{spec}: no split {split!r}; the splits are {', '.join(loaded)} (hf:NAME@SPLIT)")
        return loaded[split]
    if from_disk and parsed.split is not None:
        raise DataError(f"{spec}: {parsed.name} holds a single dataset without splits; drop @{parsed.split}")
    return loaded


def load_table(path: Path) -> Any:
    """A Parquet, CSV or Arrow file as a ``datasets.Dataset``."""
    ds = _datasets(f"{path} (a {path.suffix.lower()[1:]} file)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".arrow":  # what save_to_disk writes: memory-mapped as it is, no conversion
            return ds.Dataset.from_file(str(path))
        builder = {".parquet": "parquet", ".csv": "csv"}[suffix]
        return ds.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # noqa: BLE001 - pyarrow and datasets raise many types
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot read it as {suffix[1:]} ({message})") from None


def row_texts(dataset: Any, text_field: str, where: str) -> Iterator[tuple[int, str]]:
    """(row number, text) for every row whose ``text_field`` is not null."""
    columns = list(dataset.column_names)
    if text_field not in columns:
        raise DataError(
            f"{where}: no {text_field!r} column (columns: {', '.join(map(repr, columns)) or 'none'}); "
            "name the column that holds the text with --text-field"
        )
    row = 0
    for batch in dataset.select_columns([text_field]).iter(batch_size=_BATCH_ROWS):
        for value in batch[text_field]:
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{where}: row {row}: the {text_field!r} column holds {type(value).__name__}, not text"
                )
            if value is not None:
                yield row, value
            row += 1
