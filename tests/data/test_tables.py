"""hf: sources and Parquet/CSV/Arrow files, from datasets written here by ``datasets`` (no hub access).

The truth is the rows the test wrote: each non-null row is one document, in order.
"""

from __future__ import annotations

import json
import sys

import pytest

from lmforge.cli import main
from lmforge.data.corpora import describe_sources, iter_documents, iter_texts
from lmforge.data.tables import HFSpec
from lmforge.errors import DataError

datasets = pytest.importorskip("datasets")

ROWS = ["First Citizen:\nSpeak, speak.\n", "All:\nResolved. resolved.\n", None, "MENENIUS:\nWhy, masters?\n"]
TEXTS = [row for row in ROWS if row is not None]


@pytest.fixture(autouse=True)
def offline(hf_offline):
    """Every test here runs with the hub switched off."""


def saved(tmp_path, **columns):
    path = tmp_path / "saved"
    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return path


def test_spec_names_dataset_config_and_split():
    assert HFSpec.parse("hf:wikitext:wikitext-2-raw-v1@test") == HFSpec(
        "wikitext", "wikitext-2-raw-v1", "test"
    )
    assert HFSpec.parse("hf:roneneldan/TinyStories") == HFSpec("roneneldan/TinyStories", None, None)
    with pytest.raises(DataError, match=r"expected hf:NAME\[:CONFIG\]\[@SPLIT\]"):
        HFSpec.parse("hf:wikitext@")


def test_saved_dataset_gives_one_document_per_non_null_row(tmp_path):
    path = saved(tmp_path, text=ROWS, label=[0, 1, 2, 3])
    documents = list(iter_documents([f"hf:{path}"]))
    assert [doc.text for doc in documents] == TEXTS
    assert [doc.origin for doc in documents] == [f"hf:{path}:row {row}" for row in (0, 1, 3)]


def test_text_field_picks_the_column_and_a_missing_one_is_named(tmp_path):
    path = saved(tmp_path, body=ROWS, title=["a", "b", "c", "d"])
    assert list(iter_texts([f"hf:{path}"], text_field="body")) == TEXTS
    with pytest.raises(DataError, match=r"no 'text' column \(columns: 'body', 'title'\).*--text-field"):
        list(iter_texts([f"hf:{path}"]))
    with pytest.raises(DataError, match="row 0: the 'n' column holds int, not text"):
        list(iter_texts([f"hf:{saved(tmp_path / 'n', n=[1, 2])}"], text_field="n"))


def test_splits_of_a_saved_dataset_dict(tmp_path):
    path = tmp_path / "dict"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["train one", "train two"]}),
            "validation": datasets.Dataset.from_dict({"text": ["valid one"]}),
        }
    ).save_to_disk(str(path))
    assert list(iter_texts([f"hf:{path}"])) == ["train one", "train two"]
    assert list(iter_texts([f"hf:{path}@validation"])) == ["valid one"]
    with pytest.raises(DataError, match="no split 'test'; the splits are train, validation"):
        list(iter_texts([f"hf:{path}@test"]))


def test_load_dataset_path_reads_a_directory_of_data_files_by_split(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    datasets.Dataset.from_dict({"text": ["a train row"]}).to_csv(folder / "train.csv")
    datasets.Dataset.from_dict({"text": ["a test row", "another"]}).to_csv(folder / "test.csv")
    assert list(iter_texts([f"hf:{folder}@test"])) == ["a test row", "another"]
    assert list(iter_texts([f"hf:{folder}"])) == ["a train row"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".arrow"])
def test_table_files_give_one_document_per_row(tmp_path, suffix):
    table = datasets.Dataset.from_dict({"text": ROWS, "id": [1, 2, 3, 4]})
    if suffix == ".arrow":
        table.save_to_disk(str(tmp_path / "saved"))
        (path,) = (tmp_path / "saved").glob("*.arrow")
    else:
        path = tmp_path / f"rows{suffix}"
        getattr(table, "to_parquet" if suffix == ".parquet" else "to_csv")(str(path))
    assert list(iter_texts([str(path)])) == TEXTS
    (described,) = describe_sources([str(path)])
    assert described["kind"] == "table" and described["documents"] == 3


def test_hub_names_stay_offline_and_fail_in_one_line(tmp_path):
    with pytest.raises(DataError, match="hf:someone/no-such-dataset: cannot load it with datasets"):
        list(iter_texts(["hf:someone/no-such-dataset"]))


def test_prepare_and_tokenizer_train_read_hf_sources(tmp_path, capsys):
    path = saved(tmp_path, body=ROWS)
    status = main(["prepare", "--data", f"hf:{path}", "--text-field", "body", "--tokenizer", "char",
                   "--out", str(tmp_path / "d"), "--json"])  # fmt: skip
    meta = json.loads(capsys.readouterr().out)
    assert status == 0
    assert meta["documents"] == 3 and meta["characters"] == sum(map(len, TEXTS))
    assert meta["train_tokens"] + meta["val_tokens"] == sum(map(len, TEXTS)) + 3  # + a separator each
    assert meta["sources"][0]["kind"] == "hf" and meta["sources"][0]["rows"] == 3
    datasets.Dataset.from_dict({"text": ROWS}).to_parquet(str(tmp_path / "rows.parquet"))
    status = main(["tokenizer", "train", "--kind", "char", "--data", str(tmp_path / "rows.parquet"),
                   "--out", str(tmp_path / "tok"), "--json"])  # fmt: skip
    assert status == 0 and json.loads(capsys.readouterr().out)["documents"] == 3


def test_without_datasets_one_line_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    path = saved(tmp_path, text=ROWS)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    status = main(["prepare", "--data", f"hf:{path}", "--tokenizer", "char", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "pip install 'lmforge[hf]'" in err
    assert not (tmp_path / "d").exists()
