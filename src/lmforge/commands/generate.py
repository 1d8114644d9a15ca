"""``lmforge generate``: continue prompts with a trained model (greedy, sampling or beam search)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, FREE_TEXT, NON_NEGATIVE, POSITIVE, RUN_DIR, SEED, Bounds, InputPath, Text
from lmforge.commands._json import print_json
from lmforge.errors import UserInputError

TOP_ALTERNATIVES = 5
ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def generate(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    prompt: Annotated[str, FREE_TEXT] = "",
    prompt_file: Annotated[Path | None, InputPath("file", "a UTF-8 text file of prompts")] = None,
    source: Annotated[str | None, Text(what="a source text")] = None,
    source_file: Annotated[Path | None, InputPath("file", "a UTF-8 text file of sources")] = None,
    strategy: Literal["sample", "greedy", "beam"] = "sample",
    max_new_tokens: Annotated[int, Bounds(positive=True, at_most=1_000_000)] = 200,
    min_new_tokens: Annotated[int, NON_NEGATIVE] = 0,
    temperature: Annotated[float, NON_NEGATIVE] = 0.8,
    top_k: Annotated[int, NON_NEGATIVE] = 200,
    top_p: Annotated[float, Bounds(positive=True, at_most=1.0)] = 1.0,
    repetition_penalty: Annotated[float, POSITIVE] = 1.0,
    num_beams: Annotated[int, Bounds(positive=True, at_most=1_000)] = 4,
    length_penalty: Annotated[float, Bounds()] = 1.0,
    num_samples: Annotated[int, Bounds(positive=True, at_most=10_000)] = 1,
    stop: Annotated[list[str] | None, Text(what="a stop string")] = None,
    batch_size: Annotated[int, Bounds(positive=True, at_most=100_000)] = 8,
    errors: Literal["strict", "replace"] = "strict",
    seed: Annotated[int, SEED] = 1337,
    dtype: Literal["fp32", "bf16"] = "fp32",
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
    stream: bool = False,
    show_probs: bool = False,
    as_json: bool = False,
) -> dict:
    """Continue a prompt (or every line of a file) with a run's model; or, with a seq2seq model,
    write the target of a source (or of every line of a file).

    An empty prompt starts from the end-of-text token, i.e. from the start of a document. A prompt
    longer than a GPT's context keeps only its last tokens (with a warning). Generation may run
    past the context: when it is full, the model keeps its newest half and goes on (the rows of a
    batch shift together). Recurrent and window models have no context limit: they read the
    whole prompt and continue from their hidden state (or last n tokens). A continuation ends at end-of-text, at a --stop string (cut before it) or
    after --max-new-tokens.

    A seq2seq (encoder-decoder) run takes --source or --source-file instead of a prompt: the
    decoder starts from its start token and writes a target until the end token. A source longer
    than the model's source limit keeps its first tokens (a warning says how many went), as
    training kept them; --max-new-tokens past the model's target limit is lowered to it (a note).

    Args:
        checkpoint: a run directory written by `lmforge pretrain`.
        prompt: the text to continue.
        prompt_file: a UTF-8 file with one prompt per line (a blank line starts a document),
            generated --batch-size prompts at a time; --json then prints {"results": [one object per
            prompt, in file order]}.
        source: seq2seq models: the text to write a target for.
        source_file: seq2seq models: a UTF-8 file with one source per line, decoded --batch-size
            sources at a time (right-padded); --json then prints {"results": [one object per source]}.
        strategy: sample (draw each token from the model's distribution, shaped by --temperature,
            --top-k, --top-p), greedy (always the likeliest token) or beam (beam search).
        max_new_tokens: how many tokens to add at most.
        min_new_tokens: forbid end-of-text before this many new tokens.
        temperature: divide the logits by this before sampling; below 1 is more conservative, 0 is
            greedy.
        top_k: sample only among the k likeliest tokens (0: all of them).
        top_p: sample only among the likeliest tokens that together reach this probability (1: all).
        repetition_penalty: above 1 makes tokens already in the text less likely (1.2 is typical).
        num_beams: beams kept by beam search.
        length_penalty: beam search ranks by sum(log p) / length ** this; above 0 favours longer text.
        num_samples: continuations per prompt: independent samples, or the best beams (at most
            --num-beams).
        stop: strings that end a continuation, which is cut before them; several may follow one
            --stop; \\n and \\t stand for a newline and a tab.
        batch_size: prompts of --prompt-file (sources of --source-file) generated together.
        errors: bytes of --prompt-file that are not UTF-8: stop and say where (strict), or read them
            as U+FFFD (replace).
        seed: random seed; the same seed gives the same text.
        dtype: fp32, or bf16 (weights cast to bfloat16: half the memory, faster on recent hardware).
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.
        stream: print the text as it is generated (one prompt, one sample, greedy or sample).
        show_probs: after the text, list each chosen token with its probability and the top
            alternatives, as the strategy saw them (after temperature, top-k and top-p).
        as_json: print {"prompt", "prompt_ids", "samples": [{"text", "ids" (new ids only), "logprob"
            (the model's log-probability of the ids, end-of-text included when it ended the text),
            "finish" (eos, stop or length), "score" (beam), "tokens" (--show-probs)}]}; with a
            source, "source" and "source_ids" instead of "prompt" and "prompt_ids".

    Examples:
        lmforge generate --checkpoint runs/stdlib --prompt "Return the" --max-new-tokens 300
        lmforge generate --checkpoint runs/stdlib --prompt "Return the" --strategy beam --num-beams 8
        lmforge generate --checkpoint runs/stdlib --prompt-file my_prompts.txt --stop "\\n\\n" --json
        lmforge generate --checkpoint my_seq2seq_run --source "abcdef" --strategy beam --num-beams 4
    """
    import torch

    from lmforge.generate import GenerationConfig
    from lmforge.generate import generate as run_generation
    from lmforge.generate.streaming import TextStream
    from lmforge.inference import encode_prompt, load_for_inference

    config = GenerationConfig(
        strategy=strategy,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_beams=num_beams,
        length_penalty=length_penalty,
        num_return_sequences=num_samples,
        stop=tuple(_unescape(s) for s in stop or ()),
    )
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1; got {batch_size}")
    if prompt and prompt_file is not None:
        raise UserInputError("give --prompt or --prompt-file, not both")
    if source is not None or source_file is not None:
        if prompt or prompt_file is not None:
            raise UserInputError("give --source (a seq2seq model) or --prompt (a language model), not both")
        if source is not None and source_file is not None:
            raise UserInputError("give --source or --source-file, not both")
    seq2seq = source is not None or source_file is not None
    if seq2seq:
        texts = _read_prompts(source_file, errors, "--source-file") if source_file is not None else [source]
    else:
        texts = _read_prompts(prompt_file, errors) if prompt_file is not None else [prompt]
    many = prompt_file is not None or source_file is not None
    if stream and (len(texts) > 1 or num_samples > 1 or strategy == "beam" or as_json):
        raise UserInputError(
            "--stream prints one continuation as it is generated: use it with one prompt, "
            "--num-samples 1, greedy or sample, and without --json"
        )
    if show_probs and strategy == "beam":
        raise UserInputError("--show-probs shows the choices of greedy decoding or sampling, not beam search")

    if seq2seq:
        batches, tokenizer, device, config = _seq2seq_batches(
            checkpoint, texts, config, many=many, weights=weights, device=device, dtype=dtype
        )
    else:
        rows = (num_beams if strategy == "beam" else num_samples) * (batch_size if prompt_file else 1)
        loaded = load_for_inference(
            checkpoint,
            causal_for="lmforge generate",
            weights=weights,
            device=device,
            dtype=dtype,
            pack_rows=rows,
        )
        model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
        config = dataclasses.replace(config, eos_id=loaded.eos_id)
        prompts = []
        for text in texts:
            ids, dropped = encode_prompt(text, tokenizer, model.context_limit)
            if dropped:
                print(
                    f"warning: the prompt has {len(ids) + dropped} tokens; keeping its last {len(ids)} "
                    "(the model's context)",
                    file=sys.stderr,
                )
            prompts.append(ids)
        batches = (
            prompts,
            lambda batch, **kw: run_generation(model, batch, config, tokenizer=tokenizer, **kw),
        )
    generator = torch.Generator(device=device).manual_seed(seed)
    inputs, decode_batch = batches
    key = "source" if seq2seq else "prompt"

    printer = TextStream(tokenizer, config.stop, config.eos_id) if stream else None

    def print_token(ids, probs) -> None:
        print(printer.push(ids[0].item()), end="", flush=True)

    results, tokens, start = [], 0, time.perf_counter()
    for first in range(0, len(inputs), batch_size):
        batch = inputs[first : first + batch_size]
        on_token, collect = None, None
        if printer is not None:  # one prompt, so one batch
            if not seq2seq:
                print(texts[0], end="", flush=True)
            on_token = print_token
        elif show_probs:
            collect, on_token = _probability_collector()
        continuations = decode_batch(batch, generator=generator, on_token=on_token)
        for i, (input_ids, rows) in enumerate(zip(batch, continuations)):
            samples = []
            for j, c in enumerate(rows):
                sample = {"text": c.text, "ids": c.ids, "logprob": c.logprob, "finish": c.finish}
                if c.score is not None:
                    sample["score"] = c.score
                if collect is not None:
                    shown = len(c.ids) + (c.finish == "eos")
                    sample["tokens"] = _describe(collect[i * num_samples + j][:shown], tokenizer)
                samples.append(sample)
                tokens += len(c.ids)
            results.append({key: texts[first + i], f"{key}_ids": input_ids, "samples": samples})
        if printer is not None:
            print(printer.finish(continuations[0][0].text), flush=True)
    elapsed = time.perf_counter() - start

    output = results[0] if not many else {"results": results}
    if as_json:
        print_json(output)
    elif not stream:
        _print_results(results, many_prompts=many, strategy=strategy, key=key)
    if not as_json:
        print(
            f"({tokens:,} new tokens in {elapsed:.2f} s, {tokens / max(elapsed, 1e-9):,.0f} tokens/s; "
            f"{'greedy' if config.greedy else strategy}, {dtype} on {device.type})",
            file=sys.stderr,
        )
    return output


def _seq2seq_batches(checkpoint: Path, texts: list[str], config, *, many: bool, weights, device, dtype):
    """(([source ids], decode_batch), target tokenizer, device, config) for sources given to a seq2seq
    run: each source cut to the model's source limit (a warning each), --max-new-tokens to its
    target limit (a note); decode_batch(batch, generator=, on_token=) decodes a batch of sources."""
    from lmforge.inference_seq2seq import clamp_new_tokens, encode_source, generate_targets, load_seq2seq

    loaded = load_seq2seq(
        checkpoint,
        command="lmforge generate",
        instead="--prompt",
        weights=weights,
        device=device,
        dtype=dtype,
    )
    sources = []
    for line, text in enumerate(texts, start=1):
        what = f"line {line} of --source-file" if many else "--source"
        ids, dropped = encode_source(text, loaded, what)
        if dropped:
            print(
                f"warning: {'source ' + str(line) if many else 'the source'} has {len(ids) + dropped} tokens; "
                f"keeping its first {len(ids)} (the model's source limit), {dropped} dropped",
                file=sys.stderr,
            )
        sources.append(ids)
    new_tokens, note = clamp_new_tokens(loaded.model, config.max_new_tokens)
    if note:
        print(note, file=sys.stderr)
    # beam search stops as HF's early_stopping=False does: once no running beam can beat the worst
    # finished one. The default (True: at num_beams finished) returns a confident model's early ends,
    # each finished in turn among the top candidates, before its likely target is done.
    config = dataclasses.replace(
        config,
        max_new_tokens=new_tokens,
        min_new_tokens=min(config.min_new_tokens, new_tokens),
        eos_id=loaded.end_id,
        early_stopping=False,
    )

    def decode_batch(batch, **kwargs):
        return generate_targets(loaded, batch, config, **kwargs)

    return (sources, decode_batch), loaded.tokenizer, loaded.device, config


def _unescape(text: str) -> str:
    for escaped, plain in ESCAPES.items():
        text = text.replace(escaped, plain)
    return text


def _read_prompts(path: Path, errors: Literal["strict", "replace"], flag: str = "--prompt-file") -> list[str]:
    """The lines of a --prompt-file (a blank line: a document start) or --source-file (no blank line)."""
    from lmforge.data.corpora import read_text

    what = "source" if flag == "--source-file" else "prompt"
    try:
        text = read_text(Path(path), errors)  # bad bytes: the same message as every --data reader
    except FileNotFoundError:
        raise UserInputError(f"{flag} {path} does not exist") from None
    except IsADirectoryError:
        raise UserInputError(f"{flag} {path} is a directory; give a file with one {what} per line") from None
    lines = text.splitlines()
    if not lines:
        raise UserInputError(f"{flag} {path} is empty; put one {what} per line")
    if what == "source":
        blank = next((n for n, line in enumerate(lines, start=1) if not line.strip()), None)
        if blank is not None:
            raise UserInputError(f"{flag} {path}: line {blank} is blank; put one source on every line")
    return lines


def _probability_collector():
    """(records, on_token): records[row] gets (id, probability, [(id, probability), ...]) per step."""
    records: dict[int, list] = {}

    def on_token(ids, probs) -> None:
        top = probs.float().topk(TOP_ALTERNATIVES, dim=-1)
        chosen = probs.float().gather(1, ids[:, None])[:, 0]
        for row, (token, p, top_ids, top_p) in enumerate(
            zip(ids.tolist(), chosen.tolist(), top.indices.tolist(), top.values.tolist())
        ):
            records.setdefault(row, []).append((token, p, list(zip(top_ids, top_p))))

    return records, on_token


def _describe(records, tokenizer) -> list[dict]:
    return [
        {
            "id": token,
            "token": tokenizer.decode([token]),
            "prob": p,
            "top": [{"id": i, "token": tokenizer.decode([i]), "prob": q} for i, q in top],
        }
        for token, p, top in records
    ]


def _print_results(results: list[dict], *, many_prompts: bool, strategy: str, key: str = "prompt") -> None:
    """Each text (a prompt followed by its continuation; a source's target alone)."""
    for number, result in enumerate(results, start=1):
        if many_prompts:
            print(f"=== {key} {number}: {result[key]!r}")
        samples = result["samples"]
        for i, sample in enumerate(samples, start=1):
            if len(samples) > 1:
                label = "beam" if strategy == "beam" else "sample"
                score = f" (score {sample['score']:.3f})" if "score" in sample else ""
                print(f"--- {label} {i}{score} ---")
            print((result["prompt"] if key == "prompt" else "") + sample["text"])
            for token in sample.get("tokens", []):
                alternatives = "  ".join(f"{t['token']!r} {t['prob']:.1%}" for t in token["top"])
                print(f"  {token['token']!r:>12} {token['prob']:7.1%}   top: {alternatives}")
