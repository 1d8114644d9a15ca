"""``lmforge evaluate``: loss and perplexity of a trained model over a whole split or text; for a
seq2seq run also BLEU, chrF and exact match of its decoded outputs (``evaluate_seq2seq.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, POSITIVE, RUN_DIR, SOURCES, Bounds, Text
from lmforge.commands._json import print_json
from lmforge.errors import DataError


def evaluate(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    data: Annotated[list[str], SOURCES],
    split: Literal["val", "train"] = "val",
    stride: Annotated[int | None, POSITIVE] = None,
    block_size: Annotated[int | None, POSITIVE] = None,
    batch_size: Annotated[int, Bounds(positive=True, at_most=100_000)] = 8,
    weights: Literal["auto", "best", "last"] = "auto",
    text_field: Annotated[str, Text(what="a field name")] = "text",
    errors: Literal["strict", "replace"] = "strict",
    device: Annotated[str, DEVICE] = "auto",
    num_beams: Annotated[int, Bounds(positive=True, at_most=64)] = 1,
    max_new_tokens: Annotated[int | None, Bounds(positive=True, at_most=100_000)] = None,
    max_pairs: Annotated[int | None, POSITIVE] = None,
    source_field: Annotated[str, Text(what="a field name")] = "source",
    target_field: Annotated[str, Text(what="a field name")] = "target",
    examples: Annotated[int, Bounds(non_negative=True, at_most=100_000)] = 0,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Loss and perplexity of a run's model over every token of a split or a text source.

    A seq2seq run (pretrained with --model seq2seq-nano, rnn-attn, ...) is evaluated on
    source/target pairs: the loss and perplexity of the reference targets (teacher forcing), and
    the BLEU and chrF (sacrebleu, corpus level, signatures printed) and exact match of what it
    writes for each source, greedily or with --num-beams N beam search.

    Perplexity = exp(mean cross-entropy per token). Windows do not overlap by default, so a
    token early in a window sees little context; --stride S slides windows by S tokens and
    scores only the last S of each, giving every token nearly a full context (slower).
    Recurrent and window models read inputs of any length: each window starts from a zero
    state, and --block-size may exceed their training window.

    Args:
        checkpoint: a run directory written by `lmforge pretrain`.
        data: a prepared dataset directory, or raw text sources (files, directories, globs,
            .jsonl, tables, corpus names, URLs, hf:NAME, builtin:NAME) tokenized with the run's
            tokenizer. A seq2seq run: a prepared seq2seq dataset, a .jsonl or .tsv file of pairs,
            two parallel text files, or builtin:TASK (its --split as prepare would make it).
        split: which split of a prepared dataset: val or train.
        stride: slide windows by this many tokens (default: block size, no overlap).
        block_size: window length (default: the model's block size; for gpt also the maximum).
        batch_size: windows per forward pass.
        weights: best (lowest validation loss), last, or auto (best when it exists).
        text_field: the field (.jsonl) or column (hf:, .parquet, .csv, .arrow) holding the text.
        errors: bytes that are not UTF-8: stop and say where (strict), or read them as U+FFFD (replace).
        device: auto, cpu, cuda.
        num_beams: seq2seq: 1 decodes greedily; N > 1 with beam search of N beams.
        max_new_tokens: seq2seq: the longest output (default: 2 x the source + 10, within the model's limit).
        max_pairs: seq2seq: score at most this many pairs, spread evenly over the split.
        source_field: seq2seq .jsonl pairs: the field holding the source.
        target_field: seq2seq .jsonl pairs: the field holding the target.
        examples: seq2seq: also show this many sources with the model's output and the reference.
        progress: seq2seq: show a progress bar while decoding.

    Examples:
        lmforge evaluate --checkpoint runs/stdlib --data data/stdlib-char
        lmforge evaluate --checkpoint runs/stdlib --data my_notes.txt --stride 32 --json
        lmforge evaluate --checkpoint runs/stdlib --data wikitext-2-test
        lmforge evaluate --checkpoint runs/copy --data data/copy --num-beams 4 --max-pairs 100 --json
        lmforge evaluate --checkpoint runs/copy --data 'builtin:copy?length=9-12' --examples 5
    """
    if _holds_seq2seq(checkpoint):
        from lmforge.evaluate_seq2seq import evaluate_seq2seq

        result = evaluate_seq2seq(
            checkpoint,
            data,
            split=split,
            weights=weights,
            device=device,
            batch_size=batch_size,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            max_pairs=max_pairs,
            source_field=source_field,
            target_field=target_field,
            errors=errors,
            progress=progress and not as_json,
            examples=examples,
        )
        _report_seq2seq(result, as_json)
        return result
    from lmforge.inference import check_window, evaluation_tokens, load_for_inference, stream_loss

    loaded = load_for_inference(checkpoint, causal_for="lmforge evaluate", weights=weights, device=device)
    window = check_window(loaded.model, block_size, stride)  # None: scored as one stream (n-gram)
    tokens, described = evaluation_tokens(data, loaded.run, loaded.tokenizer, split, text_field, errors)
    if len(tokens) < 2:
        raise DataError(
            f"{described} holds {len(tokens)} tokens; at least 2 are needed to score a prediction"
        )
    loss, count = stream_loss(
        loaded.model, tokens, block_size=window, stride=stride, batch_size=batch_size, device=loaded.device
    )
    return _report(loss, count, described, as_json)


def _report(loss: float, count: int, described: str, as_json: bool) -> dict:
    from lmforge.train.evaluation import perplexity

    result = {"loss": loss, "perplexity": perplexity(loss), "tokens": count}
    if as_json:
        print_json(result)
    else:
        print(
            f"{described}: {count:,} tokens scored, loss {loss:.4f} nats/token, perplexity {result['perplexity']:.3f}"
        )
    return result


def _holds_seq2seq(checkpoint: Path) -> bool:
    from lmforge.recipe_seq2seq import family_is_seq2seq
    from lmforge.run import Run

    return family_is_seq2seq(Run.open(checkpoint).read_config()["family"])


def _report_seq2seq(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    print(
        f"{result['data']}: {result['pairs']:,} pairs, {result['target_tokens']:,} target tokens: loss "
        f"{result['loss']:.4f} nats/token, perplexity {result['perplexity']:.3f}"
    )
    print(
        f"{result['decoding']}: BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  "
        f"exact match {result['exact_match']:.1f}%"
    )
    print(f"  BLEU signature: {result['bleu_signature']}")
    print(f"  chrF signature: {result['chrf_signature']}")
    for example in result.get("examples", []):
        print(f"  {example['source']!r} -> {example['output']!r} (reference {example['reference']!r})")
