"""What PPO and GRPO share: the policy run opened and checked, the frozen reference, the prompts and
the reward, the before/after evaluation, and the run directory they write.

    job = plan_rl(kind="grpo", policy="runs/sft", reward="builtin:arith", prompts="builtin:arith",
                  out="runs/grpo", settings=GRPOConfig(iterations=50))   # checks and loads; writes nothing
    print(*job.describe(), sep="\\n")

The output is a plain causal run (config.json, model.safetensors, the policy's tokenizer and chat
template, metrics.jsonl and loss.png, which here draws the reward and KL curves), so ``generate``,
``chat``, ``score`` and another round of ``align`` read it like the run it came from. config.json's
"task" records the method, the base run, the reward, the prompts and every setting.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.align.prompts import BUILTIN, Prompt, encode_prompts, load_prompts
from lmforge.align.rewards import RewardFunction, resolve_reward, score
from lmforge.align.rl_settings import RLConfig
from lmforge.errors import CheckpointError, DataError, UserInputError

SAMPLES_SHOWN = 3


@dataclass
class RLJob:
    """One PPO or GRPO run, checked and loaded, nothing written yet."""

    kind: str  # "ppo" or "grpo"
    run_path: Path
    overwrite: bool
    family: str
    model_config: dict[str, Any]
    policy: nn.Module  # trained, in eval mode (no dropout: the ratios compare like with like)
    reference: nn.Module  # a frozen copy of the starting policy
    tokenizer: Any
    tokenizer_dir: Path
    template: Any  # lmforge.tokenizers.chat.ChatTemplate
    eos_id: int
    reward: RewardFunction
    prompts: list[Prompt]
    prompt_ids: list[list[int]]
    eval_prompts: list[Prompt]
    eval_ids: list[list[int]]
    settings: RLConfig
    device: torch.device
    task: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> list[str]:
        s = self.settings
        group = getattr(s, "group_size", 1)
        lines = [
            f"policy: {self.family} from {self.task['base']}, {self.policy.num_parameters():,} parameters "
            f"({self.policy.describe()}); reference: a frozen copy",
            f"prompts: {len(self.prompts):,} ({self.task['prompts']}), {len(self.eval_prompts)} for the "
            f"before/after evaluation ({self.task['eval_prompts'] or 'none'}); reward: {self.task['reward']}",
            f"{self.kind.upper()}: {s.iterations} iterations x {s.batch_size} prompts"
            + (f" x {group} samples" if group > 1 else "")
            + f", up to {s.max_new_tokens} new tokens, temperature {s.temperature}, {s.epochs} epochs, "
            f"lr {s.lr}, beta {s.beta}, clip {s.clip_range}, on {self.device}",
        ]
        if self.task["prompts_too_long"]:
            lines.append(
                f"left out: {self.task['prompts_too_long']:,} prompts too long for the context with "
                f"--max-new-tokens {s.max_new_tokens} (the policy's, or the reward model's with a response)"
            )
        return lines


def open_policy(path: str | Path):
    """(run, model, family, saved config) of a causal Transformer run; one line naming what works otherwise."""
    from lmforge.run import Run

    run = Run.open(path, flag="--policy")
    saved = run.read_config()
    model = run.load_model()
    if not isinstance(model, nn.Module) or model.lm_kind != "causal" or model.decoding != "kv_cache":
        kind = getattr(model, "lm_kind", "counted")
        raise CheckpointError(
            f"--policy {path} holds a {saved['family']} model ({kind}); PPO and GRPO train a causal Transformer "
            "(a GPT-family run: lmforge pretrain --model gpt-nano, finetune sft, or convert --from-hf of a GPT-2)"
        )
    return run, model, saved["family"], saved


def plan_rl(
    *,
    kind: str,
    policy: str | Path,
    reward: str,
    prompts: str,
    out: str | Path,
    settings: RLConfig,
    eval_prompts: str | None = None,
    overwrite: bool = False,
) -> RLJob:
    """Check the inputs, load the policy, its reference, the prompts and the reward; writes nothing."""
    from lmforge.fileio import check_output_dir
    from lmforge.finetune.chat_session import response_end_id
    from lmforge.hardware import resolve_device
    from lmforge.run import RUN_OUTPUT
    from lmforge.tokenizers.chat import ChatTemplate

    settings.validate()
    inputs = [policy, *(Path(p) for p in (prompts, eval_prompts) if p and not p.startswith(BUILTIN))]
    check_output_dir(out, overwrite, inputs=inputs, kind=RUN_OUTPUT)
    train_prompts = load_prompts(prompts, "train")
    held_out, eval_source = _eval_prompts(prompts, eval_prompts, settings.eval_size)
    run, model, family, saved = open_policy(policy)
    tokenizer = run.load_tokenizer()
    eos_id = tokenizer.document_separator_id
    if eos_id is None:
        raise CheckpointError(
            f"--policy {policy}: its tokenizer has no end-of-text token, so no response could end"
        )
    device = resolve_device(settings.device)
    reward_function = resolve_reward(reward, device=device)  # a reward model runs beside the policy
    template = ChatTemplate.for_tokenizer(run.tokenizer_dir, tokenizer)
    # a response ends where SFT taught it to: the template's end-of-turn token (<|im_end|>, <|eot_id|>)
    # when it writes one, else end-of-text
    eos_id = response_end_id(tokenizer, template)
    context = model.context_limit
    count = len(train_prompts)
    # a built-in source's prompts that do not fit are left out; a file's are refused
    drop_train, drop_eval = prompts.startswith(BUILTIN), (eval_prompts or prompts).startswith(BUILTIN)
    train_prompts, prompt_ids = encode_prompts(
        train_prompts, template, tokenizer, context, settings.max_new_tokens, drop_long=drop_train
    )
    held_out, eval_ids = encode_prompts(
        held_out, template, tokenizer, context, settings.max_new_tokens, drop_long=drop_eval
    )
    # a reward model reads the prompt too, and must have room for a response after it
    train_prompts, prompt_ids = _readable_by_reward_model(
        reward_function, reward, train_prompts, prompt_ids, drop_long=drop_train
    )
    held_out, eval_ids = _readable_by_reward_model(
        reward_function, reward, held_out, eval_ids, drop_long=drop_eval
    )
    held_out, eval_ids = held_out[: settings.eval_size], eval_ids[: settings.eval_size]
    model.to(device).eval()
    reference = copy.deepcopy(model).requires_grad_(False).eval()
    task = {
        "kind": kind,
        "base": str(policy),
        "reward": reward,
        "prompts": prompts,
        "eval_prompts": eval_source if held_out else None,
        "settings": dataclasses.asdict(settings),
        "prompts_too_long": count - len(train_prompts),
    }
    return RLJob(
        kind,
        Path(out),
        overwrite,
        family,
        saved["model"],
        model,
        reference,
        tokenizer,
        run.tokenizer_dir,
        template,
        eos_id,
        reward_function,
        train_prompts,
        prompt_ids,
        held_out,
        eval_ids,
        settings,
        device,
        task,
    )


def _readable_by_reward_model(
    reward_function, reward: str, prompts: list[Prompt], ids: list[list[int]], *, drop_long: bool
) -> tuple[list[Prompt], list[list[int]]]:
    """The prompts (and their policy ids) whose rendering leaves a reward model room for at least
    one response token; all of them for a reward that is not a model."""
    reward_model = getattr(reward_function, "reward_model", None)
    if reward_model is None or not prompts:
        return prompts, ids
    encoder = reward_model.encoder
    lengths = [len(encoder.prompt_ids(prompt.text)) for prompt in prompts]
    fits = [length < encoder.limit for length in lengths]
    if not all(fits) and not drop_long:
        first = fits.index(False)
        raise DataError(
            f"the prompt {prompts[first].text[:40]!r} is {lengths[first]} tokens for the reward model "
            f"{reward}, whose context is {encoder.limit}: no room for a response; shorten the prompts "
            "or give a reward model with a longer context"
        )
    if not any(fits):
        raise DataError(
            f"no prompt fits the reward model {reward}'s context of {encoder.limit} tokens with a "
            "response; give a reward model with a longer context"
        )
    return [p for p, ok in zip(prompts, fits) if ok], [i for i, ok in zip(ids, fits) if ok]


def _eval_prompts(prompts: str, eval_prompts: str | None, size: int) -> tuple[list[Prompt], str]:
    """The prompts of the before/after evaluation and where they come from: --eval-prompts, else
    the source's val split (a built-in) or the training file itself (a file has no split); none
    when ``size`` is 0. A built-in source that trains on all it has (one-digit sums: 100 of them)
    has no val split; its training prompts are then the evaluation's, and the source says so."""
    if size == 0:
        return [], ""
    if eval_prompts is not None:
        return load_prompts(eval_prompts, "val"), eval_prompts
    if not prompts.startswith(BUILTIN):
        return load_prompts(prompts, "train"), prompts
    try:
        return load_prompts(prompts, "val"), f"{prompts} val split"
    except DataError:  # (a bad spec fails the same way for the train split, which is read first)
        return load_prompts(prompts, "train"), f"{prompts} train split (it has no val split)"


