"""``prepare_seq2seq`` and ``load_seq2seq``: pairs in, token rows out that decode back to the same
pairs, a deterministic split, one or two tokenizers, and one line for a directory of the other kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmforge.data import seq2seq_tasks
from lmforge.data.pairs import Pair
from lmforge.data.prepare import prepare_dataset
from lmforge.data.seq2seq_prepare import prepare_seq2seq, split_pairs
from lmforge.data.seq2seq_shards import dataset_task, load_seq2seq
from lmforge.data.shards import load_prepared
from lmforge.errors import DataError, OutputExistsError, TokenizerError
from lmforge.tokenizers import train_tokenizer

PAIRS = [(f"the cat {i} sat", f"le chat {i} était assis") for i in range(40)]


@pytest.fixture
def jsonl(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"en": s, "fr": t}) + "\n" for s, t in PAIRS), encoding="utf-8")
    return path


def decoded(data, split: str) -> list[tuple[str, str]]:
    rows = data.pairs(split)
    return [
        (
            data.source_tokenizer.decode(rows.sources[i].tolist()),
            data.target_tokenizer.decode(rows.targets[i].tolist()),
        )
        for i in range(len(rows))
    ]


def test_rows_decode_back_to_the_pairs_and_the_splits_partition_them(tmp_path, jsonl):
    meta = prepare_seq2seq(
        [str(jsonl)], "char", tmp_path / "d", source_field="en", target_field="fr", val_fraction=0.25, seed=3
    )
    data = load_seq2seq(tmp_path / "d")
    train, val = decoded(data, "train"), decoded(data, "val")
    assert len(val) == 10 and len(train) == 30  # round(40 * 0.25)
    assert sorted(train + val) == sorted(PAIRS)
    assert [p for p in PAIRS if p in val] == val  # each split keeps the corpus order
    assert data.texts("val") == val
    assert meta["task"] == "seq2seq" and meta["fields"] == {"source": "en", "target": "fr"}
    assert meta["train_source_tokens"] == sum(len(s) for s, _ in train)
    assert meta["val_target_tokens"] == sum(len(t) for _, t in val)
    assert meta["longest_target"] == max(len(t) for _, t in PAIRS)
    assert data.shared_tokenizer and data.target_tokenizer is data.source_tokenizer
    assert (tmp_path / "d" / "tokenizer").is_dir() and not (tmp_path / "d" / "source_tokenizer").exists()
    tok = data.target_tokenizer
    assert data.target_ids == {"start": tok.bos_id, "end": tok.eos_id, "pad": tok.eos_id}  # char: no pad
    offsets = np.fromfile(tmp_path / "d" / "val.source.idx", dtype="<i8")
    assert offsets[0] == 0 and list(np.diff(offsets)) == [len(s) for s, _ in val]
    assert dataset_task(tmp_path / "d") == "seq2seq"


def test_split_is_seeded_and_deterministic():
    pairs = [Pair(str(i), str(i), f"x:{i}") for i in range(100)]
    train, val, rule = split_pairs(pairs, 0.1, seed=5)
    assert (train, val) == split_pairs(pairs, 0.1, seed=5)[:2]
    assert val != split_pairs(pairs, 0.1, seed=6)[1]
    assert len(val) == 10 and rule == {
        "rule": "pairs",
        "val_fraction": 0.1,
        "seed": 5,
        "pairs": 100,
        "val_pairs": 10,
    }


def test_grouped_pairs_split_by_whole_groups():
    pairs = [Pair(f"s{g}{i}", "t", "x", group=f"module{g}") for g in range(20) for i in range(g % 4 + 1)]
    train, val, rule = split_pairs(pairs, 0.2, seed=0)
    train_groups, val_groups = {p.group for p in train}, {p.group for p in val}
    assert not train_groups & val_groups and len(val_groups) == 4 and len(train_groups) == 16
    assert rule["rule"] == "groups" and rule["val_groups"] == 4 and rule["group"] == "group"


def test_too_few_pairs_to_split():
    with pytest.raises(DataError, match="1 pair in 1 pair: too few"):
        split_pairs([Pair("a", "b", "x")], 0.1, 0)


def test_stdlib_signatures_hold_out_whole_modules(tmp_path, monkeypatch):
    fake = [(f"mod{m}", f"mod{m}.f{i}(x)", f"Do thing {i}.") for m in range(10) for i in range(5)]
    monkeypatch.setattr(seq2seq_tasks, "stdlib_signatures", lambda: fake)
    meta = prepare_seq2seq(["builtin:stdlib-signatures"], "char", tmp_path / "d", val_fraction=0.2)
    val_modules = {source.split(".")[0] for source, _ in load_seq2seq(tmp_path / "d").texts("val")}
    assert len(val_modules) == 2 and meta["val_pairs"] == 10 and meta["split"]["group"] == "module"


def test_a_trained_tokenizer_sees_the_train_split_only(tmp_path):
    path = tmp_path / "p.tsv"
    # "z" occurs only in the pair the seeded draw sends to validation
    lines = [f"{'ab' * (i + 1)}\t{'ba' * (i + 1)}" for i in range(9)] + ["zz\tzz"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for seed in range(50):
        _, val, _ = split_pairs([Pair(str(i), "t", "x") for i in range(10)], 0.1, seed)
        if val[0].source == "9":
            break
    prepare_seq2seq([str(path)], "char", tmp_path / "d", seed=seed)
    data = load_seq2seq(tmp_path / "d")
    assert data.source_tokenizer.token_to_id("z") is None
    assert data.pairs("val").sources[0].tolist() == [data.source_tokenizer.unk_id] * 2


def test_separate_tokenizers(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"{'abc' * i}\t{'ΑΒΓ' * i}\n" for i in range(1, 11)), encoding="utf-8")
    meta = prepare_seq2seq([str(path)], "char", tmp_path / "d", target_tokenizer="char")
    data = load_seq2seq(tmp_path / "d")
    assert not meta["tokenizers"]["shared"] and not data.shared_tokenizer
    assert (
        data.source_tokenizer.token_to_id("a") is not None and data.source_tokenizer.token_to_id("Α") is None
    )
    assert (
        data.target_tokenizer.token_to_id("Α") is not None and data.target_tokenizer.token_to_id("a") is None
    )
    assert (tmp_path / "d" / "source_tokenizer").is_dir() and (tmp_path / "d" / "target_tokenizer").is_dir()
    assert decoded(data, "val") == data.texts("val")


def test_an_existing_tokenizer_directory_is_used_as_it_is(tmp_path):
    tok = train_tokenizer("char", ["abcdefghij"])
    tok.save(tmp_path / "tok")
    prepare_seq2seq(["builtin:copy?length=3,size=20"], str(tmp_path / "tok"), tmp_path / "d")
    data = load_seq2seq(tmp_path / "d")
    assert data.source_tokenizer.vocab_size == tok.vocab_size
    assert not data.meta["tokenizers"]["source"]["trained_here"]


def test_a_target_tokenizer_without_an_end_token_is_refused_before_writing(tmp_path):
    with pytest.raises(TokenizerError, match="no end-of-text token"):
        prepare_seq2seq(
            ["builtin:copy?length=3,size=20"],
            "char",
            tmp_path / "d",
            tokenizer_options={"special_tokens": {"bos": "", "eos": ""}},
        )
    assert not (tmp_path / "d").exists()


def test_wordpiece_targets_start_with_cls_and_end_with_sep(tmp_path):
    meta = prepare_seq2seq(["builtin:copy?length=3,size=40"], "wordpiece", tmp_path / "d", vocab_size=60)
    tok = load_seq2seq(tmp_path / "d").target_tokenizer
    assert meta["target_ids"] == {"start": tok.cls_id, "end": tok.sep_id, "pad": tok.pad_id}


def test_loaders_refuse_the_other_kind_of_dataset(tmp_path):
    prepare_seq2seq(["builtin:copy?length=3,size=20"], "char", tmp_path / "s2s")
    text = tmp_path / "text.txt"
    text.write_text("hello world " * 50, encoding="utf-8")
    prepare_dataset([str(text)], "char", tmp_path / "lm")
    with pytest.raises(DataError, match="is a seq2seq dataset .* not a language-model one"):
        load_prepared(tmp_path / "s2s")
    with pytest.raises(DataError, match="is a language-model dataset .* not source/target pairs"):
        load_seq2seq(tmp_path / "lm")
    assert dataset_task(tmp_path / "lm") == "lm" and dataset_task(tmp_path / "nothing") is None
    with pytest.raises(OutputExistsError, match="not a prepared seq2seq dataset"):
        prepare_seq2seq(["builtin:copy?length=3,size=20"], "char", tmp_path / "lm", overwrite=True)


def test_overwrite_replaces_a_previous_seq2seq_dataset_only_when_asked(tmp_path):
    prepare_seq2seq(["builtin:copy?length=3,size=20"], "char", tmp_path / "d")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_seq2seq(["builtin:reverse?length=3,size=20"], "char", tmp_path / "d")
    prepare_seq2seq(["builtin:reverse?length=3,size=20,seed=2"], "char", tmp_path / "d", overwrite=True)
    assert all(s == t[::-1] for s, t in load_seq2seq(tmp_path / "d").texts("val"))


def test_a_damaged_dataset_says_so(tmp_path):
    prepare_seq2seq(["builtin:copy?length=3,size=20"], "char", tmp_path / "d")
    path = tmp_path / "d" / "train.target.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match="train.target.bin holds .* bytes but meta.json promises"):
        load_seq2seq(tmp_path / "d").pairs("train")
    with pytest.raises(DataError, match="no split 'test'"):
        load_seq2seq(tmp_path / "d").pairs("test")
