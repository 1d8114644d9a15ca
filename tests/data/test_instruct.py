"""Built-in post-training data: splits by module, preferences that differ, sums that check."""

from __future__ import annotations

import pytest

from lmforge.data import instruct
from lmforge.errors import DataError

REAL_SPLIT_OF = instruct.split_of  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def small_stdlib(monkeypatch, tmp_path):
    """Three fake modules instead of the whole standard library (seconds -> milliseconds)."""
    triples = [
        ("json", "json.dumps(obj)", "Serialize obj to a JSON formatted str."),
        ("json", "json.loads(s)", "Deserialize s to a Python object."),
        ("json", "json.loads(s)", "Deserialize s to a Python object."),  # an override: deduplicated
        ("csv", "csv.reader(f)", "Return a reader object."),
        ("csv", "csv.writer(f)", "Return a writer object."),
        ("zipfile", "zipfile.is_zipfile(filename)", "Quickly see if a file is a ZIP file."),
        ("zipfile", "zipfile.ZipFile.close()", "Close the file."),
    ]
    monkeypatch.setattr(instruct, "cached_triples", lambda name, build: triples)
    monkeypatch.setattr(instruct, "split_of", lambda module: "val" if module == "zipfile" else "train")


def test_first_paragraph_stops_at_the_blank_line_and_drops_pages() -> None:
    assert instruct.first_paragraph("Join two\n    paths.\n\nMore detail.") == "Join two paths."
    assert instruct.first_paragraph("word " * 200) == ""


def test_instructions_hold_out_whole_modules() -> None:
    train, val = instruct.instruct_examples("train"), instruct.instruct_examples("val")
    assert [row["prompt"] for row in val] == [
        "Explain what `zipfile.is_zipfile(filename)` does.",
        "Explain what `zipfile.ZipFile.close()` does.",
    ]
    assert len(train) == 4 and {row["module"] for row in train} == {"json", "csv"}
    assert train[0]["completion"] == "Serialize obj to a JSON formatted str."


def test_preferences_reject_another_functions_summary() -> None:
    rows = instruct.preference_examples("train")
    answers = {row["completion"] for row in instruct.instruct_examples("train")}
    assert len(rows) == 4
    for row in rows:
        assert row["chosen"] != row["rejected"] and row["rejected"] in answers
    assert rows == instruct.preference_examples("train")  # seeded


def test_the_real_split_holds_out_about_one_module_in_ten() -> None:
    modules = [f"module{i}" for i in range(2000)]
    share = sum(REAL_SPLIT_OF(m) == "val" for m in modules) / len(modules)
    assert 0.07 < share < 0.13
    assert REAL_SPLIT_OF("json") == REAL_SPLIT_OF("json")  # crc32: the same on every run and machine


def test_arith_prompts_are_distinct_across_splits_and_answers_check() -> None:
    train = instruct.builtin_rows("builtin:arith?digits=1,size=60", "train")
    val = instruct.builtin_rows("builtin:arith?digits=1,size=60", "val")
    assert len(train) == 60 and len(val) == 40  # 100 one-digit sums in all
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    for row in train:
        a, b = row["prompt"].rstrip("=").split("+")
        assert int(row["answer"]) == int(a) + int(b)
    prompts = [r["prompt"] for r in train[:3]]
    answers = [r["answer"] for r in train[:3]]
    assert instruct.arith_reward(prompts, answers) == [1.0, 1.0, 1.0]
    assert instruct.arith_reward(
        ["User: 12+35=\n\nAssistant:"] * 4, [" 47.", "47 because", "4 7", "x47"]
    ) == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "builtin:arith?digits=9",
        "builtin:arith?size=0",
        "builtin:arith?base=3",
        "builtin:stdlib-prefs?x=1",
        "builtin:nope",
    ],
)
def test_bad_specs_say_what_works(spec: str) -> None:
    with pytest.raises(DataError):
        instruct.builtin_rows(spec, "train")


def test_a_prompt_without_a_sum_is_refused() -> None:
    with pytest.raises(DataError, match="no sum"):
        instruct.arith_reward(["hello"], ["1"])
