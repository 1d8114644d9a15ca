"""lmforge's DPO and PPO steps against TRL's on the same model and data, interleaved (part of
``rlhf.py``'s benchmark).

One policy run (a GPT with GPT-2's architecture) is converted to Hugging Face GPT-2 for TRL; both
sides then train on the same rows with the same batch sizes and optimizer settings:

- DPO: ``batch_size`` preference pairs from builtin:stdlib-prefs, exactly one batch of them, so
  every step of either side sees the same batch whatever order its data loader shuffles in; the
  per-step losses of the two must then agree (the first is ln 2 on both: policy = reference).
- PPO: ``batch_size`` prompts from builtin:stdlib-instruct per update, ``ppo_epochs`` passes of
  ``batch_size / minibatch_size`` minibatch steps, ``response_length`` sampled tokens per prompt on
  both sides (TRL: no stop token; lmforge: ``min_new_tokens`` = ``response_length``, end-of-text forbidden).
  Rewards come from a reward model of the policy's size on both sides. Sampled responses differ,
  so the losses compare as magnitudes, not step by step.

Each round runs lmforge DPO, TRL DPO, lmforge PPO, TRL PPO in turn, so load from other processes
hits all alike. A side's step time is the median over its steps after the first (warm-up); the
ratio is TRL's median step time over lmforge's, per round, and its median over rounds is reported.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rlhf_trl import TRL_PPO_PYTHON, DPOSettings, PPOSettings, trl_dpo, trl_ppo


def median_step(step_times: list[float]) -> float:
    """The median step time after the first (the first carries one-off allocation and warm-up)."""
    kept = step_times[1:] if len(step_times) > 1 else step_times
    return statistics.median(kept)


def step_times_from_metrics(metrics_path: Path, key: str) -> tuple[list[float], list[float]]:
    """(step times, values of ``key``) from an lmforge metrics.jsonl: consecutive ``elapsed_s``
    differences of the records carrying ``key`` (the first step's from the start of training)."""
    times, values, last = [], [], 0.0
    for line in Path(metrics_path).read_text().splitlines():
        record = json.loads(line)
        if key in record and "elapsed_s" in record:
            times.append(record["elapsed_s"] - last)
            values.append(record[key])
            last = record["elapsed_s"]
    return times, values


def race_rows(
    pairs: list[dict], prompts: list[str], template, tokenizer, block: int, dpo_batch: int, ppo: PPOSettings
):
    """The DPO pairs and PPO prompts both sides train on: the first that fit the context whole, so
    neither side truncates (TRL keeps the start, lmforge cuts responses: not the same rows). lmforge
    encodes a pair as SFT trains a one-turn chat (``prompt_response_ids``: the rendered prompt, then
    the assistant's text as the template writes it, e.g. " answer\n\n", then end-of-text); TRL gets
    that same text and tokenizes prompt + answer as one string before appending end-of-text, so only
    pairs that tokenize the same either way (no token across the boundary) are kept."""
    from lmforge.finetune.chat_data import as_messages, prompt_response_ids
    from lmforge.tokenizers.chat import chat_segments, encode_chat

    def rendered(prompt: str) -> str:
        return template.render([{"role": "user", "content": prompt}], add_generation_prompt=True)

    def answer_text(prompt: str, answer: str) -> str:
        segments = chat_segments(template, as_messages({"prompt": prompt, "completion": answer}))
        return next(text for text, is_response in segments if is_response)

    def same_ids(prompt: str, answer: str) -> bool:
        head, reply = prompt_response_ids(tokenizer, template, prompt, answer)
        text = rendered(prompt) + answer_text(prompt, answer)
        fits = len(head) + len(reply) <= block
        return fits and encode_chat(tokenizer, text) + [tokenizer.document_separator_id] == head + reply

    chosen = [p for p in pairs if same_ids(p["prompt"], p["chosen"]) and same_ids(p["prompt"], p["rejected"])]
    chosen = chosen[:dpo_batch]
    room = block - ppo.response_length
    kept = [p for p in prompts if len(encode_chat(tokenizer, rendered(p))) <= room][: ppo.batch_size]
    trl_pairs = [
        {
            "prompt": rendered(p["prompt"]),
            "chosen": answer_text(p["prompt"], p["chosen"]),
            "rejected": answer_text(p["prompt"], p["rejected"]),
        }
        for p in chosen
    ]
    return chosen, trl_pairs, kept, [rendered(p) for p in kept]


def lmforge_dpo(policy: Path, pairs_file: Path, out: Path, s: DPOSettings) -> dict[str, Any]:
    from lmforge.align.dpo import plan_dpo, run_dpo
    from lmforge.align.preference_settings import DPOConfig

    config = DPOConfig(
        max_steps=s.steps, batch_size=s.batch_size, lr=s.lr, min_lr=s.lr, warmup_steps=0, weight_decay=0.0,
        beta2=s.beta2, grad_clip=s.grad_clip, beta=s.beta, eval_every=10**6, log_every=1, seed=s.seed,
        device="cpu", precision="fp32",
    )  # fmt: skip
    job = plan_dpo(
        checkpoint=policy,
        train=str(pairs_file),
        val=str(pairs_file),
        out=out,
        settings=config,
        overwrite=True,
    )
    summary = run_dpo(job, progress=False)
    times, losses = step_times_from_metrics(out / "metrics.jsonl", "train_loss")
    return {"step_times": times, "losses": losses, "summary_s_per_step": summary.get("s_per_step")}


def lmforge_ppo(policy: Path, reward: str, prompts_file: Path, out: Path, s: PPOSettings) -> dict[str, Any]:
    from lmforge.align.ppo import plan_ppo, run_ppo
    from lmforge.align.rl_settings import PPOConfig

    config = PPOConfig(
        iterations=s.steps, batch_size=s.batch_size, minibatch_size=s.minibatch_size, epochs=s.ppo_epochs,
        max_new_tokens=s.response_length, min_new_tokens=s.response_length, temperature=s.temperature,
        lr=s.lr, beta=s.kl_coef, eval_size=1, seed=s.seed, device="cpu",
    )  # fmt: skip
    job = plan_ppo(
        policy=policy, reward=reward, prompts=str(prompts_file), out=out, settings=config, overwrite=True
    )
    run_ppo(job, progress=False)  # end-of-text forbidden throughout: as many tokens as TRL's (no stop token)
    times, policy_loss = step_times_from_metrics(out / "metrics.jsonl", "policy_loss")
    _, value_loss = step_times_from_metrics(out / "metrics.jsonl", "value_loss")
    _, lengths = step_times_from_metrics(out / "metrics.jsonl", "response_length")
    return {
        "step_times": times,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "response_tokens": lengths,
    }


def race(
    policy: Path, hf_dir: Path, reward: str, work: Path, pairs: list[dict], prompts: list[str],
    dpo: DPOSettings, ppo: PPOSettings, rounds: int, log=print,
) -> dict[str, Any]:  # fmt: skip
    """``rounds`` interleaved rounds of the four runs; the JSON-ready comparison."""
    from lmforge.run import Run
    from lmforge.tokenizers.chat import ChatTemplate

    run = Run.open(policy)
    tokenizer = run.load_tokenizer()
    template = ChatTemplate.for_tokenizer(run.tokenizer_dir, tokenizer)
    block = run.read_config()["model"]["block_size"]
    lm_pairs, trl_pairs, lm_prompts, trl_prompts = race_rows(pairs, prompts, template, tokenizer, block, dpo.batch_size, ppo)  # fmt: skip
    if len(lm_pairs) < dpo.batch_size or len(lm_prompts) < ppo.batch_size:
        raise ValueError(
            f"only {len(lm_pairs)} pairs / {len(lm_prompts)} prompts fit a context of {block} tokens"
        )
    work.mkdir(parents=True, exist_ok=True)
    pairs_file, prompts_file = work / "race_pairs.jsonl", work / "race_prompts.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in lm_pairs))
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in lm_prompts))
    sides: dict[str, list[dict]] = {"lmforge_dpo": [], "trl_dpo": [], "lmforge_ppo": [], "trl_ppo": []}
    with_ppo = TRL_PPO_PYTHON.exists()  # the side venv with TRL 1.12 (rlhf_trl.py); absent: no PPO race
    if not with_ppo:
        log(f"no {TRL_PPO_PYTHON}: the PPO race is left out (set TRL_PPO_PYTHON to a venv with trl 1.12)")
        del sides["lmforge_ppo"], sides["trl_ppo"]
    for r in range(rounds):
        sides["lmforge_dpo"].append(lmforge_dpo(policy, pairs_file, work / "dpo", dpo))
        sides["trl_dpo"].append(trl_dpo(hf_dir, trl_pairs, dpo))
        if with_ppo:
            sides["lmforge_ppo"].append(lmforge_ppo(policy, reward, prompts_file, work / "ppo", ppo))
            sides["trl_ppo"].append(trl_ppo(hf_dir, trl_prompts, ppo))
        medians = {name: median_step(runs[-1]["step_times"]) for name, runs in sides.items()}
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v:.3f} s/step" for k, v in medians.items()))
    return summarize(sides, dpo, ppo)


