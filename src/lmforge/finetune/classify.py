"""Fine-tune a pretrained Transformer (BERT or GPT) to classify texts: the lectures' pretrain ->
fine-tune paradigm, on the same trainer and run directory as pretraining.

    job = plan_classifier(checkpoint="runs/bert", train="builtin:stdlib-topics", val=None,
                          out="runs/topics", settings=ClassifyConfig(epochs=3))  # checks, builds
    print(*job.describe(), sep="\n")                   # what is about to happen
    summary = run_classifier(job)                       # trains, checkpoints, plots
    summary["accuracy"], summary["macro_f1"], summary["confusion"]

``finetune_classifier(**plan, say=print)`` does the three in one call.

The model is the checkpoint's own architecture with a new head: BERT reads the pooled [CLS]
state (BertForSequenceClassification), GPT the state of each text's last token
(GPT2ForSequenceClassification); both through ``model.sequence_logits``. ``from_scratch`` builds
the same architecture with random weights, the control that shows what pretraining bought.
Every weight trains (full fine-tuning) unless LoRA adapters are asked for; the objective is
cross-entropy summed over examples; the model transforms are pretraining's (oneDNN linears where
they pay off, ``--compile``), so both commands train at the same speed.
The run directory is an ordinary run (config.json, weights, metrics.jsonl, loss.png) plus the
label names in config.json's "task" and ``confusion.png``; ``lmforge predict`` reads it.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data.batching import evenly_spread
from lmforge.errors import CheckpointError, DataError, UserInputError
from lmforge.finetune.batches import ShuffledBatches, collate, encode_examples, padding_id
from lmforge.finetune.examples import Example, Fields, is_builtin_task, read_examples
from lmforge.finetune.metrics import accuracy, confusion_matrix, confusion_table, macro_f1, plot_confusion
from lmforge.finetune.settings import ClassifyConfig
from lmforge.models.length_groups import compute_dtype, plan_groups

CONFUSION_PLOT = "confusion.png"


@dataclass
class LabelledData:
    train: list[Example]
    val: list[Example]
    labels: list[str]  # class names, sorted: the class ids are their positions
    val_source: str


def load_labelled(train: str, val: str | None, fields: Fields) -> LabelledData:
    """Both splits and the label set; the errors a user can fix, one line each."""
    train_examples = read_examples(train, fields)
    if val is None:
        if not is_builtin_task(train):
            raise UserInputError(
                f"give --val: a file of labelled examples to evaluate on ({train} has no split of its own)"
            )
        val = train.split("@")[0] + "@val"
    val_examples = read_examples(val, fields)
    labels = sorted({example.label for example in train_examples})
    if len(labels) < 2:
        raise DataError(
            f"{train}: every example has the label {labels[0]!r}; a classifier needs at least two classes"
        )
    unseen = sorted({example.label for example in val_examples} - set(labels))
    if unseen:
        shown = ", ".join(map(repr, unseen[:5])) + (" ..." if len(unseen) > 5 else "")
        raise DataError(
            f"{val}: label(s) {shown} never occur in {train}; a classifier cannot predict a class it "
            f"never saw (the training labels are {', '.join(map(repr, labels[:8]))}{' ...' if len(labels) > 8 else ''})"
        )
    return LabelledData(train_examples, val_examples, labels, val)


def classifier_from(
    run, family: str, saved_model: dict[str, Any], labels: list[str], from_scratch: bool
) -> nn.Module:
    """The checkpoint's architecture with a fresh head for ``labels``; its weights unless from scratch.

    The family says how its head is made (``classifier_config`` of its class: models/gpt.py,
    models/bert.py); a family without one cannot classify.
    """
    from lmforge.models.registry import build_model

    config, fresh = classifier_class(family).classifier_config(saved_model, labels)
    torch.manual_seed(0)
    model = build_model(family, config)
    if not from_scratch:
        which = "best" if run.weights_path("best").exists() else "last"
        run.load_weights(model, which, fresh=fresh)  # the new head keeps its initialisation
    return model


def classifier_class(family: str) -> type:
    """The model class of ``family`` if it can carry a classifier head; else one clear line."""
    from lmforge.models.registry import FAMILIES, model_class

    cls = model_class(family)
    if not hasattr(cls, "classifier_config"):
        able = [name for name in FAMILIES if hasattr(model_class(name), "classifier_config")]
        raise CheckpointError(
            f"the checkpoint holds a {family} model, which has no classifier head; classification "
            f"fine-tuning needs a Transformer run ({' or '.join(able)}): pretrain one with --model bert-nano or gpt-nano"
        )
    return cls


def plain_weights(model: nn.Module) -> nn.Module:
    """``model`` itself, or for a LoRA-wrapped one a merged copy (the training model keeps its adapters)."""
    from lmforge.finetune.lora import is_lora, merge_lora

    if not is_lora(model):
        return model
    import copy

    return merge_lora(copy.deepcopy(model))


def batch_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Class logits (B, num_labels) of a collated batch, its rows in groups of similar length
    where that computes fewer padded positions (``models/length_groups.py``: the same logits)."""
    mask = batch["attention_mask"]
    groups = plan_groups(mask, compute_dtype(model))
    return model.sequence_logits(batch["input_ids"], mask, batch["token_type_ids"], groups=groups)


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over the batch's examples (the trainer divides by their count)."""
    logits = batch_logits(model, batch)
    return F.cross_entropy(logits.float(), batch["labels"], reduction="sum"), batch["labels"].numel()


