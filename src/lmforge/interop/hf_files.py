"""Read and write the files of a Hugging Face model directory: config.json and the weights.

    gpt2/
      config.json                   {"model_type": "gpt2", "n_embd": 768, ...}
      model.safetensors             preferred; or pytorch_model.bin (loaded with weights_only=True),
      model.safetensors.index.json  or a sharded checkpoint: {"weight_map": {name: shard file}}

Every failure names the file and says what to do; nothing here knows a model family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import CheckpointError

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
# The weight files Hugging Face writes, in the order lmforge prefers them.
WEIGHT_FILES = (
    SAFETENSORS_FILE,
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_dir(directory: Path) -> None:
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise CheckpointError(
            f"{directory} {what}; give a Hugging Face model directory (config.json + model.safetensors), "
            "e.g. one written by save_pretrained"
        )


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {CONFIG_FILE}, so it is not a Hugging Face model directory"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds {type(config).__name__}, not a JSON object")
    return config


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, from the first weight file of ``WEIGHT_FILES`` present."""
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            if name.endswith(".index.json"):
                return _read_shards(path)
            return _read_file(path)
    others = sorted(p.name for p in directory.glob("*") if p.suffix in (".h5", ".msgpack", ".ckpt", ".pt"))
    found = f" (found only {', '.join(others)}: lmforge reads PyTorch weights)" if others else ""
    raise CheckpointError(
        f"{directory} has no weights{found}; expected {SAFETENSORS_FILE} or pytorch_model.bin "
        "(save the model with save_pretrained)"
    )


def _read_shards(index_path: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index_path} is not a readable shard index ({error!r})") from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        path = index_path.parent / shard
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; {index_path.name} lists it as a shard of the checkpoint"
            )
        tensors.update(_read_file(path))
    return tensors


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({error}); download it again"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad or unsafe file
        raise CheckpointError(
            f"{path} cannot be loaded as PyTorch weights ({type(error).__name__}: {_first_line(error)}); "
            "it is corrupt, incomplete or holds more than tensors"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{path} holds {type(state).__name__}, not a state dict of tensors")
    return state


def _first_line(error: Exception) -> str:
    return next(iter(str(error).splitlines()), "")


def write_weights(tensors: dict[str, torch.Tensor], directory: Path) -> None:
    from safetensors.torch import save_file

    # transformers refuses a safetensors file without format=pt in its metadata
    save_file(tensors, str(directory / SAFETENSORS_FILE), metadata={"format": "pt"})
