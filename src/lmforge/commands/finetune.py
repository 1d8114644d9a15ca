"""``lmforge finetune classify`` (label texts) and ``lmforge finetune sft`` (answer in a chat format).

Parsing and printing only: the recipes are ``finetune/classify.py`` and ``finetune/sft.py``, their
training flags the fields of ``finetune/settings.py``'s ``ClassifyConfig`` and ``SFTConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from lmforge.bounds import OUT_DIR, RUN_DIR, Text
from lmforge.commands._json import print_json
from lmforge.finetune.lora import LoRASettings
from lmforge.finetune.settings import ClassifyConfig, SFTConfig

EXAMPLES = Text(what="labelled examples: a .jsonl or .csv file, hf:NAME[@SPLIT] or builtin:stdlib-topics")
FIELD = Text(what="a field name")
CHATS = Text(what="chat examples: a .jsonl file or builtin:stdlib-instruct")


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


def sft(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    data: Annotated[str, CHATS],
    out: Annotated[Path, OUT_DIR],
    val: Annotated[str | None, CHATS] = None,
    no_packing: bool = False,
    settings: Annotated[dict[str, Any] | None, SFTConfig] = None,
    lora: Annotated[dict[str, Any] | None, LoRASettings] = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Supervised fine-tuning: teach a pretrained GPT-like run to answer in a chat format.

    Each example is rendered with the run's chat template (RUN/tokenizer/chat_template.jinja, as
    Hugging Face tokenizers keep it; without one the default "User: ...\\n\\nAssistant: ..." format)
    and the loss is on the assistant's tokens only: the prompt, system and user turns are context,
    never targets. Every response ends with an end token that is trained too (the template's
    end-of-turn token, else end-of-text), so the model learns where to stop. Short examples are
    packed several to a block, each seeing only itself (block-diagonal attention, positions from 0);
    --no-packing pads each example instead. A conversation longer than the context loses its
    oldest tokens; one whose last answer alone does not fit is skipped (counted in the header).

    Every weight trains, or with --lora-rank R only rank-R adapters (merged into the saved weights).
    The new run is a plain causal run that keeps the tokenizer and the chat template it was trained
    with: `lmforge chat --checkpoint OUT` talks to it, and generate, score and serve read it too.

    Examples are one JSON object per line: {"prompt": "...", "completion": "..."} (one turn) or
    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...]} (any turns;
    every assistant turn is trained). builtin:stdlib-instruct asks "Explain what `json.dumps(obj,
    ...)` does." and answers with the docstring's first paragraph; its own validation split (other
    modules) is used when --val is not given. A file without --val has a tenth held out.

    Args:
        checkpoint: a causal Transformer run (GPT or Llama: lmforge pretrain, or convert --from-hf).
        data: the training examples.
        out: the run directory to create.
        val: the validation examples (default: the built-in data's validation split, or a held-out
            tenth of --data).
        no_packing: one example per batch row, right-padded, instead of packing short examples.
        overwrite: replace an existing --out run directory.
        progress: show a progress bar.
        as_json: print the summary as one JSON object.

    Examples:
        lmforge finetune sft --checkpoint my_gpt_run --data builtin:stdlib-instruct --out runs/sft --max-steps 300
        lmforge finetune sft --checkpoint my_gpt_run --data my_chats.jsonl --val my_val.jsonl --out runs/sft-mine --epochs 3 --lora-rank 8
    """
    from lmforge.finetune.sft import finetune_sft

    config = SFTConfig(**(settings or {}))
    config.validate()
    say = (lambda line: None) if as_json else print
    summary = finetune_sft(
        checkpoint=checkpoint,
        data=data,
        val=val,
        out=out,
        settings=config,
        packing=not no_packing,
        overwrite=overwrite,
        progress=progress,
        lora=LoRASettings(**(lora or {})),
        say=say,
    )
    if as_json:
        print_json(summary)
    else:
        if summary["interrupted"]:
            print(f"interrupted at step {summary['steps']}; the best weights so far are saved")
        print(
            f"trained {summary['steps']} steps on {summary['examples']:,} examples in {summary['elapsed_s']:.1f} s, "
            f"{summary['s_per_step']:.3f} s/step"
        )
        first = summary["first_val_loss"]
        before = f"{first:.4f} -> " if first is not None else ""
        print(f"validation loss on the assistant's tokens: {before}{summary['val_loss']:.4f} (best weights)")
        print(f"run directory: {summary['run']}   curves: {summary['plot']}")
        print(f"next: lmforge chat --checkpoint {summary['run']}")
    if summary["interrupted"]:
        raise KeyboardInterrupt
    return summary
