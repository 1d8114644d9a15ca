"""The reward model: pairs encoded in the align/ layout, the head read at the last real token
(padding changes nothing), >= 90% held-out accuracy on a separable preference set, and the run
loading back as a reward function that scores as training did."""

from __future__ import annotations

import pytest
import torch

from lmforge.align.preference_settings import RewardConfig
from lmforge.align.preferences import PairEncoder, PreferencePair, collate_pairs, read_preferences
from lmforge.errors import CheckpointError, DataError
from lmforge.tokenizers.chat import ChatTemplate
from tests.align.pref_helpers import make_causal_run, separable_pairs, write_jsonl


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_causal_run(tmp_path_factory.mktemp("rm") / "base", seed=0)


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    from lmforge.align.reward import plan_reward, run_reward

    root = tmp_path_factory.mktemp("rm-data")
    train = write_jsonl(root / "train.jsonl", separable_pairs(96, seed=1))
    val = write_jsonl(root / "val.jsonl", separable_pairs(48, seed=2))
    settings = RewardConfig(max_steps=40, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=20,
                            seed=0, device="cpu", precision="fp32")  # fmt: skip
    job = plan_reward(checkpoint=base.path, train=train, val=val, out=root / "rm", settings=settings)
    return job, run_reward(job, progress=False), val


def test_pairs_become_chosen_rows_then_rejected_rows_with_the_response_masked(base):
    tokenizer = base.load_tokenizer()
    encoder = PairEncoder(tokenizer, base.tokenizer_dir, limit=48)
    pairs = [PreferencePair("hi", "aei", "bc"), PreferencePair("hello", "o", "dfgb")]
    split = encoder.encode(pairs, "test:")
    batch = collate_pairs(split.pairs, pad_id=0)
    eos = tokenizer.document_separator_id
    prompt_text = ChatTemplate().render([{"role": "user", "content": "hello"}], add_generation_prompt=True)
    assert prompt_text == "User: hello\n\nAssistant:"
    assert split.cut == 0 and split.dropped == 0 and batch["input_ids"].shape[0] == 4
    # row 1 is pair 2's chosen, row 3 its rejected; each = prompt + response + end-of-text
    for row, response in ((1, "o"), (3, "dfgb")):
        length = int(batch["attention_mask"][row].sum())
        # the assistant turn as the default template renders it (and SFT trains it), then end-of-text
        rendered = f" {response}\n\n"
        expected = tokenizer.encode(prompt_text) + tokenizer.encode(rendered) + [eos]
        assert batch["input_ids"][row, :length].tolist() == expected
        mask = batch["response_mask"][row].tolist()
        assert mask == [0] * len(prompt_text) + [1] * (len(rendered) + 1) + [0] * (len(mask) - length)


def test_a_long_response_is_cut_a_long_prompt_left_out_and_no_fitting_pair_refused(base):
    encoder = PairEncoder(base.load_tokenizer(), base.tokenizer_dir, limit=30)
    too_long = PreferencePair("x" * 30, "a", "b")
    split = encoder.encode([PreferencePair("hey", "a" * 40, "b"), too_long], "prefs.jsonl:")
    (pair,) = split.pairs
    assert split.cut == 1 and split.dropped == 1
    assert len(pair.prompt) + len(pair.chosen) == 30 and pair.prompt == encoder.prompt_ids("hey")
    with pytest.raises(DataError, match="prefs.jsonl: no pair fits the model's context of 30 tokens"):
        encoder.encode([too_long], "prefs.jsonl:")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "p", "chosen": "c"}', "no 'rejected' field"),
        ('{"prompt": "p", "chosen": 3, "rejected": "r"}', "int"),
        ("not json", "not a JSON object"),
        ('["p", "c", "r"]', "expected an object"),
    ],
)
def test_bad_rows_are_one_line_naming_the_line(tmp_path, line, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as error:
        read_preferences(path)
    assert f"{path}:2" in str(error.value) and "\n" not in str(error.value)


def test_the_reward_reads_the_last_real_token_so_padding_changes_nothing(trained):
    job, summary, _ = trained
    from lmforge.align.reward_model import load_reward_model

    rm = load_reward_model(summary["run"])
    prompts, responses = ["abc", "defgh"], ["aeiouaeiou", "b"]
    batched = rm.score(prompts, responses)
    alone = [rm.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_reward_model_separates_held_out_pairs(trained):
    job, summary, val = trained
    assert summary["accuracy"] >= 0.9, summary
    assert summary["margin"] > 0
    # the saved run, loaded back, agrees with the recipe's final evaluation
    from lmforge.align.reward_model import load_reward_model, reward_function_from_run

    rm = load_reward_model(summary["run"])
    pairs = read_preferences(val)
    prompts = [p.prompt for p in pairs]
    chosen = rm.score(prompts, [p.chosen for p in pairs])
    rejected = rm.score(prompts, [p.rejected for p in pairs])
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
    assert accuracy == pytest.approx(summary["accuracy"])
    margin = sum(c - r for c, r in zip(chosen, rejected)) / len(pairs)
    assert margin == pytest.approx(summary["margin"], rel=1e-4)
    # as PPO's reward function it scores a generated continuation, which an SFT model writes in the
    # template's form (" text\n\n" with the default one): the same tokens, the same rewards
    reward = reward_function_from_run(summary["run"])
    assert reward(prompts, [f" {p.chosen}\n\n" for p in pairs]) == pytest.approx(chosen, abs=1e-5)


def test_metrics_log_held_out_accuracy_and_margin_per_evaluation(trained):
    from lmforge.train.metrics import read_metrics

    job, summary, _ = trained
    evaluations = [r for r in read_metrics(job.run_path / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in evaluations] == [0, 20, 40]
    assert all({"val_accuracy", "val_margin"} <= set(r) for r in evaluations)
    assert evaluations[0]["val_accuracy"] < evaluations[-1]["val_accuracy"]
    assert (job.run_path / "loss.png").stat().st_size > 0


def test_a_bert_run_cannot_be_a_reward_model(tmp_path):
    from lmforge.align.reward import plan_reward
    from tests.tiny_run import make_bert_run

    bert = make_bert_run(tmp_path / "bert")
    pairs = write_jsonl(tmp_path / "p.jsonl", separable_pairs(4, seed=0))
    with pytest.raises(CheckpointError, match="causal Transformer run .*gpt.* bert model"):
        plan_reward(checkpoint=bert.path, train=pairs, val=pairs, out=tmp_path / "rm",
                    settings=RewardConfig(max_steps=1))  # fmt: skip


def test_loading_a_plain_run_as_a_reward_model_says_what_it_is(base):
    from lmforge.align.reward_model import load_reward_model

    with pytest.raises(CheckpointError, match="not a reward model .*lmforge align reward"):
        load_reward_model(base.path)
    assert torch.is_grad_enabled()
