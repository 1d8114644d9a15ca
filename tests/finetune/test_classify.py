"""Classification fine-tuning: the metrics against hand counts and scikit-learn, the heads'
pooling against the unpadded text alone, the built-in task's split, the examples' errors, a
learnable task learnt, and ``finetune classify`` / ``predict`` from the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmforge.cli import main
from lmforge.errors import DataError
from lmforge.finetune.batches import ShuffledBatches, collate, encode_examples
from lmforge.finetune.classify import classifier_from, load_labelled
from lmforge.finetune.examples import Example, Fields, read_examples
from lmforge.finetune.metrics import accuracy, confusion_matrix, confusion_table, macro_f1
from lmforge.run import Run
from tests.tiny_run import make_bert_run, make_run

# --------------------------------------------------------------------------- metrics


def test_accuracy_and_macro_f1_equal_hand_counts():
    true = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    counts = confusion_matrix(true, predicted, 3)
    assert counts.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy(counts) == pytest.approx(4 / 6)
    # F1 per class: 2*tp / (2*tp + fp + fn): class 0: 4/5, class 1: 2/4, class 2: 2/3
    assert macro_f1(counts) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)


def test_macro_f1_equals_scikit_learn_on_random_labels():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        true, predicted = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
        present = sorted(set(true) | set(predicted))
        expected = sklearn_metrics.f1_score(true, predicted, average="macro", labels=present)
        assert macro_f1(confusion_matrix(true, predicted, 5)) == pytest.approx(expected)


def test_confusion_table_has_a_row_per_class_and_its_f1():
    table = confusion_table(np.array([[3, 1], [0, 2]]), ["spam", "ham"])
    lines = table.splitlines()
    assert len(lines) == 3 and lines[1].startswith("0 spam") and lines[2].startswith("1 ham")
    assert lines[1].split()[-1] == f"{2 * 3 / (2 * 3 + 1):.3f}"


# --------------------------------------------------------------------------- the built-in task


def test_stdlib_topics_split_by_module_with_every_label_in_both_splits():
    train = read_examples("builtin:stdlib-topics")
    val = read_examples("builtin:stdlib-topics@val")
    from lmforge.data.stdlib_topics import MIN_PER_SPLIT, PACKAGES, labels, stdlib_topics

    splits = stdlib_topics()
    train_modules = {row["module"] for row in splits["train"]}
    val_modules = {row["module"] for row in splits["val"]}
    assert not train_modules & val_modules
    assert len(labels()) >= len(PACKAGES) - 1  # tkinter's sources are a separate package on Debian
    for split in (train, val):
        counts = {label: sum(e.label == label for e in split) for label in PACKAGES}
        assert {label for label, count in counts.items() if count} == set(labels())
        assert min(counts[label] for label in labels()) >= MIN_PER_SPLIT, counts
    assert all(row["module"].split(".")[0] == row["label"] for row in splits["train"] + splits["val"])
    assert len(train) > 4 * len(val) / 2


def test_a_package_whose_sources_are_missing_is_left_out_of_both_splits(monkeypatch):
    """A Python without tkinter's sources (Debian's python3 without python3-tk): 7 labels, each
    in both splits, rather than a label that no example carries."""
    from lmforge.data import stdlib_topics as topics

    documents = topics.builtin_documents("stdlib-docs")
    without = [(module, text) for module, text in documents if module.split(".")[0] != "tkinter"]
    monkeypatch.setattr(topics, "builtin_documents", lambda name: without)
    topics.stdlib_topics.cache_clear()
    try:
        splits = topics.stdlib_topics()
        assert "tkinter" not in topics.labels() and len(topics.labels()) == len(topics.PACKAGES) - 1
        for split in ("train", "val"):
            assert {row["label"] for row in splits[split]} == set(topics.labels())
    finally:
        topics.stdlib_topics.cache_clear()


# --------------------------------------------------------------------------- reading examples


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "a", "label": "x"}', '{"text": "b"}'], ":2: no 'label' label"),
        (['{"text": "a", "label": "x"}', "{oops"], ":2: not a JSON object"),
        (['{"body": "a", "label": "x"}'], ":1: no 'text' field"),
        (['{"text": 3, "label": "x"}'], "holds int, not text"),
        ([], "holds no examples"),
    ],
)
def test_bad_example_files_name_the_line(lines, message, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_examples(path)


def test_csv_and_number_labels(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('text,label,other\n"hello, world",1,z\nbye,0,z\n', encoding="utf-8")
    assert read_examples(path) == [Example("hello, world", "1"), Example("bye", "0")]
    rows = [{"q": "a", "p": "b", "y": 1.0}]
    assert read_examples(write_jsonl(tmp_path / "p.jsonl", rows), Fields("q", "y", "p")) == [
        Example("a", "1", "b")
    ]


def test_single_class_and_unseen_validation_labels_are_refused(tmp_path):
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": "x"}] * 3)
    two = write_jsonl(tmp_path / "two.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    other = write_jsonl(tmp_path / "val.jsonl", [{"text": "c", "label": "z"}])
    with pytest.raises(DataError, match="at least two classes"):
        load_labelled(one, two, Fields())
    with pytest.raises(DataError, match="'z' never occur"):
        load_labelled(two, other, Fields())


# --------------------------------------------------------------------------- models and batches


def test_gpt_head_reads_the_last_real_token_whatever_the_padding(tmp_path):
    run = make_run(tmp_path / "gpt", kind="char")
    model = classifier_from(
        run, "gpt", run.read_config()["model"], ["a", "b", "c"], from_scratch=False
    ).eval()
    tokenizer = run.load_tokenizer()
    texts = [Example("Speak, speak.", "a"), Example("All:", "b"), Example("First Citizen", "c")]
    rows, _ = encode_examples(texts, tokenizer, "gpt", 16)
    assert rows[1].ids[-1] == tokenizer.document_separator_id  # text, then end-of-text
    batch = collate(rows, None, pad_id=0)
    with torch.no_grad():
        together = model.sequence_logits(batch["input_ids"], batch["attention_mask"])
        for index, row in enumerate(rows):
            alone = model.sequence_logits(torch.tensor([row.ids]))
            torch.testing.assert_close(together[index : index + 1], alone, rtol=0, atol=1e-5)
            hidden, _ = model.encode(torch.tensor([row.ids]))
            torch.testing.assert_close(alone, model.score(hidden[:, -1]), rtol=0, atol=0)


def test_bert_rows_are_cls_text_sep_pair_sep_and_padding_changes_nothing(tmp_path):
    run = make_bert_run(tmp_path / "bert")
    tokenizer = run.load_tokenizer()
    model = classifier_from(run, "bert", run.read_config()["model"], ["a", "b"], from_scratch=False).eval()
    rows, _ = encode_examples(
        [Example("speak", "a", "first citizen"), Example("all", "b")], tokenizer, "cls_text_sep", 32
    )
    first = rows[0]
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    text, pair = tokenizer.encode("speak"), tokenizer.encode("first citizen")
    assert first.ids == [cls, *text, sep, *pair, sep]
    assert first.types == [0] * (len(text) + 2) + [1] * (len(pair) + 1)
    batch = collate(rows, None, pad_id=tokenizer.pad_id)
    with torch.no_grad():
        together = model.sequence_logits(**batch)
        alone = model.sequence_logits(torch.tensor([rows[1].ids]), None, torch.tensor([rows[1].types]))
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=1e-5)


def test_a_pair_too_long_loses_tokens_from_the_longer_text_first(tmp_path):
    run = make_bert_run(tmp_path / "bert")
    tokenizer = run.load_tokenizer()
    long, short = "first citizen " * 20, "speak"
    rows, cut = encode_examples([Example(long, "a", short)], tokenizer, "cls_text_sep", 16)
    assert cut == 1 and len(rows[0].ids) == 16
    assert rows[0].types.count(1) == len(tokenizer.encode(short)) + 1  # the short pair is whole


def test_the_pretrained_trunk_is_loaded_and_the_head_is_new(tmp_path):
    run = make_bert_run(tmp_path / "bert")
    saved = run.load_model()
    model = classifier_from(run, "bert", run.read_config()["model"], ["a", "b", "c"], from_scratch=False)
    scratch = classifier_from(run, "bert", run.read_config()["model"], ["a", "b", "c"], from_scratch=True)
    torch.testing.assert_close(model.h[1].mlp.c_fc.weight, saved.h[1].mlp.c_fc.weight, rtol=0, atol=0)
    assert not torch.equal(scratch.h[1].mlp.c_fc.weight, saved.h[1].mlp.c_fc.weight)
    assert model.classifier.weight.shape == (3, 16) and not hasattr(model, "lm_head")


def test_shuffled_batches_cover_every_example_each_epoch_and_resume_exactly():
    rows = [type("Row", (), {"ids": [i + 1], "types": [0]})() for i in range(10)]
    source = ShuffledBatches(rows, list(range(10)), batch_size=5, pad_id=0, seed=3)
    epoch = torch.cat([source.next_batch()["labels"], source.next_batch()["labels"]])
    assert sorted(epoch.tolist()) == list(range(10))
    state = source.state_dict()
    ahead = [source.next_batch()["labels"].tolist() for _ in range(3)]
    again = ShuffledBatches(rows, list(range(10)), batch_size=5, pad_id=0, seed=3)
    again.load_state_dict(state)
    assert [again.next_batch()["labels"].tolist() for _ in range(3)] == ahead


# --------------------------------------------------------------------------- end to end


def easy_task(tmp_path, n: int = 48) -> tuple[str, str]:
    """Two classes a model tells apart from one word: a learnability check, seconds to learn."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(n):
        label = ["citizen", "all"][index % 2]
        words = ["first", "citizen", "proceed"] if label == "citizen" else ["speak", "famish", "resolved"]
        rows.append({"text": " ".join(rng.choice(words, 4)), "label": label})
    return write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "val.jsonl", rows[: n // 3])


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_finetune_learns_an_easy_task_and_predict_reads_the_run(family, tmp_path, capsys):
    base = make_run(tmp_path / "base", kind="word") if family == "gpt" else make_bert_run(tmp_path / "base")
    train, val = easy_task(tmp_path)
    code, out, err = cli(
        capsys, "finetune", "classify", "--checkpoint", base.path, "--train", train, "--val", val,
        "--out", tmp_path / "clf", "--max-steps", 40, "--lr", 3e-3, "--eval-every", 20, "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["accuracy"] >= 0.9 and summary["labels"] == ["all", "citizen"]
    assert np.array(summary["confusion"]).sum() == 16
    assert (tmp_path / "clf" / "confusion.png").stat().st_size > 1000
    config = Run.open(tmp_path / "clf").read_config()
    assert config["task"]["labels"] == ["all", "citizen"] and config["model"]["num_labels"] == 2
    code, out, err = cli(
        capsys, "predict", "--checkpoint", tmp_path / "clf", "--text", "speak famish", "first first", "--json"
    )
    assert code == 0, err
    predictions = json.loads(out)["predictions"]
    assert [p["label"] for p in predictions] == ["all", "citizen"]
    for p in predictions:
        assert math.isclose(sum(p["probs"].values()), 1.0, abs_tol=1e-5)
        assert list(p["probs"].values()) == sorted(p["probs"].values(), reverse=True)


def test_a_converted_hugging_face_bert_fine_tunes_and_exports_with_the_same_logits(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from tests.interop.test_bert_convert import WORDS, save_hf

    save_hf(tmp_path / "hf", "BertModel")
    assert cli(capsys, "convert", "--from-hf", tmp_path / "hf", "--out", tmp_path / "base")[0] == 0
    rows = [
        {"text": t, "label": t.split()[0]} for t in ["hello world", "the cafe", "hello ok", "the tal"] * 4
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    code, _, err = cli(
        capsys, "finetune", "classify", "--checkpoint", tmp_path / "base", "--train", data, "--val", data,
        "--out", tmp_path / "clf", "--max-steps", 3, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert cli(capsys, "convert", "--to-hf", tmp_path / "clf", "--out", tmp_path / "hf-clf")[0] == 0
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf-clf").eval()
    ours = Run.open(tmp_path / "clf").load_model()
    batch = {
        "input_ids": torch.tensor([[2, 10, 12, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0]]),
    }
    assert len(WORDS) > 12
    with torch.no_grad():
        torch.testing.assert_close(ours.sequence_logits(**batch), theirs(**batch).logits, rtol=0, atol=1e-5)
    assert theirs.config.id2label == {0: "hello", 1: "the"}


def test_bad_input_is_one_line_and_leaves_no_run(tmp_path, capsys):
    base = make_run(tmp_path / "base", kind="char")
    train, val = easy_task(tmp_path)
    lstm = tmp_path / "lstm"
    from lmforge.models.rnn import LSTMLM, RNNConfig  # noqa: F401 - the family a classifier refuses

    run = Run.create(lstm)
    run.save_tokenizer(base.load_tokenizer())
    run.write_config({"family": "lstm", "model": {"vocab_size": 10}})
    for argv, message in [
        (
            ["--checkpoint", lstm, "--train", train, "--val", val],
            "holds a lstm model, which has no classifier head",
        ),
        (["--checkpoint", base.path, "--train", tmp_path / "missing.jsonl", "--val", val], "does not exist"),
        (["--checkpoint", base.path, "--train", train], "give --val"),
        (
            ["--checkpoint", base.path, "--train", train, "--val", val, "--epochs", 0],
            "--epochs must be positive",
        ),
    ]:
        code, out, err = cli(capsys, "finetune", "classify", *argv, "--out", tmp_path / "x", "--max-steps", 2)
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "x").exists()
    code, _, err = cli(capsys, "predict", "--checkpoint", base.path, "--text", "hi")
    assert code == 2 and "is not a classifier" in err


def test_texts_longer_than_the_context_are_cut_with_a_count(tmp_path, capsys):
    base = make_run(tmp_path / "base", kind="char")  # context 16 characters
    train, val = easy_task(tmp_path)
    code, out, err = cli(
        capsys, "finetune", "classify", "--checkpoint", base.path, "--train", train, "--val", val,
        "--out", tmp_path / "clf", "--max-steps", 1, "--no-progress",
    )  # fmt: skip
    assert code == 0 and "cut to the context of 16 tokens: 48 training and 16 validation texts" in out


def test_lora_fine_tuning_trains_adapters_only_and_saves_a_plain_merged_run(tmp_path, capsys):
    pytest.importorskip("peft")
    from lmforge.finetune.lora import apply_lora, trainable_parameters

    base = make_run(tmp_path / "base", kind="word")
    train, val = easy_task(tmp_path)
    code, out, err = cli(
        capsys, "finetune", "classify", "--checkpoint", base.path, "--train", train, "--val", val,
        "--out", tmp_path / "clf", "--max-steps", 40, "--lr", 1e-2, "--eval-every", 20, "--lora-rank", 2, "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    fresh = classifier_from(base, "gpt", base.read_config()["model"], ["all", "citizen"], from_scratch=False)
    assert summary["trainable_parameters"] == trainable_parameters(apply_lora(fresh, 2))[0]
    assert summary["trainable_parameters"] < summary["parameters"] / 4 and summary["accuracy"] >= 0.9
    tuned = Run.open(tmp_path / "clf").load_model()  # a plain checkpoint: no adapter names in it
    pretrained = base.load_model()
    assert not torch.equal(tuned.h[0].attn.c_attn.weight, pretrained.h[0].attn.c_attn.weight)  # merged
    torch.testing.assert_close(tuned.wte.weight, pretrained.wte.weight, rtol=0, atol=0)  # frozen


def test_collate_rounds_the_width_up_to_a_multiple_of_16_within_the_context():
    from lmforge.finetune.batches import EncodedRow

    rows = [EncodedRow([5] * 3, [0] * 3), EncodedRow([6] * 17, [0] * 17)]
    assert collate(rows, None, pad_id=0)["input_ids"].shape == (2, 17)  # no context: the longest row
    batch = collate(rows, [0, 1], pad_id=0, context=128)
    assert batch["input_ids"].shape == (2, 32)
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 17]  # the rounding is padding
    assert (batch["input_ids"][1, 17:] == 0).all() and batch["labels"].tolist() == [0, 1]
    assert collate(rows, None, pad_id=0, context=20)["input_ids"].shape == (2, 20)  # never past it
    assert collate(rows[:1], None, pad_id=0, context=2)["input_ids"].shape == (1, 3)  # nor under a row