def summarize(sides: dict[str, list[dict]], dpo: DPOSettings, ppo: PPOSettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rounds": len(sides["trl_dpo"]),
        "dpo_settings": vars(dpo),
        "ppo_settings": vars(ppo),
    }
    for method in [m for m in ("dpo", "ppo") if f"trl_{m}" in sides]:
        ours, theirs = sides[f"lmforge_{method}"], sides[f"trl_{method}"]
        ratios = [median_step(t["step_times"]) / median_step(o["step_times"]) for o, t in zip(ours, theirs)]
        out[method] = {
            "lmforge_steps_per_s": round(
                1 / statistics.median(median_step(o["step_times"]) for o in ours), 3
            ),
            "trl_steps_per_s": round(1 / statistics.median(median_step(t["step_times"]) for t in theirs), 3),
            "ratio": round(statistics.median(ratios), 3),
            "ratios": [round(x, 3) for x in ratios],
            "trl_setup_s": theirs[-1]["setup_s"],
            "trl_trainer": theirs[-1]["trainer"],
            "trl_optimizer": theirs[-1]["optimizer"],
        }
    lm_losses, trl_losses = sides["lmforge_dpo"][-1]["losses"], sides["trl_dpo"][-1]["losses"]
    out["dpo"]["lmforge_losses"] = [round(x, 5) for x in lm_losses]
    out["dpo"]["trl_losses"] = [round(x, 5) for x in trl_losses]
    out["dpo"]["max_loss_difference"] = round(max(abs(a - b) for a, b in zip(lm_losses, trl_losses)), 6)
    if "trl_ppo" not in sides:
        return out
    last_ours, last_theirs = sides["lmforge_ppo"][-1], sides["trl_ppo"][-1]
    out["ppo"]["lmforge_policy_loss"] = last_ours["policy_loss"]
    out["ppo"]["trl_policy_loss"] = last_theirs["policy_loss"]
    out["ppo"]["lmforge_value_loss"] = last_ours["value_loss"]
    out["ppo"]["trl_value_loss"] = last_theirs["value_loss"]
    out["ppo"]["lmforge_response_tokens"] = last_ours["response_tokens"]
    out["ppo"]["trl_response_tokens"] = last_theirs["response_tokens"]
    out["ppo"]["trl_versions"] = last_theirs.get("versions")
    return out
