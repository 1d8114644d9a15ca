"""Supervised fine-tuning (SFT): teach a pretrained causal LM to answer in a chat format, the
first of the lectures' three steps from a pretrained model to an assistant.

    job = plan_sft(checkpoint="runs/stdlib", data="builtin:stdlib-instruct", out="runs/sft",
                   settings=SFTConfig(epochs=2))          # checks, reads, encodes, builds; writes nothing
    print(*job.describe(), sep="\\n")
    summary = run_sft(job)                                 # trains, checkpoints, plots
    summary["val_loss"], summary["run"]

``finetune_sft(**plan, say=print)`` does the three in one call.

Each example is rendered by the run's chat template (``RUN/tokenizer/chat_template.jinja``, else
the default one) and trained on its assistant tokens only (finetune/chat_data.py); the objective
is the causal LM loss summed over labels != -100 (train/objectives.py's ``language_model_loss``:
the labels already say which tokens count). Short examples are packed into blocks of the model's
context with block-diagonal masks (finetune/sft_batches.py); ``packing=False`` pads instead.
Every weight trains, or with LoRA only rank-R adapters, merged into the saved weights.

The result is a plain causal run (generate, score, serve, convert read it) whose tokenizer
directory holds the chat template it was trained with, the default one written out when the
base run had none, so ``chat`` and ``serve`` render conversations exactly as training did.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import CheckpointError, DataError, UserInputError
from lmforge.finetune.chat_data import INSTRUCT, ChatRow, encode_rows, read_chat_examples
from lmforge.finetune.settings import SFTConfig
from lmforge.finetune.sft_batches import SFTBatches, assistant_loss, pack_groups

HELD_OUT = 10  # without --val, one example in this many (at least one) is held out from a file


@dataclass
class ChatData:
    train: list[dict]
    val: list[dict]
    val_source: str


def load_chat_data(data: str, val: str | None, seed: int) -> ChatData:
    """Both splits: --val's file, the built-in data's own validation split, or a seeded tenth of
    --data held out (an SFT file rarely comes with a split of its own)."""
    train = read_chat_examples(data, "train")
    if val is not None:
        return ChatData(train, read_chat_examples(val, "val"), str(val))
    if str(data) == INSTRUCT:
        return ChatData(train, read_chat_examples(data, "val"), f"{INSTRUCT} (its val split)")
    if len(train) < 2:
        raise DataError(f"{data} holds one example: give more, or a validation file with --val")
    held = max(1, len(train) // HELD_OUT)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = set(order[:held])
    return ChatData(
        [e for i, e in enumerate(train) if i not in chosen],
        [e for i, e in enumerate(train) if i in chosen],
        f"{held} examples of {data} held out",
    )


def causal_decoder(family: str, checkpoint: str | Path) -> None:
    """Refuse, in one line, a run that is not a Transformer decoder (packing needs its masks and
    positions; a chat needs a left-to-right model)."""
    from lmforge.models.registry import FAMILIES, model_class

    cls = model_class(family)
    if getattr(cls, "lm_kind", None) != "causal" or getattr(cls, "decoding", None) != "kv_cache":
        able = [name for name in FAMILIES if getattr(model_class(name), "decoding", None) == "kv_cache"]
        raise CheckpointError(
            f"--checkpoint {checkpoint} holds a {family} model; SFT trains causal Transformer decoders "
            f"({', '.join(able)} runs: lmforge pretrain --model gpt-nano, or convert --from-hf of a "
            "GPT-2 or Llama checkpoint)"
        )


@dataclass
class SFTJob:
    """One fine-tuning, checked and built, nothing written yet."""

    run_path: Path
    overwrite: bool
    family: str
    net: nn.Module  # the model, LoRA adapters applied when asked
    tokenizer: Any
    template: str  # the chat template's source, written into the new run
    template_is_default: bool
    data: ChatData
    config: SFTConfig  # max_steps resolved from the epochs
    train_rows: list[ChatRow]
    val_rows: list[ChatRow]
    groups: list[list[int]]  # training rows per batch row (one each without packing)
    packing: bool
    task: dict[str, Any]  # config.json's "task"
    context: int
    skipped: tuple[int, int]  # training and validation examples whose response does not fit
    lora_rank: int | None = None

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def describe(self) -> list[str]:
        """The header lines ``finetune sft`` prints before training."""
        adapters = f", LoRA rank {self.lora_rank}" if self.lora_rank else ""
        targets = sum(row.targets for row in self.train_rows)
        tokens = sum(len(row.input_ids) for row in self.train_rows)
        rows = (
            f"packed into {len(self.groups):,} blocks of <= {self.context} tokens"
            if self.packing
            else "one per row, padded"
        )
        lines = [
            f"model: {self.family} from {self.task['base']}, {self.net.num_parameters():,} parameters "
            f"({self.trainable:,} trained{adapters}); chat template: "
            + ("default (User:/Assistant:)" if self.template_is_default else "the run's"),
            f"data: {len(self.train_rows):,} training examples ({self.task['train_data']}), {rows}; "
            f"{targets:,} of {tokens:,} tokens are the assistant's (the loss is on those only)",
            f"validation: {len(self.val_rows):,} examples ({self.data.val_source})",
            f"budget: {self.config.max_steps or 'as many'} steps of {self.config.batch_size} rows"
            + (f" within {self.config.max_time:g} s" if self.config.max_time else "")
            + f", lr {self.config.lr:g}",
        ]
        if any(self.skipped):
            lines.append(
                f"note: {self.skipped[0]} training and {self.skipped[1]} validation examples skipped: "
                f"their response alone does not fit the context of {self.context} tokens"
            )
        return lines


def plan_sft(
    *,
    checkpoint: str | Path,
    data: str,
    out: str | Path,
    settings: SFTConfig,
    val: str | None = None,
    packing: bool = True,
    overwrite: bool = False,
    lora=None,
) -> SFTJob:
    """Check the inputs, read and encode the examples and load the model; writes nothing."""
    from lmforge.fileio import check_output_dir
    from lmforge.run import RUN_OUTPUT, Run
    from lmforge.tokenizers.chat import ChatTemplate

    inputs = [
        checkpoint,
        *(Path(s) for s in (data, val) if s is not None and not str(s).startswith("builtin:")),
    ]
    check_output_dir(out, overwrite, inputs=inputs, kind=RUN_OUTPUT)
    source = Run.open(checkpoint)
    saved = source.read_config()
    family = saved["family"]
    causal_decoder(family, checkpoint)
    tokenizer = source.load_tokenizer()
    template = ChatTemplate.for_tokenizer(source.tokenizer_dir, tokenizer)
    chats = load_chat_data(data, val, settings.seed)
    context = int(saved["model"]["block_size"])
    train_rows, train_skipped = encode_rows(tokenizer, template, chats.train, context)
    val_rows, val_skipped = encode_rows(tokenizer, template, chats.val, context)
    for rows, name in ((train_rows, data), (val_rows, chats.val_source)):
        if not rows:
            raise DataError(
                f"{name}: no example fits the model's context of {context} tokens (each response with "
                "its end token must fit behind its prompt); use shorter examples or a longer-context model"
            )
    groups = pack_groups(train_rows, context) if packing else [[i] for i in range(len(train_rows))]
    net = source.load_model("auto").train()
    with_lora = lora is not None and lora.enabled
    if with_lora:
        net = lora.apply(net)
    config = dataclasses.replace(settings, max_steps=settings.steps_for(len(groups)))
    config.validate()
    task = {
        "kind": "sft",
        "base": str(checkpoint),
        "train_data": str(data),
        "val_data": chats.val_source,
        "packing": packing,
        "lora_rank": lora.lora_rank if with_lora else None,
    }
    return SFTJob(
        run_path=Path(out),
        overwrite=overwrite,
        family=family,
        net=net,
        tokenizer=tokenizer,
        template=template.source,
        template_is_default=template.is_default,
        data=chats,
        config=config,
        train_rows=train_rows,
        val_rows=val_rows,
        groups=groups,
        packing=packing,
        task=task,
        context=context,
        skipped=(train_skipped, val_skipped),
        lora_rank=lora.lora_rank if with_lora else None,
    )


def finetune_sft(*, progress: bool = True, say=print, **plan: Any) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` on ``data``'s chats into run directory ``out`` (``plan_sft``'s
    arguments), printing what it is about to do through ``say``; returns ``run_sft``'s summary."""
    job = plan_sft(**plan)
    for line in job.describe():
        say(line)
    return run_sft(job, progress=progress)


