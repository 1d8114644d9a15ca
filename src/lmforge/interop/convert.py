"""Convert a Hugging Face GPT-2 or BERT directory into an lmforge run directory, and back.

    convert_from_hf("gpt2/", "runs/gpt2")
        gpt2/{config.json, model.safetensors | pytorch_model.bin, tokenizer.json | vocab.json + merges.txt}
        -> runs/gpt2/{config.json (family "gpt": learned positions, GELU, LayerNorm, biases),
                      model.safetensors, tokenizer/ (byte-level BPE, "<|endoftext|>" as bos and eos)}
    convert_to_hf("runs/gpt2", "hf/gpt2")
        -> hf/gpt2/{config.json (model_type gpt2), model.safetensors, tokenizer files}
           which transformers.GPT2LMHeadModel.from_pretrained("hf/gpt2") loads
    convert_from_hf("minilm/", "runs/minilm")      a BertModel, BertForMaskedLM or
        BertForSequenceClassification (model_type "bert") with its WordPiece vocabulary
        -> runs/minilm/{config.json (family "bert", its heads), model.safetensors, tokenizer/}
    convert_to_hf("runs/minilm", "hf/minilm")      -> BertModel / BertForMaskedLM / ... loads it
    convert_from_hf("llama/", "runs/llama")        a LlamaForCausalLM, Qwen2ForCausalLM or
        MistralForCausalLM directory (model_type llama, qwen2, mistral), its tokenizer.json and chat
        template -> runs/llama/{config.json (family "gpt": rope, RMSNorm, SwiGLU, GQA), model.safetensors,
                                tokenizer/ (+ chat_template.jinja)}
    convert_to_hf("runs/llama", "hf/llama")        a run with rotary positions -> the same model_type
        it came from (or the one that computes it: interop/llama.py), chat_template.jinja included

    convert_from_hf("bart/", "runs/bart")          a BartForConditionalGeneration (model_type bart) and its
        byte-level BPE tokenizer.json, or a MarianMTModel (model_type marian; weights only: its
        SentencePiece files are not read) -> runs/bart/{config.json (family "seq2seq"), ...}
    convert_to_hf("runs/bart", "hf/bart")          a seq2seq run with learned positions -> BART,
        with sinusoidal ones -> Marian (interop/bart.py names what each needs)

``gpt2.py``, ``bert.py``, ``llama.py``, ``bart.py`` and ``marian.py`` map each family's names; this
module is the one flow they share.

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
from lmforge.fileio import HF_MODEL_OUTPUT, OutputKind, atomic_directory, atomic_write_json, check_output_dir
from lmforge.interop import bart, bert, gpt2, llama, marian
from lmforge.interop.hf_files import CONFIG_FILE, check_model_dir, read_config, read_weights, write_weights
from lmforge.interop.hf_tokenizer import read_hf_tokenizer, write_hf_tokenizer
from lmforge.interop.hf_wordpiece import read_wordpiece, write_wordpiece
from lmforge.models.registry import build_sketch
from lmforge.run import RUN_OUTPUT, Run
from lmforge.tokenizers.hf import META_FILE
from lmforge.train.transforms import tied_parameters


@dataclass
class Conversion:
    """What a conversion wrote, for the command's summary."""

    source: Path
    out: Path
    model: dict[str, Any]  # the GPTConfig or BERTConfig dict
    num_parameters: int
    tokenizer: str | None  # the tokenizer's kind (char, bpe, ...); None: there is none
    tokenizer_files: str | None  # the files it was read from (import) or written to (export)
    files: list[str] = field(default_factory=list)
    architecture: str = "GPT2LMHeadModel"  # the transformers class that loads the Hugging Face side
    warning: str | None = (
        None  # what the user should know that the summary does not say (a tokenizer left out)
    )


