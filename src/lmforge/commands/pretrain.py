"""``lmforge pretrain``: train a language model from scratch on a prepared dataset.

    lmforge pretrain --data data/shakespeare-char --out runs/gpt --max-time 60                 # gpt-nano
    lmforge pretrain --data data/shakespeare-char --out runs/lstm --model lstm --max-time 60   # an LSTM

Parsing and printing only: the recipe is ``recipe.py``, the flags of the model shape and of
training are the fields of ``ModelSettings`` and ``TrainConfig``, declared once with their help.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

from lmforge.bounds import OUT_DIR, PREPARED_MIXTURE, RUN_DIR, Named
from lmforge.commands._json import print_json
from lmforge.train.config import TrainConfig
from lmforge.train.model_settings import ModelSettings


def _preset_names() -> list[str]:
    from lmforge.models.registry import preset_names

    return preset_names()


MODEL = Named(_preset_names, "model preset")


def pretrain(
    *,
    data: Annotated[list[str] | None, PREPARED_MIXTURE] = None,
    out: Annotated[Path | None, OUT_DIR] = None,
    model: Annotated[str | None, MODEL] = None,
    shape: Annotated[dict[str, Any] | None, ModelSettings] = None,
    train: Annotated[dict[str, Any] | None, TrainConfig] = None,
    resume: Annotated[Path | None, RUN_DIR] = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Pretrain a model on a prepared dataset, writing a run directory.

    The run directory holds config.json, model.safetensors (last) and best/model.safetensors
    (best validation loss), train_state.pt for --resume, metrics.jsonl and loss.png. Ctrl-C
    saves a checkpoint and stops; `--resume RUN` continues exactly where it stopped, with the
    run's own settings except the flags given again.

    The same command runs on several processes under torchrun, e.g. `torchrun --nproc-per-node 4
    -m lmforge pretrain ... --parallel tp=2,fsdp`: --batch-size stays the batch of all processes
    together, so the losses are those of one process; rank 0 prints and writes the run, and
    with fsdp or tp the training state is saved sharded (train_state.dcp/), which --resume
    reads at any number of processes, one included.

    Args:
        data: a directory written by `lmforge prepare` (needs meta.json, train.bin, val.bin; for an
            encoder-decoder, the pairs of `lmforge prepare --task seq2seq`), or a
            mixture of several that share one tokenizer, each DIR:WEIGHT (web/:0.7 books/:0.3): each
            row of a batch comes from a source with probability its weight (normalised), whatever
            the sizes; the summary reports the tokens and epochs of each source.
        out: the run directory to create.
        model: a preset (default gpt-nano). Transformers (family gpt): gpt-nano, gpt-mini, gpt2,
            gpt2-medium, gpt2-large, gpt2-xl. gpt-nano brings the CPU speed-run recipe as its
            defaults (--qk-norm, --optimizer muon --muon-lr 0.03 --lr 6e-3 --batch-size 16); any
            flag given goes over them. BERT encoders, trained as masked LMs on [CLS] ... [SEP]
            windows, 15 percent masked (data prepared with --tokenizer wordpiece): bert-nano, bert-mini,
            bert-base. Classic models, one preset per family: window
            (fixed-window neural LM, Bengio et al. 2003), rnn (Elman RNN), lstm, gru, and ngram
            (counted, not trained; takes --order, --smoothing, --add-k, --discount). Encoder-decoders,
            trained on source/target pairs (data prepared with --task seq2seq; the loss is over the
            target tokens): seq2seq-nano, seq2seq-small (Transformer), rnn-attn, rnn-attn-additive,
            rnn-seq2seq (GRU encoder-decoder with dot, additive or no attention). Each model
            flag names the families it applies to; a flag for another family is refused.
        resume: continue the run in this directory (its model and settings; --data defaults to its data).
        overwrite: replace an existing --out run directory.
        progress: show a progress bar.

    Examples:
        lmforge prepare --data builtin:stdlib-docs --tokenizer char --out data/stdlib-char
        lmforge pretrain --data data/stdlib-char --out runs/stdlib --max-time 60
        lmforge pretrain --resume runs/stdlib --max-time 120
        lmforge pretrain --data data/stdlib-char:0.7 my_notes_prepared:0.3 --out runs/mix --max-time 60
        lmforge pretrain --data data/stdlib-char --out runs/lstm --model lstm --n-layer 2 --max-time 60
        lmforge pretrain --data data/stdlib-char --out runs/window --model window --context 12 --max-time 60
        lmforge prepare --task seq2seq --data 'builtin:copy?length=3-8,size=3000' --tokenizer char --out data/copy
        lmforge pretrain --data data/copy --out runs/copy --model rnn-attn --batch-size 64 --max-steps 300
        lmforge pretrain --data data/stdlib-char --out runs/gpt2-shaped --pos-encoding learned --norm layernorm --mlp gelu --bias --no-qk-norm --max-time 60
    """
    from lmforge.models.registry import is_counted

    shape, train = shape or {}, train or {}
    if isinstance(data, (str, Path)):  # a Python caller's, or a --config recipe's, single directory
        data = [str(data)]
    if model is not None and is_counted(model):  # counted, not trained: none of the trainer's flags apply
        from lmforge.commands.pretrain_ngram import pretrain_ngram
        from lmforge.errors import UserInputError

        if data is not None and len(data) > 1:
            raise UserInputError(f"--model {model} counts one dataset; a mixture is for trained models")
        return pretrain_ngram(
            preset=model,
            data=Path(data[0]) if data else None,
            out=out,
            resume=resume,
            settings=shape,
            train=train,
            overwrite=overwrite,
            as_json=as_json,
        )
    from lmforge.parallel.launch import launched_rank
    from lmforge.recipe import plan_pretraining, run_pretraining

    job = plan_pretraining(
        data=data, out=out, model=model, shape=shape, train=train, resume=resume, overwrite=overwrite
    )
    main = launched_rank() == 0  # under torchrun, rank 0 alone speaks
    if main and not as_json:
        print("\n".join(job.describe()))
    for line in job.warnings() if main else []:
        print(line, file=sys.stderr)
    summary = run_pretraining(job, progress=progress)
    if main and as_json:
        print_json(summary)
    elif main:
        print_summary(summary)
    if summary["interrupted"]:
        raise KeyboardInterrupt  # saved; exit 130 like every command stopped by Ctrl-C
    return summary


