"""DPO: the reference's log-probabilities are computed once (counted forward passes) and equal a
fresh, unbatched computation; training on "GOOD letters over BAD letters" pairs raises a
programmatic reward (the share of GOOD letters in sampled completions) clearly above the starting
policy's, with the KL to the reference, estimated on the samples, below a stated bound."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.align.preference_settings import DPOConfig
from lmforge.errors import CheckpointError
from tests.align.pref_helpers import (
    BARE_TEMPLATE,
    good_fraction,
    make_causal_run,
    separable_pairs,
    write_jsonl,
)

STEPS, EVAL_EVERY, EVAL_BATCH = 40, 20, 32  # eval batch: max(2 * batch_size, 32)
SAMPLES, NEW_TOKENS = 96, 8
KL_BOUND = 12.0  # nats per completion of at most 8 tokens (1.5 per token); this run measures about 8.8


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    from lmforge.align.dpo import plan_dpo, run_dpo

    root = tmp_path_factory.mktemp("dpo")
    base = make_causal_run(root / "base", seed=3, chat_template=BARE_TEMPLATE)
    train = write_jsonl(root / "train.jsonl", separable_pairs(64, seed=4))
    val = write_jsonl(root / "val.jsonl", separable_pairs(40, seed=5))
    settings = DPOConfig(max_steps=STEPS, batch_size=16, lr=5e-3, warmup_steps=3, eval_every=EVAL_EVERY,
                         beta=0.1, seed=0, device="cpu", precision="fp32")  # fmt: skip
    job = plan_dpo(checkpoint=base.path, train=train, val=val, out=root / "dpo", settings=settings)
    calls = []
    job.reference.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    summary = run_dpo(job, progress=False)
    return base, job, summary, calls


def _logps_alone(model, prompt: list[int], response: list[int]) -> float:
    """sum log p(response token | everything before), one unpadded row, log-softmax by hand."""
    ids = torch.tensor([prompt + response])
    logits = model(ids).logits[0, :-1].double()
    logps = F.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return logps[len(prompt) - 1 :].sum().item()


def test_reference_logps_are_computed_once_and_equal_a_fresh_computation(dpo_run):
    base, job, summary, calls = dpo_run
    # one forward pass per batch of the reference pass, over 2B rows each, and none during the steps
    expected = math.ceil(len(job.train_pairs) / EVAL_BATCH) + math.ceil(len(job.val_pairs) / EVAL_BATCH)
    assert len(calls) == expected and sum(calls) == 2 * (len(job.train_pairs) + len(job.val_pairs))
    assert job.reference is None and summary["steps"] == STEPS
    fresh = base.load_model()
    for split, pairs in (("train", job.train_pairs), ("val", job.val_pairs)):
        chosen, rejected = job.reference_cache[split]
        for index in range(0, len(pairs), 7):
            pair = pairs[index]
            assert chosen[index].item() == pytest.approx(
                _logps_alone(fresh, pair.prompt, pair.chosen), abs=1e-4
            )
            assert rejected[index].item() == pytest.approx(
                _logps_alone(fresh, pair.prompt, pair.rejected), abs=1e-4
            )


def test_metrics_start_at_the_reference_and_log_margins_accuracy_and_rewards(dpo_run):
    from lmforge.train.metrics import read_metrics

    _, job, summary, _ = dpo_run
    records = read_metrics(job.run_path / "metrics.jsonl")
    evaluations = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evaluations] == [0, EVAL_EVERY, STEPS]
    first = evaluations[0]  # the policy is the reference: every implicit reward 0, loss log 2
    assert first["val_loss"] == pytest.approx(math.log(2), abs=1e-5) and first["val_margin"] == 0
    assert evaluations[-1]["val_margin"] > 0 and evaluations[-1]["val_accuracy"] > 0.9
    steps = [r for r in records if "train_margin" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert {"train_accuracy", "train_chosen_reward", "train_rejected_reward"} <= set(steps[0])
    assert summary["margin"] == pytest.approx(summary["chosen_reward"] - summary["rejected_reward"], abs=1e-5)


def test_best_is_the_most_accurate_evaluation_not_the_lowest_loss(dpo_run):
    from lmforge.align.dpo import rank_by_accuracy
    from lmforge.train.metrics import read_metrics

    _, job, summary, _ = dpo_run
    # step 0 (the reference) against a later policy whose held-out loss rose while it ranks more
    # pairs right, as in bf16 runs: the later one is best
    assert rank_by_accuracy({"loss": math.log(2), "accuracy": 0.0}) > rank_by_accuracy(
        {"loss": 0.6953, "accuracy": 0.603}
    )
    evaluations = [r for r in read_metrics(job.run_path / "metrics.jsonl") if "val_loss" in r]
    best = min(evaluations, key=lambda r: (-r["val_accuracy"], r["val_loss"]))
    # the summary evaluates best/ on all the held-out pairs, the same pairs each evaluation used
    assert summary["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert summary["val_loss"] == pytest.approx(best["val_loss"], abs=1e-5)


def _sample(model, tokenizer, tokenizer_dir, prompts, seed):
    from lmforge.align.preferences import PairEncoder
    from lmforge.generate import GenerationConfig, generate

    encoder = PairEncoder(tokenizer, tokenizer_dir, limit=48)  # the run's chat template
    ids = [encoder.prompt_ids(p) for p in prompts]
    config = GenerationConfig(
        strategy="sample", max_new_tokens=NEW_TOKENS, eos_id=tokenizer.document_separator_id
    )
    results = generate(model, ids, config, generator=torch.Generator().manual_seed(seed), tokenizer=tokenizer)
    return ids, [r[0] for r in results]


def _sequence_logp(model, prompt, continuation_ids) -> float:
    return _logps_alone(model, prompt, continuation_ids) if continuation_ids else 0.0


def test_dpo_raises_a_programmatic_reward_within_a_kl_bound(dpo_run):
    from lmforge.run import Run

    base, job, summary, _ = dpo_run
    tokenizer = base.load_tokenizer()
    prompts = [p["prompt"] for p in separable_pairs(SAMPLES, seed=6)]
    reference, policy = base.load_model(), Run(summary["run"]).load_model()
    _, before = _sample(reference, tokenizer, base.tokenizer_dir, prompts, seed=7)
    prompt_ids, after = _sample(policy, tokenizer, base.tokenizer_dir, prompts, seed=7)
    assert prompt_ids[0] == tokenizer.encode(prompts[0] + ":")  # the bare template
    reward_before = sum(good_fraction(prompts, [c.text for c in before])) / SAMPLES
    reward_after = sum(good_fraction(prompts, [c.text for c in after])) / SAMPLES
    assert reward_after > reward_before + 0.3, (reward_before, reward_after)
    # KL(policy || reference) per completion, estimated on the policy's own samples: mean of
    # log pi(y) - log ref(y) over the sampled tokens (end-of-text included when it ended one)
    eos = tokenizer.document_separator_id
    kl = 0.0
    for prompt, continuation in zip(prompt_ids, after):
        tokens = continuation.ids + ([eos] if continuation.finish == "eos" else [])
        kl += _sequence_logp(policy, prompt, tokens) - _sequence_logp(reference, prompt, tokens)
    kl /= SAMPLES
    assert 0 < kl < KL_BOUND, kl


def test_the_dpo_run_is_a_plain_causal_run(dpo_run):
    from lmforge.run import Run

    _, _, summary, _ = dpo_run
    run = Run(summary["run"])
    config = run.read_config()
    assert config["task"]["kind"] == "dpo" and config["model"]["num_labels"] == 0
    assert run.load_model().lm_kind == "causal"


def test_dpo_refuses_a_reward_model_run(tmp_path):
    from lmforge.align.dpo import plan_dpo

    base = make_causal_run(tmp_path / "base")
    config = base.read_config()
    base.write_config({**config, "task": {"kind": "reward"}})
    pairs = write_jsonl(tmp_path / "p.jsonl", separable_pairs(4, seed=0))
    with pytest.raises(CheckpointError, match="is a reward model, not a language model"):
        plan_dpo(
            checkpoint=base.path,
            train=pairs,
            val=pairs,
            out=tmp_path / "out",
            settings=DPOConfig(max_steps=1),
        )


@pytest.mark.slow
def test_dpo_with_lora_trains_adapters_and_saves_a_plain_run(tmp_path):
    """LoRA (peft): only the adapters train, the reference is the untouched base, and the saved run
    is a plain GPT whose merged weights differ from the base's."""
    from lmforge.align.dpo import plan_dpo, run_dpo
    from lmforge.finetune.lora import LoRASettings
    from lmforge.run import Run

    base = make_causal_run(tmp_path / "base", seed=3)
    pairs = write_jsonl(tmp_path / "p.jsonl", separable_pairs(16, seed=4))
    settings = DPOConfig(max_steps=4, batch_size=4, lr=1e-2, warmup_steps=0, device="cpu", precision="fp32")
    job = plan_dpo(checkpoint=base.path, train=pairs, val=pairs, out=tmp_path / "dpo", settings=settings,
                   lora=LoRASettings(lora_rank=4))  # fmt: skip
    assert job.lora_rank == 4 and job.trainable < job.net.num_parameters() // 4
    summary = run_dpo(job, progress=False)
    assert summary["margin"] > 0
    before, after = base.load_model().state_dict(), Run(summary["run"]).load_model("last").state_dict()
    assert set(before) == set(after)
    assert any(not torch.equal(before[name], after[name]) for name in before if "c_attn" in name)
