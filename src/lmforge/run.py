"""The run directory: what ``pretrain`` (and later ``finetune``) writes and every other command reads.

    RUN/
      config.json          model family + hyper-parameters, training settings, data and tokenizer identity
      model.safetensors    weights at the last checkpoint (ngram.safetensors: an n-gram model's counts)
      best/model.safetensors  weights with the best validation loss so far
      train_state.pt       optimizer, step, RNG and data position of model.safetensors (exact resume;
                           loads with torch.load(weights_only=True))
      metrics.jsonl        one JSON object per optimizer step and per evaluation
      loss.png             train and validation loss curves
      tokenizer/           the tokenizer the model was trained with (a seq2seq model: its targets')
      source_tokenizer/    a seq2seq model with separate vocabularies: the sources' tokenizer

This is the only module that knows these names; everything else asks it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lmforge import __version__
from lmforge.errors import CheckpointError
from lmforge.fileio import OutputKind, atomic_write_bytes, atomic_write_json, replace_previous_output
from lmforge.models.registry import build_model, model_class
from lmforge.train.transforms import tied_parameters

FORMAT_VERSION = 1
NGRAM_FILE = "ngram.safetensors"
# what a run directory may hold: `--overwrite` replaces a directory with nothing else in it
RUN_ENTRIES = frozenset(
    {
        "config.json",
        "model.safetensors",
        NGRAM_FILE,
        "best",
        "train_state.pt",
        "train_state.dcp",  # the shards of a run trained with --parallel fsdp or tp=K
        "metrics.jsonl",
        "loss.png",
        "tokenizer",
        "source_tokenizer",  # a seq2seq run with separate source and target vocabularies
        "confusion.png",  # a classifier's (lmforge finetune classify)
    }
)
_GIVE_A_RUN = "give a run directory written by `lmforge pretrain`"

RUN_OUTPUT = OutputKind("run", "config.json", RUN_ENTRIES)


def directory_fingerprint(directory: str | Path) -> str:
    """sha256 over the names and bytes of every file in a directory: identifies a tokenizer."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _unique_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict without tied duplicates (safetensors refuses shared memory), plus the ties.

    Ties are found by parameter identity (one nn.Parameter registered under two names), not by
    storage address, so they survive transforms that replace or shard the underlying tensors.
    """
    ties = dict(tied_parameters(model))
    tensors = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in model.state_dict().items()
        if name not in ties
    }
    return tensors, ties


class Run:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- paths ------------------------------------------------------------------------------
    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    plot_path = property(lambda self: self.path / "loss.png")
    state_path = property(lambda self: self.path / "train_state.pt")
    tokenizer_dir = property(lambda self: self.path / "tokenizer")
    source_tokenizer_dir = property(lambda self: self.path / "source_tokenizer")

    def weights_path(self, which: Literal["last", "best"] = "last") -> Path:
        return (
            self.path / "model.safetensors" if which == "last" else self.path / "best" / "model.safetensors"
        )

    # --- creating ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> Run:
        """A fresh run directory; replaces only a previous run, and only with ``overwrite``."""
        path = replace_previous_output(
            path,
            overwrite=overwrite,
            marker="config.json",
            known=RUN_ENTRIES,
            kind="run",
            hint=f", or --resume {path} to continue it",
        )
        return cls(path)

    @classmethod
    def open(cls, path: str | Path, flag: str = "--checkpoint") -> Run:
        """An existing run; a clear error, naming ``flag``, if ``path`` is not one."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            parent = run.path.parent
            inside = run.path.name in RUN_ENTRIES and (parent / "config.json").exists()
            hint = f"give the run directory that holds it, {flag} {parent}" if inside else _GIVE_A_RUN
            raise CheckpointError(f"{flag} {path} is a file, not a run directory; {hint}")
        if not run.path.is_dir():
            raise CheckpointError(f"{flag} {path} does not exist; {_GIVE_A_RUN}")
        if not run.config_path.exists():
            raise CheckpointError(f"{flag} {path} is not a run directory (no config.json); {_GIVE_A_RUN}")
        return run

    @contextmanager
    def removed_unless_saved(self, created: bool = True) -> Iterator[Run]:
        """Remove this run directory if what runs inside fails before the first checkpoint.

        A fresh run that never saved holds nothing worth keeping, and would block the next attempt
        as "another run"; ``created`` False (a resumed run, another process's directory) keeps it.
        """
        try:
            yield self
        except BaseException:
            if created and not self.weights_path("last").exists():
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(
            self.config_path, {"format_version": FORMAT_VERSION, "lmforge_version": __version__, **config}
        )

    def read_config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointError(
                f"{self.config_path} cannot be read ({error}); the run directory is damaged"
            ) from None
        for key in ("family", "model"):
            if key not in config:
                raise CheckpointError(
                    f"{self.config_path} has no {key!r} entry; it was not written by lmforge"
                )
        return config

    def save_tokenizer(self, tokenizer) -> None:
        tokenizer.save(self.tokenizer_dir)

    def load_tokenizer(self):
        from lmforge.tokenizers import load_tokenizer

        if not self.tokenizer_dir.exists():
            # `lmforge convert --from-hf` of a directory without tokenizer files makes such a run.
            raise CheckpointError(
                f"{self.path} has no tokenizer, so text cannot be turned into its token ids; if it was "
                "converted from Hugging Face, convert again from a directory that also holds tokenizer.json "
                "(or vocab.json + merges.txt)"
            )
        return load_tokenizer(self.tokenizer_dir)

    def save_source_tokenizer(self, tokenizer) -> None:
        """A seq2seq run whose sources have their own vocabulary (the targets' is ``tokenizer/``)."""
        tokenizer.save(self.source_tokenizer_dir)

    def load_source_tokenizer(self):
        """The tokenizer of a seq2seq run's sources: ``source_tokenizer/``, else the shared one."""
        if not self.source_tokenizer_dir.exists():
            return self.load_tokenizer()
        from lmforge.tokenizers import load_tokenizer

        return load_tokenizer(self.source_tokenizer_dir)

    # --- weights and training state ---------------------------------------------------------
    def save_weights(self, model: nn.Module, which: Literal["last", "best"] = "last") -> None:
        self.save_tensors(*_unique_tensors(model), which)

    def save_tensors(
        self, tensors: dict[str, torch.Tensor], ties: dict[str, str], which: Literal["last", "best"] = "last"
    ) -> None:
        """Weights given as a state dict without tied duplicates, and the ties (name -> source)."""
        from safetensors.torch import save

        atomic_write_bytes(self.weights_path(which), save(tensors, metadata={"tied": json.dumps(ties)}))

    def save_train_state(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.state_path, buffer.getvalue())

    def load_train_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            raise CheckpointError(
                f"{self.path} has no train_state.pt to resume from; start a new run instead"
            )
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
            raise CheckpointError(
                f"{self.state_path} is corrupt or incomplete ({error}); it cannot be resumed"
            ) from None

    def load_weights(
        self, model: nn.Module, which: Literal["last", "best"] = "last", fresh: tuple[str, ...] = ()
    ) -> None:
        """Load the saved weights into ``model``, which must have their shapes.

        fresh: name prefixes of modules that keep their new initialisation (a classifier head
            put on a pretrained trunk): not loaded, and not missed when the file lacks them.
        """
        from safetensors import SafetensorError, safe_open

        path = self.weights_path(which)
        if not path.exists():
            raise CheckpointError(f"{path} is missing; the run has no {which} weights yet")
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
                ties = json.loads((handle.metadata() or {}).get("tied", "{}"))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
        for name, source in ties.items():
            tensors[name] = tensors[source]
        tensors = {name: tensor for name, tensor in tensors.items() if not name.startswith(fresh)}
        expected = {n: t for n, t in model.state_dict().items() if not n.startswith(fresh)}
        wrong = [n for n in expected if n in tensors and tensors[n].shape != expected[n].shape]
        missing = sorted(set(expected) - set(tensors))
        if wrong or missing:
            detail = f"shape mismatch for {wrong[:3]}" if wrong else f"missing {missing[:3]}"
            raise CheckpointError(
                f"{path} belongs to a different model shape ({detail}); check --model and its settings"
            )
        model.load_state_dict(tensors, strict=False)

    def save_ngram(self, lm) -> None:
        """An n-gram model's counts (``models/ngram.py``) in place of neural weights."""
        lm.save(self.path, NGRAM_FILE)

    def load_model(self, which: Literal["last", "best", "auto"] = "auto") -> nn.Module:
        """The model with its weights; ``auto`` picks the best-validation weights when present.

        A counted model (an n-gram run's ``NGramLM``, not an nn.Module) loads itself from its own
        file; ``which`` does not apply to it.
        """
        config = self.read_config()
        cls = model_class(config["family"])
        if not issubclass(cls, nn.Module):
            return cls.load(self.path, NGRAM_FILE)
        if which == "auto":
            which = "best" if self.weights_path("best").exists() else "last"
        model = build_model(config["family"], config["model"])
        self.load_weights(model, which)
        return model.eval()
