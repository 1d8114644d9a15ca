"""``lmforge finetune classify``: adapt a pretrained run to label texts.

Parsing and printing only: the recipe is ``finetune/classify.py``, its training flags the fields
of ``finetune/settings.py``'s ``ClassifyConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from lmforge.bounds import OUT_DIR, RUN_DIR, Text
from lmforge.commands._json import print_json
from lmforge.finetune.lora import LoRASettings
from lmforge.finetune.settings import ClassifyConfig

EXAMPLES = Text(what="labelled examples: a .jsonl or .csv file, hf:NAME[@SPLIT] or builtin:stdlib-topics")
FIELD = Text(what="a field name")


def classify(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    train: Annotated[str, EXAMPLES],
    out: Annotated[Path, OUT_DIR],
    val: Annotated[str | None, EXAMPLES] = None,
    text_field: Annotated[str, FIELD] = "text",
    label_field: Annotated[str, FIELD] = "label",
    text_pair_field: Annotated[str | None, FIELD] = None,
    from_scratch: bool = False,
    settings: Annotated[dict[str, Any] | None, ClassifyConfig] = None,
    lora: Annotated[dict[str, Any] | None, LoRASettings] = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Fine-tune a pretrained BERT or GPT run to classify texts, into a new run directory.

    BERT reads the pooled [CLS] state, GPT the state of each text's last token; both get a new
    linear head for the training labels and every weight trains, or with --lora-rank R only
    rank-R adapters on the attention and MLP linears (peft; the base stays frozen, the adapters are
    merged into the saved weights, so the run loads and converts as a plain checkpoint). Each evaluation reports
    validation loss, accuracy and macro-F1 (metrics.jsonl, loss.png); at the end the
    best-validation weights are scored again and their confusion matrix is printed and drawn
    (confusion.png). `lmforge predict --checkpoint OUT` then labels new texts.

    Examples are one JSON object per line ({"text": ..., "label": ...}; a .csv file with a header
    row works too), or builtin:stdlib-topics: docstring paragraphs of the standard library
    labelled with their package (asyncio, email, http, ...), whose own validation split (by
    module) is used when --val is not given.

    Args:
        checkpoint: a BERT or GPT run (lmforge pretrain, or convert --from-hf of a BERT).
        train: the training examples.
        out: the run directory to create.
        val: the validation examples (default: the built-in task's own validation split).
        text_field: the field (column) holding the text.
        label_field: the field holding the label (a name or a number).
        text_pair_field: the field holding a second text, for sentence-pair tasks (BERT: segment 1).
        from_scratch: the checkpoint's architecture and tokenizer with random weights (the control
            that shows what pretraining is worth).
        overwrite: replace an existing --out run directory.
        progress: show a progress bar.

    Examples:
        lmforge prepare --data builtin:stdlib-docs --tokenizer wordpiece --vocab-size 4096 --lowercase --out data/stdlib-wp
        lmforge pretrain --data data/stdlib-wp --out runs/bert --model bert-nano --max-steps 300
        lmforge finetune classify --checkpoint runs/bert --train builtin:stdlib-topics --out runs/topics --epochs 2
        lmforge finetune classify --checkpoint runs/bert --train builtin:stdlib-topics --out runs/topics-scratch --epochs 2 --from-scratch
        lmforge finetune classify --checkpoint runs/bert --train builtin:stdlib-topics --out runs/topics-lora --epochs 2 --lora-rank 4
    """
    from lmforge.finetune.classify import finetune_classifier
    from lmforge.finetune.examples import Fields

    config = ClassifyConfig(**(settings or {}))
    config.validate()
    say = (lambda line: None) if as_json else print
    summary = finetune_classifier(
        checkpoint=checkpoint,
        train=train,
        val=val,
        out=out,
        settings=config,
        fields=Fields(text_field, label_field, text_pair_field),
        from_scratch=from_scratch,
        overwrite=overwrite,
        progress=progress,
        lora=LoRASettings(**(lora or {})),
        say=say,
    )
    if as_json:
        print_json({k: v for k, v in summary.items() if k != "confusion_table"})
    else:
        print_summary(summary)
    if summary["interrupted"]:
        raise KeyboardInterrupt  # saved; exit 130 like every command stopped by Ctrl-C
    return summary


def print_summary(summary: dict) -> None:
    if summary["interrupted"]:
        print(f"interrupted at step {summary['steps']}; the best weights so far are saved")
    print(
        f"trained {summary['steps']} steps ({summary['examples_seen']:,} examples) in "
        f"{summary['elapsed_s']:.1f} s, {summary['s_per_step']:.3f} s/step"
    )
    print(
        f"validation (best weights): accuracy {summary['accuracy']:.1%}, macro-F1 {summary['macro_f1']:.3f}, "
        f"loss {summary['val_loss']:.4f}"
    )
    print(summary["confusion_table"])
    print(
        f"run directory: {summary['run']}   curves: {summary['plot']}   confusion: {summary['confusion_plot']}"
    )
    print(f'next: lmforge predict --checkpoint {summary["run"]} --text "..."')