@torch.no_grad()
def predict_rows(
    model: nn.Module, rows: list, pad_id: int, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Class probabilities (N, num_labels) of encoded rows, in their order, computed in batches of
    rows of similar length (sorted by it), so that little of a batch is padding."""
    order = sorted(range(len(rows)), key=lambda row: len(rows[row].ids))
    context = getattr(model, "context_limit", None)
    probs = []
    for start in range(0, len(order), batch_size):
        batch = collate([rows[row] for row in order[start : start + batch_size]], None, pad_id, context)
        batch = {key: value.to(device) for key, value in batch.items()}
        probs.append(torch.softmax(batch_logits(model, batch).float(), dim=-1).cpu())
    return torch.cat(probs)[torch.argsort(torch.tensor(order))]  # back in the rows' order


def evaluate_rows(
    model: nn.Module, rows: list, labels: list[int], pad_id: int, batch_size: int, num_labels: int
):
    """(mean cross-entropy, confusion matrix) over every row."""
    device = next(model.parameters()).device
    probs = predict_rows(model, rows, pad_id, batch_size, device)
    truth = torch.tensor(labels)
    loss = -torch.log(probs[torch.arange(len(labels)), truth].clamp_min(1e-12)).mean().item()
    return loss, confusion_matrix(labels, probs.argmax(dim=-1).tolist(), num_labels)


@dataclass
class ClassifierJob:
    """One fine-tuning, checked and built, nothing written yet (``recipe.PretrainJob``'s twin)."""

    run_path: Path
    overwrite: bool
    family: str
    net: nn.Module  # the classifier, LoRA adapters applied when asked
    tokenizer: Any
    data: LabelledData
    config: ClassifyConfig  # max_steps resolved from the epochs
    train_rows: list[dict[str, list[int]]]
    train_labels: list[int]
    val_rows: list[dict[str, list[int]]]
    val_labels: list[int]
    task: dict[str, Any]  # config.json's "task": kind, labels, base run, data sources
    context: int  # the model's context, to which longer texts were cut
    cut: tuple[int, int]  # how many training and validation texts were cut to it
    lora_rank: int | None = None

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def describe(self) -> list[str]:
        """The header lines ``finetune classify`` prints before training."""
        base = self.task["base"]
        adapters = f", LoRA rank {self.lora_rank}" if self.lora_rank else ""
        lines = [
            f"model: {self.family} from {base or 'scratch (random weights)'}, {self.net.num_parameters():,} "
            f"parameters ({self.trainable:,} trained{adapters}); head for {len(self.data.labels)} classes",
            f"data: {len(self.data.train):,} training examples ({self.task['train_data']}), "
            f"{len(self.data.val):,} validation ({self.data.val_source}); classes: {', '.join(self.data.labels)}",
        ]
        if any(self.cut):
            lines.append(
                f"cut to the context of {self.context} tokens: {self.cut[0]} training and {self.cut[1]} "
                "validation texts (their ends are not read)"
            )
        return lines


def plan_classifier(
    *,
    checkpoint: str | Path,
    train: str,
    val: str | None,
    out: str | Path,
    settings: ClassifyConfig,
    fields: Fields | None = None,
    from_scratch: bool = False,
    overwrite: bool = False,
    lora=None,
) -> ClassifierJob:
    """Check the inputs, read and encode the examples and build the classifier; writes nothing."""
    from lmforge.fileio import check_output_dir
    from lmforge.run import RUN_OUTPUT, Run

    inputs = [checkpoint, *(Path(s) for s in (train, val) if s is not None and not is_builtin_task(s))]
    check_output_dir(out, overwrite, inputs=inputs, kind=RUN_OUTPUT)  # before any work, and never an input
    source = Run.open(checkpoint)
    saved = source.read_config()
    family = saved["family"]
    layout = classifier_class(family).sequence_layout
    tokenizer = source.load_tokenizer()
    data = load_labelled(train, val, fields or Fields())
    limit = int(saved["model"]["block_size"])
    train_rows, train_cut = encode_examples(data.train, tokenizer, layout, limit)
    val_rows, val_cut = encode_examples(data.val, tokenizer, layout, limit)
    label_id = {name: index for index, name in enumerate(data.labels)}
    net = classifier_from(source, family, saved["model"], data.labels, from_scratch)
    with_lora = lora is not None and lora.enabled
    if with_lora:  # adapters before the optimizer exists; merged on every save
        net = lora.apply(net)
    config = dataclasses.replace(settings, max_steps=settings.steps_for(len(data.train)))
    config.validate()
    if config.activation_checkpointing:
        from lmforge.train.transforms import check_checkpointable

        check_checkpointable(net)
    task = {
        "kind": "classify",
        "labels": data.labels,
        "base": None if from_scratch else str(checkpoint),
        "train_data": str(train),
        "val_data": data.val_source,
    }
    return ClassifierJob(
        run_path=Path(out),
        overwrite=overwrite,
        family=family,
        net=net,
        tokenizer=tokenizer,
        data=data,
        config=config,
        train_rows=train_rows,
        train_labels=[label_id[e.label] for e in data.train],
        val_rows=val_rows,
        val_labels=[label_id[e.label] for e in data.val],
        task=task,
        context=limit,
        cut=(train_cut, val_cut),
        lora_rank=lora.lora_rank if with_lora else None,
    )


def finetune_classifier(*, progress: bool = True, say=print, **plan: Any) -> dict[str, Any]:
    """Fine-tune ``checkpoint``'s model to classify ``train``'s texts into run directory ``out``
    (``plan_classifier``'s arguments), printing what it is about to do through ``say``.

    Returns the summary ``lmforge finetune classify`` prints: accuracy, macro-F1 and the confusion
    matrix (rows true, columns predicted) of the best-validation-loss weights on ``val``.
    """
    job = plan_classifier(**plan)
    for line in job.describe():
        say(line)
    return run_classifier(job, progress=progress)


def run_classifier(job: ClassifierJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into a new run directory; a failure before the first checkpoint leaves none."""
    from lmforge.run import Run

    run = Run.create(job.run_path, overwrite=job.overwrite)
    with run.removed_unless_saved():
        return _train(job, run, progress)


def _train(job: ClassifierJob, run, progress: bool) -> dict[str, Any]:
    from lmforge.train.metrics import MetricsLog, plot_losses
    from lmforge.train.optim import describe_optimizer
    from lmforge.train.trainer import Trainer
    from lmforge.train.transforms import ready_for_training

    net, config, data = job.net, job.config, job.data
    pad = padding_id(job.tokenizer)
    run.save_tokenizer(job.tokenizer)
    run.write_config(
        {
            "family": job.family,
            "model": net.config.to_dict(),
            "train": dataclasses.asdict(config),
            "task": job.task,
        }
    )
    train_model, transforms, device = ready_for_training(net, config)
    eval_batch = max(2 * config.batch_size, 32)
    classes = len(data.labels)

    # --eval-batches: an even spread of the validation set (labels may come grouped)
    periodic = list(range(len(job.val_rows)))
    if config.eval_batches is not None:
        periodic = evenly_spread(periodic, config.eval_batches * eval_batch)
    periodic_rows = [job.val_rows[i] for i in periodic]
    periodic_labels = [job.val_labels[i] for i in periodic]

    def evaluate(model: nn.Module) -> dict[str, float]:
        loss, counts = evaluate_rows(model, periodic_rows, periodic_labels, pad, eval_batch, classes)
        return {"loss": loss, "accuracy": accuracy(counts), "macro_f1": macro_f1(counts)}

    def save(tag: str, _model: nn.Module, state: dict | None) -> None:
        # a plain checkpoint either way: LoRA adapters are merged into a copy of the weights
        run.save_weights(plain_weights(net), "best" if tag == "best" else "last")
        if state is not None:
            run.save_train_state(state)

    metrics = MetricsLog(run.metrics_path)
    trainer = Trainer(
        train_model,
        config,
        ShuffledBatches(job.train_rows, job.train_labels, config.batch_size, pad, config.seed, job.context),
        evaluate=evaluate,
        save=save,
        log=metrics.write,
        progress=progress and sys.stderr.isatty(),
        objective=classification_loss,
    )
    try:
        result = trainer.fit()
    finally:
        metrics.close()
    title = f"{run.path.name}: {job.family} classifier, {classes} classes"
    plot_losses(run.metrics_path, run.plot_path, title=title)
    best = run.load_model("best").to(device)  # the plain model, as predict and convert will load it
    loss, counts = evaluate_rows(best, job.val_rows, job.val_labels, pad, eval_batch, classes)
    plot_confusion(
        counts,
        data.labels,
        run.path / CONFUSION_PLOT,
        title=f"{run.path.name}: " + f"accuracy {accuracy(counts):.1%}, macro-F1 {macro_f1(counts):.3f}",
    )
    return {
        "run": str(run.path),
        "family": job.family,
        "from_scratch": job.task["base"] is None,
        "labels": data.labels,
        "steps": result.steps,
        "examples_seen": result.steps * config.batch_size * config.grad_accum,
        "elapsed_s": round(result.elapsed_s, 2),
        "s_per_step": round(result.elapsed_s / max(result.steps, 1), 4),
        "train_loss": result.last_train_loss,
        "val_loss": loss,
        "accuracy": accuracy(counts),
        "macro_f1": macro_f1(counts),
        "confusion": counts.tolist(),
        "confusion_table": confusion_table(counts, data.labels),
        "parameters": best.num_parameters(),
        "trainable_parameters": job.trainable,
        "texts_cut": sum(job.cut),
        "interrupted": result.interrupted,
        "transforms": [t.name for t in transforms],
        "optimizer": describe_optimizer(trainer.optimizer),
        "plot": str(run.plot_path),
        "confusion_plot": str(run.path / CONFUSION_PLOT),
    }