def run_sft(job: SFTJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into a new run directory; a failure before the first checkpoint leaves none."""
    from lmforge.run import Run

    if not job.config.max_steps and not job.config.max_time:
        raise UserInputError("give a budget: --epochs N, --max-steps N or --max-time SECONDS")
    run = Run.create(job.run_path, overwrite=job.overwrite)
    with run.removed_unless_saved():
        return _train(job, run, progress)


def _train(job: SFTJob, run, progress: bool) -> dict[str, Any]:
    from lmforge.fileio import atomic_write_text
    from lmforge.finetune.batches import padding_id
    from lmforge.finetune.classify import plain_weights
    from lmforge.tokenizers.chat import TEMPLATE_FILE
    from lmforge.train.metrics import MetricsLog, plot_losses
    from lmforge.train.objectives import language_model_loss
    from lmforge.train.optim import describe_optimizer
    from lmforge.train.trainer import Trainer
    from lmforge.train.transforms import ready_for_training

    net, config = job.net, job.config
    pad = padding_id(job.tokenizer)
    run.save_tokenizer(job.tokenizer)
    atomic_write_text(run.tokenizer_dir / TEMPLATE_FILE, job.template)  # what chat and serve render
    run.write_config(
        {
            "family": job.family,
            "model": net.config.to_dict(),
            "train": dataclasses.asdict(config),
            "task": job.task,
        }
    )
    train_model, transforms, _device = ready_for_training(net, config)
    eval_batch = max(2 * config.batch_size, 16)
    periodic = job.val_rows
    if config.eval_batches is not None:
        from lmforge.data.batching import evenly_spread

        periodic = evenly_spread(job.val_rows, config.eval_batches * eval_batch)

    def evaluate(model: nn.Module) -> dict[str, float]:
        total, count = assistant_loss(model, periodic, pad, eval_batch)
        return {"loss": total / max(count, 1)}

    def save(tag: str, _model: nn.Module, state: dict | None) -> None:
        # LoRA adapters merged into a copy (peft is imported only when adapters exist)
        run.save_weights(plain_weights(net) if job.lora_rank else net, "best" if tag == "best" else "last")
        if state is not None:
            run.save_train_state(state)

    metrics = MetricsLog(run.metrics_path)
    batches = SFTBatches(
        job.train_rows, job.groups, config.batch_size, pad, config.seed, job.packing, job.context
    )
    trainer = Trainer(
        train_model,
        config,
        batches,
        evaluate=evaluate,
        save=save,
        log=metrics.write,
        progress=progress and sys.stderr.isatty(),
        objective=language_model_loss,  # summed over labels != -100: the assistant's tokens
    )
    try:
        result = trainer.fit()
    finally:
        metrics.close()
    plot_losses(run.metrics_path, run.plot_path, title=f"{run.path.name}: SFT of {job.task['base']}")
    best = run.load_model("best").to(next(net.parameters()).device)  # as generate and chat load it
    total, count = assistant_loss(best, job.val_rows, pad, eval_batch)
    return {
        "run": str(run.path),
        "family": job.family,
        "base": job.task["base"],
        "steps": result.steps,
        "examples": len(job.train_rows),
        "rows": len(job.groups),
        "packing": job.packing,
        "assistant_tokens": sum(row.targets for row in job.train_rows),
        "skipped": sum(job.skipped),
        "elapsed_s": round(result.elapsed_s, 2),
        "s_per_step": round(result.elapsed_s / max(result.steps, 1), 4),
        "train_loss": result.last_train_loss,
        "first_val_loss": result.first_val_loss,
        "val_loss": total / max(count, 1),
        "val_examples": len(job.val_rows),
        "parameters": best.num_parameters(),
        "trainable_parameters": job.trainable,
        "interrupted": result.interrupted,
        "transforms": [t.name for t in transforms],
        "optimizer": describe_optimizer(trainer.optimizer),
        "plot": str(run.plot_path),
    }
