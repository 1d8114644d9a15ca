"""The seq2seq branch of the pretraining recipe at library level: what the plan takes from the
dataset's tokenizers, the batches it trains and validates on, and the lengths it truncates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import UserInputError
from lmforge.recipe import fixed_eval_set, plan_pretraining, training_batches
from lmforge.recipe_seq2seq import longest_row, truncation_notes


@pytest.fixture(scope="module")
def sort_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sort") / "data"
    spec = "builtin:sort?length=2-9,size=120,alphabet=6"
    assert (
        main(["prepare", "--task", "seq2seq", "--data", spec, "--tokenizer", "char", "--out", str(out)]) == 0
    )
    return out


def plan(data, tmp_path, **train):
    return plan_pretraining(
        data=str(data),
        out=tmp_path / "run",
        model="rnn-attn",
        shape={"hidden_size": 16, "n_embd": 16},
        train={"max_steps": 2, "batch_size": 8, "eval_batches": 2, **train},
    )


def test_the_plan_takes_vocabulary_and_start_id_from_the_target_tokenizer(sort_data, tmp_path):
    job = plan(sort_data, tmp_path)
    tokenizer = job.dataset.target_tokenizer
    assert job.net.config.vocab_size == tokenizer.vocab_size == 8  # 6 letters, end-of-text, <unk>
    assert job.net.config.decoder_start_token_id == tokenizer.bos_id
    assert job.extra_config["data"]["task"] == "seq2seq"
    header = "\n".join(job.describe())
    assert "108 train / 12 val pairs" in header and "vocab 8" in header


def test_training_batches_are_the_contracts_batches_of_training_pairs(sort_data, tmp_path):
    job = plan(sort_data, tmp_path)
    batches, _ = training_batches(job)
    pairs = job.dataset.pairs("train")
    known = {(tuple(pairs.sources[i].tolist()), tuple(pairs.targets[i].tolist())) for i in range(len(pairs))}
    batch = batches.next_batch()
    assert set(batch) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}
    assert batch["input_ids"].shape[0] == 8
    for row in range(8):  # every row is a training pair: its source, and its target then the end token
        source = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        labels = [t for t in batch["labels"][row].tolist() if t != -100]
        assert labels[-1] == job.dataset.target_ids["end"]
        assert (tuple(source), tuple(labels[:-1])) in known
        assert batch["decoder_input_ids"][row, 0] == job.net.config.decoder_start_token_id


def test_validation_batches_cover_the_split_the_same_way_every_time(sort_data, tmp_path):
    job = plan(sort_data, tmp_path, eval_batches=5)
    first, second = fixed_eval_set(job), fixed_eval_set(job)
    assert sum(len(b["input_ids"]) for b in first) == 12  # all 12 val pairs: fewer than 5 batches of 8
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, second) for k in a)


def test_lengths_over_the_models_limits_are_counted_and_bound_the_memory_check(sort_data, tmp_path):
    dataset = plan(sort_data, tmp_path).dataset
    pairs = dataset.pairs("train")
    lengths = [len(pairs.sources[i]) for i in range(len(pairs))]
    limited = SimpleNamespace(context_limit=5, target_limit=4)  # 4 decoder inputs: start + 3 target tokens
    notes = truncation_notes(dataset, limited)
    over_source = sum(n > 5 for n in lengths)
    over_target = sum(n + 1 > 4 for n in lengths)  # sorting keeps the length
    assert len(notes) == 2
    assert f"{over_source:,} of {len(pairs):,} training sources" in notes[0]
    assert f"{over_target:,} of {len(pairs):,} training targets" in notes[1]
    assert longest_row(dataset, limited) == 5
    unlimited = SimpleNamespace(context_limit=None, target_limit=None)
    assert truncation_notes(dataset, unlimited) == [] and longest_row(dataset, unlimited) == 9 + 1


def test_a_mixture_of_pair_datasets_is_refused(sort_data, tmp_path):
    import shutil

    shutil.copytree(sort_data, tmp_path / "other")
    with pytest.raises(UserInputError, match="mixture"):
        plan_pretraining(
            data=[f"{sort_data}:0.5", f"{tmp_path / 'other'}:0.5"],
            out=tmp_path / "run",
            model="rnn-attn",
            train={"max_steps": 2},
        )