def convert_from_hf(hf_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Conversion:
    """An lmforge run at ``out`` holding the GPT-2, BERT or Llama-family model (and its tokenizer, if any)
    of ``hf_dir``."""
    hf_dir, out = Path(hf_dir), Path(out)
    _check_paths(hf_dir, out, overwrite, RUN_OUTPUT)
    check_model_dir(hf_dir)
    hf, source = read_config(hf_dir), str(hf_dir / CONFIG_FILE)
    chat_template, warning = None, None
    if hf.get("model_type") in SEQ2SEQ_TYPES:
        family, model_type = "seq2seq", hf["model_type"]
        tensors = read_weights(hf_dir)
        if model_type == "bart":
            config = bart.bart_config(hf, tensors, source)
        else:
            config = marian.marian_config(hf, source)
        state, architecture = bart.from_hf_names(tensors, config), SEQ2SEQ_TYPES[model_type]
        if model_type == "bart" or (hf_dir / META_FILE).is_file():
            found = read_hf_tokenizer(hf_dir)
        else:
            found = None
            if any((hf_dir / name).is_file() for name in marian.SENTENCEPIECE_FILES):
                warning = marian.TOKENIZER_NOTE.format(source=hf_dir)
    elif hf.get("model_type") == "bert":
        family, tensors = "bert", read_weights(hf_dir)
        config = bert.bert_config(hf, tensors, source)
        state, architecture = bert.from_hf_names(tensors), bert.architecture(config)
        found = read_hf_tokenizer(hf_dir) if (hf_dir / META_FILE).is_file() else read_wordpiece(hf_dir)
    elif llama.is_llama_type(hf):
        family, config = "gpt", llama.llama_config(hf, source)
        state = llama.from_hf_names(read_weights(hf_dir), tied=config["tie_embeddings"])
        architecture = llama.ARCHITECTURES[hf["model_type"]]
        found = read_hf_tokenizer(hf_dir, special_ids=llama.special_ids(hf_dir), any_bpe=True)
        chat_template = llama.read_chat_template(hf_dir)
    else:
        family, config = "gpt", gpt2.gpt_config(hf, source)
        state, architecture = (
            gpt2.from_hf_names(read_weights(hf_dir), tied=config["tie_embeddings"]),
            "GPT2LMHeadModel",
        )
        found = read_hf_tokenizer(hf_dir)
    model = _model_with_weights(family, config, state, hf_dir)
    tokenizer, tokenizer_files = found or (None, None)
    if tokenizer is not None and tokenizer.vocab_size > config["vocab_size"]:
        raise TokenizerError(
            f"the tokenizer in {hf_dir} has {tokenizer.vocab_size:,} ids but the model only "
            f"{config['vocab_size']:,} embeddings; the tokenizer belongs to another model"
        )
    with atomic_directory(out, overwrite, [hf_dir], RUN_OUTPUT) as tmp:
        run = Run(tmp)
        origin = {"format": f"huggingface-{hf.get('model_type')}", "path": str(hf_dir.resolve())}
        run.write_config({"family": family, "model": config, "source": origin})
        run.save_weights(model)
        if tokenizer is not None:
            run.save_tokenizer(tokenizer)
            if chat_template is not None:  # what serve renders chats with; --to-hf writes it back
                llama.write_chat_template(chat_template, run.tokenizer_dir)
        files = sorted(p.name for p in tmp.iterdir())
    kind = tokenizer.kind if tokenizer is not None else None
    return Conversion(
        hf_dir, out, config, model.num_parameters(), kind, tokenizer_files, files, architecture, warning
    )


def convert_to_hf(
    run_dir: str | Path,
    out: str | Path,
    *,
    weights: Literal["auto", "best", "last"] = "auto",
    overwrite: bool = False,
) -> Conversion:
    """A Hugging Face directory at ``out`` computing the same logits as the run at ``run_dir``: GPT-2
    for a GPT with learned positions, Llama, Qwen2 or Mistral for one with rotary positions, BERT."""
    run_dir, out = Path(run_dir), Path(out)
    _check_paths(run_dir, out, overwrite, HF_MODEL_OUTPUT)
    run = Run.open(run_dir, flag="--to-hf")
    saved = run.read_config()
    if saved["family"] not in ("gpt", "bert", "seq2seq"):
        raise CheckpointError(
            f"{run_dir} holds a {saved['family']} model; only gpt runs (as GPT-2 or Llama), bert runs and "
            "seq2seq runs (as BART or Marian) convert"
        )
    config = saved["model"]
    tokenizer = run.load_tokenizer() if run.tokenizer_dir.exists() else None
    kind, tokenizer_files = (tokenizer.kind if tokenizer is not None else None), None
    model = run.load_model(weights)
    chat_template = None
    if saved["family"] == "seq2seq":
        ids = {
            f"{name}_id": getattr(tokenizer, f"{name}_id", None) if tokenizer is not None else None
            for name in ("eos", "pad")
        }
        model_type = bart.check_exportable(config, str(run_dir))
        if model_type == "bart":
            bos = tokenizer.bos_id if tokenizer is not None else None
            hf = bart.hf_config(config, bos_id=bos, **ids)
        else:
            hf = marian.hf_config(config, **ids)
        tensors = bart.to_hf_names(model.state_dict(), config, model_type)
    elif saved["family"] == "bert":
        hf = bert.hf_config(config, pad_id=tokenizer.pad_id if tokenizer is not None else None)
        tensors = bert.to_hf_names(model.state_dict())
    elif llama.is_llama_shaped(config):
        came_from = str(saved.get("source", {}).get("format", "")).removeprefix("huggingface-")
        model_type = llama.export_type(config, str(run_dir), preferred=came_from)
        bos, eos = (tokenizer.bos_id, tokenizer.eos_id) if tokenizer is not None else (None, None)
        hf = llama.hf_config(config, model_type, bos_id=bos, eos_id=eos)
        tensors = llama.to_hf_names(model.state_dict(), config)
        chat_template = llama.read_chat_template(run.tokenizer_dir) if tokenizer is not None else None
    else:
        bos, eos = (tokenizer.bos_id, tokenizer.eos_id) if tokenizer is not None else (None, None)
        hf = gpt2.hf_config(config, str(run_dir), bos_id=bos, eos_id=eos)
        tensors = gpt2.to_hf_names(model.state_dict(), tied=config["tie_embeddings"])
    with atomic_directory(out, overwrite, [run_dir], HF_MODEL_OUTPUT) as tmp:
        atomic_write_json(tmp / CONFIG_FILE, hf)
        write_weights(tensors, tmp)
        if tokenizer is not None:
            # BERT's own files for a BERT's WordPiece; lmforge's exact form for every other pairing
            bert_files = saved["family"] == "bert" and kind == "wordpiece"
            write = write_wordpiece if bert_files else write_hf_tokenizer
            tokenizer_files = " + ".join(write(tokenizer, tmp, model_max_length=config["block_size"]))
        if chat_template is not None:
            llama.write_chat_template(chat_template, tmp)
        files = sorted(p.name for p in tmp.iterdir())
    architecture = hf["architectures"][0]
    return Conversion(
        run_dir, out, config, model.num_parameters(), kind, tokenizer_files, files, architecture
    )


SEQ2SEQ_TYPES = {"bart": "BartForConditionalGeneration", "marian": "MarianMTModel"}


def _check_paths(source: Path, out: Path, overwrite: bool, kind: OutputKind) -> None:
    if out.resolve() == source.resolve():
        raise UserInputError(f"--out {out} is the directory being converted; write the result somewhere else")
    check_output_dir(out, overwrite, [source], kind)  # refuse early, before reading a large checkpoint


def _model_with_weights(
    family: str, config: dict[str, Any], state: dict[str, torch.Tensor], source: Path
) -> nn.Module:
    """lmforge's model of ``family`` holding ``state``, or a clear error naming the weights that do not fit."""
    try:
        model = build_sketch(family, config)  # no time spent on a random initialisation we would overwrite
    except ValueError as error:
        raise CheckpointError(f"{source / CONFIG_FILE} does not describe a valid model: {error}") from None
    ties = tied_parameters(model)  # (lm_head.weight, wte.weight): the file holds the second only
    state = {**state, **{name: state[tied_to] for name, tied_to in ties if tied_to in state}}
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
            f"the weights in {source} do not fit the model its config.json describes: {'; '.join(problems)}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    for name, tied_to in ties:  # assign=True put two tensors where one was shared: share it again
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, model.get_parameter(tied_to))
    return model.eval()
