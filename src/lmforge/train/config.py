"""The training settings, declared once: each field carries its default, its help and its bounds.

``TrainConfig`` is what the trainer reads, what a run's config.json stores under "train", and what
``lmforge pretrain`` (and every later training command) offers as flags: the CLI expands a
dataclass parameter into one flag per field, taking the help text and the default from here
(``commands/_args.py``), as litgpt does with its ``TrainArgs``. So a default lives in one place.

    @dataclass
    class TrainConfig:
        lr: float = setting(3e-3, "peak learning rate", positive=True)

    lmforge pretrain --help   ->   --lr LR   peak learning rate (default: 0.003)

``validate()`` checks every bound at once and names the flag, the value and what is allowed, so
``--lr nan`` or ``--batch-size 0`` is one clear line before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from lmforge.bounds import DEVICE, SEED, Bounds, Named, Rule
from lmforge.errors import UserInputError


def setting(
    default: Any,
    help: str,
    *,
    positive: bool = False,
    non_negative: bool = False,
    at_most: float | None = None,
    rule: Rule | None = None,
) -> Any:
    """A dataclass field with its help text and its rule in ``metadata`` (read by the CLI and
    ``check_bounds``): ``Bounds`` from the keywords for a number (every number must also be
    finite), or any other ``rule`` (``lmforge.bounds``)."""
    if rule is None and (positive or non_negative or at_most is not None):
        rule = Bounds(positive=positive, non_negative=non_negative, at_most=at_most)
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule})


def _parallel_form(value: str) -> bool:
    from lmforge.parallel.launch import parse_parallel

    try:
        parse_parallel(value)
    except UserInputError:
        return False
    return True


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_bounds(settings: Any) -> None:
    """Raise one ``UserInputError`` naming the first field outside its bounds."""
    for field in dataclasses.fields(settings):
        rule = field.metadata.get("rule")
        if rule is not None:
            rule.check(flag_name(field.name), getattr(settings, field.name))


@dataclass
class TrainConfig:
    """training (budget, batches, optimizer and schedule, evaluation, precision, device)"""

    max_steps: int | None = setting(None, "stop after this many optimizer steps", positive=True)
    max_time: float | None = setting(
        None,
        "stop after this many seconds of training; the learning-rate schedule is laid over this "
        "budget. With both budgets, whichever ends first",
        positive=True,
    )
    batch_size: int = setting(
        12,
        "sequences per micro-batch, over all processes: under torchrun each of N data-parallel "
        "ranks reads batch-size / N of them, so a run trains the same with any number of processes",
        positive=True,
    )
    grad_accum: int = setting(1, "micro-batches per optimizer step", positive=True)
    lr: float = setting(3e-3, "peak learning rate", positive=True)
    min_lr: float | None = setting(
        None, "final learning rate of the schedule's decay (default lr / 10)", non_negative=True
    )
    warmup_steps: int = setting(50, "optimizer steps of linear warm-up", non_negative=True)
    weight_decay: float = setting(0.1, "AdamW weight decay, applied to matrices only", non_negative=True)
    beta1: float = setting(0.9, "AdamW beta1", non_negative=True, at_most=1.0)
    beta2: float = setting(0.99, "AdamW beta2", non_negative=True, at_most=1.0)
    grad_clip: float = setting(
        1.0, "clip the gradient norm to this value (0: no clipping)", non_negative=True
    )
    optimizer: Literal["adamw", "sgd", "muon"] = setting(
        "adamw",
        "adamw, sgd or muon (Muon on the hidden matrices of the blocks, AdamW with --lr and "
        "--weight-decay on embeddings, head, norm gains and biases)",
    )
    muon_lr: float = setting(
        0.02, "peak learning rate of Muon's matrices (--optimizer muon); follows the schedule", positive=True
    )
    muon_weight_decay: float = setting(
        0.0, "decoupled weight decay of Muon's matrices (--optimizer muon)", non_negative=True
    )
    schedule: Literal["cosine", "wsd", "linear"] = setting(
        "cosine",
        "after warm-up: cosine (half a cosine down to --min-lr), wsd (stable at --lr, then linear "
        "down to --min-lr over the last --decay-fraction of the budget) or linear (straight down)",
    )
    decay_fraction: float = setting(
        0.2,
        "the share of the budget wsd's final decay takes (--schedule wsd)",
        non_negative=True,
        at_most=1.0,
    )
    eval_every: int = setting(250, "evaluate on validation batches every this many steps", positive=True)
    eval_batches: int = setting(
        20, "validation batches per periodic evaluation (the same ones every time)", positive=True
    )
    log_every: int = setting(
        10, "refresh the progress line every this many steps (metrics.jsonl gets every step)", positive=True
    )
    seed: int = setting(1337, "seeds initialisation, data order and dropout", rule=SEED)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto",
        "auto (bf16 where the hardware computes it natively: recent GPUs, CPUs with AVX-512 BF16 or "
        "AMX; else fp32), fp32, bf16 (autocast; emulated and about 8x slower than fp32 on CPUs "
        "without bf16 hardware, e.g. an AVX2 Zen 3) or fp16 (autocast with loss scaling; GPU only)",
    )
    compile: bool = setting(False, "compile the model with torch.compile (slower start, faster steps)")
    activation_checkpointing: bool = setting(
        False,
        "recompute each Transformer block's activations during backward instead of keeping them: "
        "much less activation memory for about a third more compute (GPT and BERT models)",
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)
    parallel: str = setting(
        "none",
        "under torchrun: ddp (replicas, gradients all-reduced; the default with several processes), "
        "fsdp (parameters, gradients and optimizer state sharded: FSDP2), tp=K (Megatron tensor "
        "parallelism over groups of K ranks), tp=K,fsdp (both, on a 2-D mesh); add ,sp to tp=K "
        "for sequence parallelism",
        rule=Named(
            lambda: ("none", "ddp", "fsdp", "tp=2", "tp=2,fsdp", "tp=2,sp"), "parallelism", _parallel_form
        ),
    )
    dist_timeout: float = setting(
        600.0,
        "seconds a process waits for the others in a collective before the job ends with an error "
        "(a rank that died or hung)",
        positive=True,
        at_most=86400.0,
    )

    def __post_init__(self) -> None:
        if self.min_lr is None:
            self.min_lr = self.lr / 10

    def validate(self) -> None:
        """Every bound, and a budget; one clear error for the first thing wrong."""
        check_bounds(self)
        from lmforge.parallel.launch import parse_parallel

        parse_parallel(self.parallel)
        if self.max_steps is None and self.max_time is None:
            raise UserInputError("give a budget: --max-steps N or --max-time SECONDS (or both)")

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_saved(cls, saved: dict[str, Any], **overrides: Any) -> TrainConfig:
        """A run's saved settings (unknown keys from other versions dropped) with ``overrides`` on top."""
        known = set(cls.field_names())
        values = {k: v for k, v in saved.items() if k in known}
        return cls(**{**values, **overrides})