def print_summary(summary: dict) -> None:
    if summary["interrupted"]:
        print(
            f"interrupted at step {summary['steps']}; checkpoint saved. "
            f"Continue with: lmforge pretrain --resume {summary['run']}"
        )
    print(
        f"trained {summary['steps']} steps ({summary['tokens']:,} tokens) in {summary['elapsed_s']:.1f} s, "
        f"{summary['tokens_per_s']:,.0f} tokens/s"
    )
    first, last = summary["first_val_loss"], summary["val_loss"]
    if first is not None and last is not None:
        print(
            f"validation loss {first:.4f} -> {last:.4f} (perplexity {math.exp(first):.1f} -> "
            f"{summary['val_perplexity']:.2f}); best {summary['best_val_loss']:.4f}"
        )
    if summary.get("val_accuracy") is not None:
        print(
            f"masked-token accuracy {summary['val_accuracy']:.1%} (loss and perplexity above: masked tokens only)"
        )
    for source in summary.get("sources", []):
        val = f", val loss {source['val_loss']:.4f}" if source.get("val_loss") is not None else ""
        print(
            f"  {source['name']}: weight {source['weight']:.1%}, {source['tokens']:,} tokens = "
            f"{source['epochs']:.3g} epochs of its {source['train_tokens']:,}{val}"
        )
    print(f"run directory: {summary['run']}   curves: {summary['plot']}")


def pretrain_with(**flags: Any) -> dict:
    """``pretrain`` called with flat flag names, as on the command line (``n_layer=2, max_time=30``):
    for scripts (the demo, the benchmarks) that would rather not sort flags into groups."""
    shape_names, train_names = set(ModelSettings.__dataclass_fields__), set(TrainConfig.__dataclass_fields__)
    shape = {k: flags.pop(k) for k in list(flags) if k in shape_names}
    train = {k: flags.pop(k) for k in list(flags) if k in train_names}
    return pretrain(shape=shape, train=train, **flags)
