"""Convert a Hugging Face GPT-2 directory into an lmforge run directory, and back.

    convert_from_hf("gpt2/", "runs/gpt2")
        gpt2/{config.json, model.safetensors | pytorch_model.bin, tokenizer.json | vocab.json + merges.txt}
        -> runs/gpt2/{config.json (family "gpt": learned positions, GELU, LayerNorm, biases),
                      model.safetensors, tokenizer/ (byte-level BPE, "<|endoftext|>" as bos and eos)}
    convert_to_hf("runs/gpt2", "hf/gpt2")
        -> hf/gpt2/{config.json (model_type gpt2), model.safetensors, tokenizer files}
           which transformers.GPT2LMHeadModel.from_pretrained("hf/gpt2") loads

Everything is read and checked before anything is written, and the output directory appears
only once complete (``fileio.atomic_directory``), so a failure leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lmforge.errors import CheckpointError, TokenizerError, UserInputError
from lmforge.fileio import atomic_directory, atomic_write_json, check_output_dir
from lmforge.interop import gpt2
from lmforge.interop.hf_files import CONFIG_FILE, check_model_dir, read_config, read_weights, write_weights
from lmforge.interop.hf_tokenizer import read_hf_tokenizer, write_hf_tokenizer
from lmforge.models.registry import build_model
from lmforge.run import Run


@dataclass
class Conversion:
    """What a conversion wrote, for the command's summary."""

    source: Path
    out: Path
    model: dict[str, Any]  # the GPTConfig dict
    num_parameters: int
    tokenizer: str | None  # the tokenizer's kind (char, bpe, ...); None: there is none
    tokenizer_files: str | None  # the files it was read from (import) or written to (export)
    files: list[str] = field(default_factory=list)


def convert_from_hf(hf_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Conversion:
    """An lmforge run at ``out`` holding the GPT2LMHeadModel (and its tokenizer, if any) of ``hf_dir``."""
    hf_dir, out = Path(hf_dir), Path(out)
    _check_paths(hf_dir, out, overwrite)
    check_model_dir(hf_dir)
    config = gpt2.gpt_config(read_config(hf_dir), str(hf_dir / CONFIG_FILE))
    state = gpt2.from_hf_names(read_weights(hf_dir), tied=config["tie_embeddings"])
    model = _gpt_with_weights(config, state, hf_dir)
    tokenizer, tokenizer_files = read_hf_tokenizer(hf_dir) or (None, None)
    if tokenizer is not None and tokenizer.vocab_size > config["vocab_size"]:
        raise TokenizerError(
            f"the tokenizer in {hf_dir} has {tokenizer.vocab_size:,} ids but the model only "
            f"{config['vocab_size']:,} embeddings; the tokenizer belongs to another model"
        )
    with atomic_directory(out, overwrite) as tmp:
        run = Run(tmp)
        source = {"format": "huggingface-gpt2", "path": str(hf_dir.resolve())}
        run.write_config({"family": "gpt", "model": config, "source": source})
        run.save_weights(model)
        if tokenizer is not None:
            run.save_tokenizer(tokenizer)
        files = sorted(p.name for p in tmp.iterdir())
    kind = tokenizer.kind if tokenizer is not None else None
    return Conversion(hf_dir, out, config, model.num_parameters(), kind, tokenizer_files, files)


def convert_to_hf(
    run_dir: str | Path,
    out: str | Path,
    *,
    weights: Literal["auto", "best", "last"] = "auto",
    overwrite: bool = False,
) -> Conversion:
    """A Hugging Face GPT-2 directory at ``out`` computing the same logits as the run at ``run_dir``."""
    run_dir, out = Path(run_dir), Path(out)
    _check_paths(run_dir, out, overwrite)
    run = Run.open(run_dir, flag="--to-hf")
    saved = run.read_config()
    if saved["family"] != "gpt":
        raise CheckpointError(f"{run_dir} holds a {saved['family']} model; only gpt runs convert to GPT-2")
    config = saved["model"]
    tokenizer = run.load_tokenizer() if run.tokenizer_dir.exists() else None
    kind, tokenizer_files = (tokenizer.kind if tokenizer is not None else None), None
    bos, eos = (tokenizer.bos_id, tokenizer.eos_id) if tokenizer is not None else (None, None)
    hf = gpt2.hf_config(config, str(run_dir), bos_id=bos, eos_id=eos)
    model = run.load_model(weights)
    tensors = gpt2.to_hf_names(model.state_dict(), tied=config["tie_embeddings"])
    with atomic_directory(out, overwrite) as tmp:
        atomic_write_json(tmp / CONFIG_FILE, hf)
        write_weights(tensors, tmp)
        if tokenizer is not None:
            written = write_hf_tokenizer(tokenizer, tmp, model_max_length=config["block_size"])
            tokenizer_files = " + ".join(written)
        files = sorted(p.name for p in tmp.iterdir())
    return Conversion(run_dir, out, config, model.num_parameters(), kind, tokenizer_files, files)


def _check_paths(source: Path, out: Path, overwrite: bool) -> None:
    if out.resolve() == source.resolve():
        raise UserInputError(f"--out {out} is the directory being converted; write the result somewhere else")
    check_output_dir(out, overwrite)  # refuse early, before reading a large checkpoint


def _gpt_with_weights(config: dict[str, Any], state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """lmforge's GPT holding ``state``, or a clear error naming the weights that do not fit."""
    try:
        with torch.device("meta"):  # no time spent on a random initialisation we would overwrite
            model = build_model("gpt", config)
    except ValueError as error:
        raise CheckpointError(f"{source / CONFIG_FILE} does not describe a valid model: {error}") from None
    tied = config["tie_embeddings"]
    if tied and "wte.weight" in state:
        state = {**state, "lm_head.weight": state["wte.weight"]}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [
        f"{name} {tuple(state[name].shape)} (config.json says {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    problems = [
        *([f"missing {', '.join(missing[:3])}"] if missing else []),
        *([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else []),
        *misshapen[:3],
    ]
    if problems:
        raise CheckpointError(
            f"the weights in {source} do not fit the GPT-2 its config.json describes: {'; '.join(problems)}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    if tied:
        model.lm_head.weight = model.wte.weight
    return model.eval()
