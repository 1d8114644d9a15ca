"""``lmforge align reward`` and ``lmforge align dpo``: train on preference pairs.

Parsing and printing only: the recipes are ``align/reward.py`` and ``align/dpo.py``, their training
flags the fields of ``align/preference_settings.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from lmforge.align.preference_settings import DPOConfig, RewardConfig
from lmforge.bounds import OUT_DIR, RUN_DIR, Text
from lmforge.commands._json import print_json
from lmforge.finetune.lora import LoRASettings

PAIRS = Text(
    what='preference pairs: a .jsonl file ({"prompt", "chosen", "rejected"} per line) or builtin:stdlib-prefs'
)


def reward(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    data: Annotated[str, PAIRS],
    out: Annotated[Path, OUT_DIR],
    val: Annotated[str | None, PAIRS] = None,
    from_scratch: bool = False,
    settings: Annotated[dict[str, Any] | None, RewardConfig] = None,
    lora: Annotated[dict[str, Any] | None, LoRASettings] = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Train a reward model on preference pairs: the run's Transformer with a scalar head.

    Each pair (prompt, chosen, rejected) becomes two rows, each a one-turn chat rendered by the run's
    chat template as `lmforge finetune sft` trains one (user = prompt, assistant = response, then
    its end token); the head reads the state of that last token. The loss is Bradley-Terry, -log sigmoid(r_chosen - r_rejected). Each
    evaluation logs the held-out loss, pairwise accuracy and mean margin r_chosen - r_rejected
    (metrics.jsonl: val_loss, val_accuracy, val_margin; loss.png), and the weights with the lowest
    held-out loss are kept. `lmforge reward --checkpoint OUT` then scores responses, and PPO's
    --reward OUT trains a policy against it.

    Args:
        checkpoint: a GPT-like causal run (lmforge pretrain, finetune sft, or convert --from-hf).
        data: the training pairs.
        out: the run directory to create.
        val: held-out pairs (default: builtin:stdlib-prefs@val for the built-in pairs; a file needs one).
        from_scratch: the checkpoint's architecture and tokenizer with random weights (a control).
        overwrite: replace an existing --out run directory.
        progress: show a progress bar.

    Examples:
        lmforge align reward --checkpoint my_sft_run --data builtin:stdlib-prefs --out runs/rm --epochs 1
        lmforge align reward --checkpoint my_sft_run --data my_prefs.jsonl --val my_prefs_val.jsonl --out runs/rm --max-steps 200
    """
    from lmforge.align.reward import plan_reward, run_reward

    config = RewardConfig(**(settings or {}))
    config.validate()
    job = plan_reward(
        checkpoint=checkpoint,
        train=data,
        val=val,
        out=out,
        settings=config,
        from_scratch=from_scratch,
        overwrite=overwrite,
        lora=LoRASettings(**(lora or {})),
    )
    if not as_json:
        print(*job.describe(), sep="\n")
    summary = run_reward(job, progress=progress)
    if as_json:
        print_json(summary)
    else:
        _print_common(summary)
        print(
            f"held out (best weights, {summary['val_pairs']} pairs): accuracy {summary['accuracy']:.1%}, "
            f"mean margin {summary['margin']:.3f}, loss {summary['val_loss']:.4f}"
        )
        print(f"run directory: {summary['run']}   curves: {summary['plot']}")
        print(f'next: lmforge reward --checkpoint {summary["run"]} --prompt "..." --response "..."')
    if summary["interrupted"]:
        raise KeyboardInterrupt  # saved; exit 130 like every command stopped by Ctrl-C
    return summary


def dpo(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    data: Annotated[str, PAIRS],
    out: Annotated[Path, OUT_DIR],
    val: Annotated[str | None, PAIRS] = None,
    settings: Annotated[dict[str, Any] | None, DPOConfig] = None,
    lora: Annotated[dict[str, Any] | None, LoRASettings] = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Direct preference optimisation: train a causal run to prefer the chosen responses.

    The policy starts as the checkpoint and a frozen copy is the reference, whose log-probabilities
    of every response are computed once before training and cached. The loss is DPO's sigmoid loss,
    -log sigmoid(beta * ((log pi - log ref)(chosen) - (log pi - log ref)(rejected))), over the
    response tokens and their end-of-text. Each step and evaluation logs the loss, preference
    accuracy, reward margin and the chosen and rejected implicit rewards beta * (log pi - log ref)
    (metrics.jsonl: train_* and val_*; loss.png). The result is a plain causal run:
    `lmforge generate`, `lmforge serve` and chat read it.

    Args:
        checkpoint: a GPT-like causal run, usually an SFT one (lmforge finetune sft).
        data: the training pairs.
        out: the run directory to create.
        val: held-out pairs (default: builtin:stdlib-prefs@val for the built-in pairs; a file needs one).
        overwrite: replace an existing --out run directory.
        progress: show a progress bar.

    Examples:
        lmforge align dpo --checkpoint my_sft_run --data builtin:stdlib-prefs --out runs/dpo --epochs 1 --beta 0.1
        lmforge align dpo --checkpoint my_sft_run --data my_prefs.jsonl --val my_prefs_val.jsonl --out runs/dpo --max-steps 200 --lora-rank 8
    """
    from lmforge.align.dpo import plan_dpo, run_dpo

    config = DPOConfig(**(settings or {}))
    config.validate()
    job = plan_dpo(
        checkpoint=checkpoint,
        train=data,
        val=val,
        out=out,
        settings=config,
        overwrite=overwrite,
        lora=LoRASettings(**(lora or {})),
    )
    if not as_json:
        print(*job.describe(), sep="\n")
    summary = run_dpo(job, progress=progress)
    if as_json:
        print_json(summary)
    else:
        _print_common(summary)
        print(
            f"held out (best weights, {summary['val_pairs']} pairs): preference accuracy {summary['accuracy']:.1%}, "
            f"reward margin {summary['margin']:.3f} (chosen {summary['chosen_reward']:.3f}, rejected "
            f"{summary['rejected_reward']:.3f}), loss {summary['val_loss']:.4f}"
        )
        print(f"run directory: {summary['run']}   curves: {summary['plot']}")
        print(f'next: lmforge generate --checkpoint {summary["run"]} --prompt "..."')
    if summary["interrupted"]:
        raise KeyboardInterrupt
    return summary


def _print_common(summary: dict) -> None:
    if summary["interrupted"]:
        print(f"interrupted at step {summary['steps']}; the best weights so far are saved")
    print(
        f"trained {summary['steps']} steps ({summary['pairs_seen']:,} pairs) in "
        f"{summary['elapsed_s']:.1f} s, {summary['s_per_step']:.3f} s/step"
    )
