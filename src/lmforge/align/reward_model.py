"""A reward model: a causal run's Transformer with a scalar head read at each row's last real token.

    rm = load_reward_model("runs/rm")
    rm.score(["Explain what `len(obj)` does."], ["Return the number of items."])   # [1.73]
    reward = reward_function_from_run("runs/rm")     # PPO's: (prompts, generated completions) -> rewards
    reward(["Explain what `len(obj)` does."], [" Return the number of items.\\n\\n"])   # [1.73] too

It is the GPT classifier of ``finetune/classify.py`` with one output (``num_labels`` 1, the head
Hugging Face calls ``score``): the row is the chat-rendered prompt, the response and end-of-text
(align/preferences.py), and the state of that end-of-text token, which has read all of them, is
mapped to one number. Only differences of rewards mean anything (Bradley-Terry is unchanged by
adding a constant), so a reward is comparable with others of the same model, not across models.
The run is a plain run directory whose config.json says ``"task": {"kind": "reward"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.align.losses import bradley_terry_loss
from lmforge.align.preferences import PairEncoder, check_causal_family, collate_rows
from lmforge.errors import CheckpointError, UserInputError
from lmforge.models.length_groups import compute_dtype, plan_groups

REWARD_KIND = "reward"
RewardFunction = Callable[[list[str], list[str]], list[float]]


def reward_model_from(run, saved: dict[str, Any], from_scratch: bool = False) -> nn.Module:
    """``run``'s architecture with a fresh scalar head; its weights unless ``from_scratch``."""
    from lmforge.finetune.classify import classifier_from

    check_causal_family(saved["family"], "a reward model")
    return classifier_from(run, saved["family"], saved["model"], [REWARD_KIND], from_scratch)


def row_rewards(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One reward per row (N,), from the state of its last real token (rows right-padded), the
    rows in groups of similar length where that computes less padding (``models/length_groups.py``)."""
    mask = batch["attention_mask"]
    groups = plan_groups(mask, compute_dtype(model))
    return model.sequence_logits(batch["input_ids"], mask, groups=groups).squeeze(-1).float()


def reward_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The trainer's objective: Bradley-Terry summed over the batch's pairs, and the pair count."""
    chosen, rejected = row_rewards(model, batch).chunk(2)  # chosen rows first (preferences.py)
    return bradley_terry_loss(chosen, rejected, reduction="sum"), chosen.numel()


@torch.no_grad()
def pair_rewards(
    model: nn.Module, pairs: Sequence, pad_id: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards (N,), rejected rewards (N,)) of encoded pairs, in batches, on the model's device."""
    from lmforge.align.preferences import collate_pairs, in_batches

    device = next(model.parameters()).device
    context = getattr(model, "context_limit", None)
    chosen, rejected = [], []
    for group in in_batches(pairs, batch_size):
        batch = {k: v.to(device) for k, v in collate_pairs(group, pad_id, context).items()}
        c, r = row_rewards(model, batch).chunk(2)
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    return torch.cat(chosen), torch.cat(rejected)


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Held-out Bradley-Terry loss, pairwise accuracy (a tie counts as wrong) and mean margin."""
    return {
        "loss": bradley_terry_loss(chosen, rejected).item(),
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": (chosen - rejected).mean().item(),
    }


@dataclass
class RewardModel:
    model: nn.Module
    encoder: PairEncoder
    pad_id: int
    device: torch.device

    @torch.no_grad()
    def score(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32, generated: bool = False
    ) -> list[float]:
        """The reward of each (prompt, response), read as training read them. A response is the
        assistant's text, rendered by the chat template as the pairs were; with ``generated`` it is
        a policy's continuation of the rendered prompt, taken as it stands (then end-of-text). A
        response too long for the context is cut at its end (so is its end token)."""
        if len(prompts) != len(responses):
            raise UserInputError(f"{len(prompts)} prompts but {len(responses)} responses; give one each")
        rows = []
        for index, (prompt, response) in enumerate(zip(prompts, responses), start=1):
            if generated:
                prompt_ids, reply = self.encoder.prompt_ids(prompt), self.encoder.completion_ids(response)
            else:
                prompt_ids, reply = self.encoder.pair_ids(prompt, response)
            reply, _ = self.encoder.fit(prompt_ids, reply, f"prompt {index}")
            rows.append((prompt_ids, reply))
        rewards: list[float] = []
        for start in range(0, len(rows), batch_size):
            batch = collate_rows(rows[start : start + batch_size], self.pad_id, self.model.context_limit)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            rewards += row_rewards(self.model, batch).cpu().tolist()
        return rewards


def load_reward_model(
    checkpoint: str | Path, device: str = "cpu", weights: str = "auto", flag: str = "--checkpoint"
) -> RewardModel:
    """A run written by ``lmforge align reward``; one clear line, naming ``flag``, for any other run."""
    from lmforge.finetune.batches import padding_id
    from lmforge.hardware import resolve_device
    from lmforge.run import Run

    run = Run.open(checkpoint, flag=flag)
    config = run.read_config()
    if (config.get("task") or {}).get("kind") != REWARD_KIND:
        held = (config.get("task") or {}).get("kind") or "language"
        raise CheckpointError(
            f"{flag} {checkpoint} is not a reward model (it holds a {config['family']} {held} model); "
            "train one with `lmforge align reward --checkpoint RUN --data PAIRS --out RM`"
        )
    resolved = resolve_device(device)
    model = run.load_model(weights).to(resolved)
    tokenizer = run.load_tokenizer()
    encoder = PairEncoder(tokenizer, run.tokenizer_dir, int(config["model"]["block_size"]))
    return RewardModel(model, encoder, padding_id(tokenizer), resolved)


def reward_function_from_run(run_dir: str | Path, device: str = "cpu") -> RewardFunction:
    """A trained reward model as PPO's and GRPO's reward function: (prompts, completions) -> rewards."""
    reward_model = load_reward_model(run_dir, device=device, flag="--reward")

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        return reward_model.score(prompts, completions, generated=True)

    reward.reward_model = reward_model  # type: ignore[attr-defined] - for callers that want its tokenizer
    return reward
