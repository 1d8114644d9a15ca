"""Fine-tune a pretrained Transformer (BERT or GPT) to classify texts: the lectures' pretrain ->
fine-tune paradigm, on the same trainer and run directory as pretraining.

    summary = finetune_classifier(
        checkpoint="runs/bert", train="builtin:stdlib-topics", val=None, out="runs/topics",
        settings=ClassifyConfig(epochs=3),
    )
    summary["accuracy"], summary["macro_f1"], summary["confusion"]

The model is the checkpoint's own architecture with a new head: BERT reads the pooled [CLS]
state (BertForSequenceClassification), GPT the state of each text's last token
(GPT2ForSequenceClassification); both through ``model.sequence_logits``. ``from_scratch`` builds
the same architecture with random weights, the control that shows what pretraining bought.
Every weight trains (full fine-tuning); the objective is cross-entropy summed over examples.
The run directory is an ordinary run (config.json, weights, metrics.jsonl, loss.png) plus the
label names in config.json's "task" and ``confusion.png``; ``lmforge predict`` reads it.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import CheckpointError, DataError, UserInputError
from lmforge.finetune.batches import ShuffledBatches, collate, encode_examples, padding_id
from lmforge.finetune.examples import Example, Fields, is_builtin_task, read_examples
from lmforge.finetune.metrics import accuracy, confusion_matrix, confusion_table, macro_f1, plot_confusion
from lmforge.finetune.settings import ClassifyConfig

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


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over the batch's examples (the trainer divides by their count)."""
    logits = model.sequence_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return F.cross_entropy(logits.float(), batch["labels"], reduction="sum"), batch["labels"].numel()


@torch.no_grad()
def predict_rows(
    model: nn.Module, rows: list, pad_id: int, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Class probabilities (N, num_labels) of encoded rows, in batches."""
    probs = []
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size], None, pad_id)
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = model.sequence_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(probs)


def evaluate_rows(
    model: nn.Module, rows: list, labels: list[int], pad_id: int, batch_size: int, num_labels: int
):
    """(mean cross-entropy, confusion matrix) over every row."""
    device = next(model.parameters()).device
    probs = predict_rows(model, rows, pad_id, batch_size, device)
    truth = torch.tensor(labels)
    loss = -torch.log(probs[torch.arange(len(labels)), truth].clamp_min(1e-12)).mean().item()
    return loss, confusion_matrix(labels, probs.argmax(dim=-1).tolist(), num_labels)


def finetune_classifier(
    *,
    checkpoint: str | Path | None,
    train: str,
    val: str | None,
    out: str | Path,
    settings: ClassifyConfig,
    fields: Fields | None = None,
    from_scratch: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    lora=None,
    say=print,
) -> dict[str, Any]:
    """Fine-tune ``checkpoint``'s model to classify ``train``'s texts into run directory ``out``.

    Returns the summary ``lmforge finetune classify`` prints: accuracy, macro-F1 and the confusion
    matrix (rows true, columns predicted) of the best-validation-loss weights on ``val``.
    """
    from lmforge.fileio import check_output_dir
    from lmforge.hardware import resolve_device
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
    train_labels = [label_id[e.label] for e in data.train]
    val_labels = [label_id[e.label] for e in data.val]
    net = classifier_from(source, family, saved["model"], data.labels, from_scratch)
    if lora is not None and lora.enabled:  # adapters before the optimizer exists; merged on every save
        net = lora.apply(net)
    max_steps = settings.steps_for(len(data.train))
    config = dataclasses.replace(settings, max_steps=max_steps)
    config.validate()
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    adapters = f", LoRA rank {lora.lora_rank}" if lora is not None and lora.enabled else ""
    say(
        f"model: {family} from {'scratch (random weights)' if from_scratch else checkpoint}, "
        f"{net.num_parameters():,} parameters ({trainable:,} trained{adapters}); head for {len(data.labels)} classes"
    )
    say(
        f"data: {len(data.train):,} training examples ({train}), {len(data.val):,} validation "
        f"({data.val_source}); classes: {', '.join(data.labels)}"
    )
    if train_cut or val_cut:
        say(
            f"cut to the context of {limit} tokens: {train_cut} training and {val_cut} validation "
            "texts (their ends are not read)"
        )
    run = Run.create(out, overwrite=overwrite)
    try:
        return _train(
            run,
            net,
            family,
            data,
            config,
            train_rows,
            train_labels,
            val_rows,
            val_labels,
            tokenizer,
            from_scratch,
            checkpoint,
            train,
            progress,
            trainable,
            train_cut + val_cut,
            resolve_device(config.device),
        )
    except BaseException:
        if not run.weights_path("last").exists():  # a run that never saved would block the next attempt
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _train(
    run,
    net,
    family,
    data,
    config,
    train_rows,
    train_labels,
    val_rows,
    val_labels,
    tokenizer,
    from_scratch,
    checkpoint,
    train,
    progress,
    trainable,
    cut,
    device,
) -> dict[str, Any]:
    from lmforge.train.metrics import MetricsLog, plot_losses
    from lmforge.train.trainer import Trainer

    pad = padding_id(tokenizer)
    run.save_tokenizer(tokenizer)
    run.write_config(
        {
            "family": family,
            "model": net.config.to_dict(),
            "train": dataclasses.asdict(config),
            "task": {
                "kind": "classify",
                "labels": data.labels,
                "base": None if from_scratch else str(checkpoint),
                "train_data": str(train),
                "val_data": data.val_source,
            },
        }
    )
    net.to(device)
    eval_batch = max(2 * config.batch_size, 32)

    def evaluate(model: nn.Module) -> dict[str, float]:
        loss, counts = evaluate_rows(model, val_rows, val_labels, pad, eval_batch, len(data.labels))
        return {"loss": loss, "accuracy": accuracy(counts), "macro_f1": macro_f1(counts)}

    def save(tag: str, _model: nn.Module, state: dict | None) -> None:
        # a plain checkpoint either way: LoRA adapters are merged into a copy of the weights
        run.save_weights(plain_weights(net), "best" if tag == "best" else "last")
        if state is not None:
            run.save_train_state(state)

    metrics = MetricsLog(run.metrics_path)
    trainer = Trainer(
        net,
        config,
        ShuffledBatches(train_rows, train_labels, config.batch_size, pad, config.seed),
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
    title = f"{run.path.name}: {family} classifier, {len(data.labels)} classes"
    plot_losses(run.metrics_path, run.plot_path, title=title)
    net = run.load_model("best").to(device)  # the plain model, as predict and convert will load it
    loss, counts = evaluate_rows(net, val_rows, val_labels, pad, eval_batch, len(data.labels))
    plot_confusion(
        counts,
        data.labels,
        run.path / CONFUSION_PLOT,
        title=f"{run.path.name}: " + f"accuracy {accuracy(counts):.1%}, macro-F1 {macro_f1(counts):.3f}",
    )
    return {
        "run": str(run.path),
        "family": family,
        "from_scratch": from_scratch,
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
        "parameters": net.num_parameters(),
        "trainable_parameters": trainable,
        "texts_cut": cut,
        "interrupted": result.interrupted,
        "plot": str(run.plot_path),
        "confusion_plot": str(run.path / CONFUSION_PLOT),
    }