def generation_config(settings: RLConfig, eos_id: int, samples: int = 1):
    from lmforge.generate import GenerationConfig

    return GenerationConfig(
        strategy="sample",
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        eos_id=eos_id,
        num_return_sequences=samples,
    )


def sampler(job: RLJob, offset: int = 0) -> torch.Generator:
    """The sampling randomness on the policy's device, from --seed (offset: an independent stream)."""
    return torch.Generator(device=job.device).manual_seed(job.settings.seed + offset)


def prompt_order(count: int, batch_size: int, iterations: int, seed: int) -> list[list[int]]:
    """The prompt indices of each iteration: shuffled passes over all prompts, one after another."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < batch_size * iterations:
        order += torch.randperm(count, generator=generator).tolist()
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(iterations)]


@torch.no_grad()
def evaluate_policy(job: RLJob, model: nn.Module) -> dict[str, Any]:
    """Mean reward, KL to the reference (nats per response) and response length on the held-out
    prompts, one sample each with the same seed every time, so before and after compare like with like."""
    from lmforge.align.kl import kl_k1
    from lmforge.align.rollout import sample_rollouts, score_rollouts

    if not job.eval_prompts:
        return {}
    config = generation_config(job.settings, job.eos_id)
    batch = sample_rollouts(
        model, job.eval_ids, config, eos_id=job.eos_id, generator=sampler(job, 10**6), tokenizer=job.tokenizer
    )
    score_rollouts(batch, model, job.reference, job.settings.temperature)
    rewards = score(job.reward, [job.eval_prompts[i].text for i in batch.prompt_index], batch.completions)
    kl = kl_k1(batch.logprobs, batch.ref_logprobs).sum(dim=1)
    return {
        "reward": rewards.mean().item(),
        "kl": kl.mean().item(),
        "response_length": batch.response_lengths.float().mean().item(),
        "completions": batch.completions[:SAMPLES_SHOWN],
    }


def start_run(job: RLJob):
    """The run directory with the tokenizer (and its chat template) and config.json, no weights yet."""
    from lmforge.run import Run
    from lmforge.tokenizers.chat import TEMPLATE_FILE

    run = Run.create(job.run_path, overwrite=job.overwrite)
    run.save_tokenizer(job.tokenizer)
    template = job.tokenizer_dir / TEMPLATE_FILE
    if template.is_file():
        shutil.copyfile(template, run.tokenizer_dir / TEMPLATE_FILE)
    run.write_config({"family": job.family, "model": job.model_config, "task": job.task})
    return run


def check_settings(settings: RLConfig, rows: int) -> None:
    if settings.minibatch_size > rows:
        raise UserInputError(
            f"--minibatch-size {settings.minibatch_size} is more than the {rows} responses of an iteration; "
            "lower it or raise --batch-size"
        )
