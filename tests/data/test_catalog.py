"""Corpora by name: the catalog entry's URL points at a local server, so nothing leaves 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys

import pytest

from lmforge.cli import main
from lmforge.data import catalog, download
from lmforge.data.corpora import describe_sources, iter_documents, iter_texts
from lmforge.errors import DataError, DownloadError
from tests.data.conftest import CORPUS, cached_files
from tests.tiny_run import TEXT, make_run

DATA = CORPUS.encode("utf-8")
SHA = hashlib.sha256(DATA).hexdigest()


def serve_as(monkeypatch, server, name: str, path: str, data: bytes, **changes) -> catalog.Corpus:
    """Point catalog entry ``name`` at ``data`` served by the local server under ``path``."""
    server.files[path] = data
    changes = {"url": server.url(path), "sha256": hashlib.sha256(data).hexdigest(), **changes}
    entry = dataclasses.replace(catalog.CATALOG[name], **changes)
    monkeypatch.setitem(catalog.CATALOG, name, entry)
    return entry


def run(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_every_entry_is_complete():
    assert {"tinyshakespeare", "wikitext-2", "tinystories"} <= set(catalog.CATALOG)
    for name, entry in catalog.CATALOG.items():
        assert entry.name == name and re.fullmatch(r"[a-z0-9-]+", name)
        assert entry.url.startswith("https://") and entry.size > 0
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.licence and entry.description
    assert catalog.CATALOG["tinyshakespeare"].size == 1_115_394  # Karpathy's input.txt


def test_prepare_by_name_downloads_checks_and_records_the_corpus(
    cache, server, tmp_path, monkeypatch, capsys
):
    entry = serve_as(monkeypatch, server, "tinyshakespeare", "/input.txt", DATA)
    status, _, err = run(["corpora", "--json"], capsys)
    listed = {row["name"]: row for row in json.loads(_)["corpora"]}
    assert status == 0 and listed["tinyshakespeare"]["cached"] is False
    status, _, err = run(
        ["prepare", "--data", "tinyshakespeare", "--tokenizer", "char", "--out", str(tmp_path / "d")], capsys
    )
    assert status == 0, err
    (source,) = json.loads((tmp_path / "d" / "meta.json").read_text())["sources"]
    assert source["kind"] == "named" and source["url"] == entry.url and source["sha256"] == SHA
    assert entry.licence in source["description"]
    status, out, _ = run(["corpora"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("tinyshakespeare "))
    assert row.split()[3] == "yes"  # name, size, "MB", cached
    status, _, err = run(
        ["tokenizer", "train", "--kind", "char", "--data", "tinyshakespeare", "--out", str(tmp_path / "tok")],
        capsys,
    )
    assert status == 0, err
    assert len(server.requests) == 1  # downloaded once for all three commands


def test_evaluate_by_name_scores_the_same_text_as_the_local_file(
    cache, server, tmp_path, monkeypatch, capsys
):
    serve_as(monkeypatch, server, "tinyshakespeare", "/input.txt", TEXT.encode("utf-8"))
    make_run(tmp_path / "run")
    local = tmp_path / "input.txt"
    local.write_text(TEXT, encoding="utf-8")
    results = []
    for data in ("tinyshakespeare", str(local)):
        status, out, err = run(
            ["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", data, "--json"], capsys
        )
        assert status == 0, err
        results.append(json.loads(out))
    assert results[0] == results[1]


def test_a_wrong_catalog_digest_stops_in_one_line_and_keeps_nothing(
    cache, server, tmp_path, monkeypatch, capsys
):
    serve_as(monkeypatch, server, "tinyshakespeare", "/input.txt", DATA)
    monkeypatch.setitem(
        catalog.CATALOG,
        "tinyshakespeare",
        dataclasses.replace(catalog.CATALOG["tinyshakespeare"], sha256="f" * 64),
    )
    status, out, err = run(
        ["prepare", "--data", "tinyshakespeare", "--tokenizer", "char", "--out", str(tmp_path / "d")], capsys
    )
    assert status == 2 and err.count("\n") == 1 and "sha256 mismatch: expected ffff" in err
    assert cached_files(cache) == [] and not (tmp_path / "d").exists()


def test_an_entry_without_a_digest_trusts_the_first_download(cache, server, monkeypatch):
    serve_as(monkeypatch, server, "tinystories", "/stories.txt", DATA, sha256=None, separator=None)
    assert list(iter_texts(["tinystories"])) == [CORPUS]
    path = download.cached_path(catalog.CATALOG["tinystories"].url)
    assert download.recorded_sha256(path) == SHA
    path.write_bytes(DATA.replace(b"poor", b"rich"))
    with pytest.raises(DownloadError, match="no longer has the sha256 recorded"):
        list(iter_texts(["tinystories"]))


def test_separator_splits_a_named_corpus_into_documents(cache, server, monkeypatch):
    text = "Once upon a time.\n<|endoftext|>\nThe cat sat.\n<|endoftext|>\n\n<|endoftext|>\nThe end.\n"
    serve_as(monkeypatch, server, "tinystories", "/stories.txt", text.encode("utf-8"))
    assert list(iter_texts(["tinystories"])) == ["Once upon a time.\n", "\nThe cat sat.\n", "\nThe end.\n"]
    assert describe_sources(["tinystories"])[0]["documents"] == 3


def test_joined_parquet_rows_make_one_document(cache, server, tmp_path, monkeypatch, hf_offline):
    datasets = pytest.importorskip("datasets")
    rows = ["", " = Valkyria Chronicles = \n", "", " Senjō no Valkyria 3 is a game .\n"]
    datasets.Dataset.from_dict({"text": rows}).to_parquet(tmp_path / "train.parquet")
    serve_as(monkeypatch, server, "wikitext-2", "/train.parquet", (tmp_path / "train.parquet").read_bytes())
    assert list(iter_texts(["wikitext-2"])) == ["".join(rows)]


def test_a_local_path_wins_over_a_corpus_name(cache, server, tmp_path, monkeypatch):
    serve_as(monkeypatch, server, "tinyshakespeare", "/input.txt", DATA)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinyshakespeare").write_text("my own text", encoding="utf-8")
    assert [doc.origin for doc in iter_documents(["tinyshakespeare"])] == ["tinyshakespeare"]
    assert server.requests == []


def test_an_unknown_name_lists_the_known_ones(cache):
    with pytest.raises(DataError, match="no such file or directory .*tinyshakespeare.*lmforge corpora"):
        list(iter_texts(["tinyshakespear"]))


def test_a_parquet_corpus_without_datasets_stops_before_downloading(cache, server, monkeypatch):
    serve_as(monkeypatch, server, "wikitext-2", "/train.parquet", b"PAR1")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(
        DataError, match=r"wikitext-2 \(a Parquet file\) is read with .*pip install 'lmforge\[hf\]'"
    ):
        list(iter_texts(["wikitext-2"]))
    assert server.requests == [] and cached_files(cache) == []
