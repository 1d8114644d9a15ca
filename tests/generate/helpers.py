"""Shared models for the decoding tests: tiny GPTs, a Hugging Face GPT-2 twin, a fixed distribution."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.run import Run

VARIANTS = [
    {"pos_encoding": "learned"},
    {"pos_encoding": "sinusoidal"},
    {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
]


def tiny_gpt(seed: int = 0, std: float | None = None, **overrides) -> GPT:
    """A 2-layer GPT; ``std`` re-draws every matrix with that spread, for peaked (tie-free) logits."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=61, block_size=32, n_layer=2, n_head=4, n_embd=32, **overrides)
    model = GPT(config).eval()
    if std is not None:
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 2:
                    param.normal_(0.0, std)
    return model


def hf_gpt2_twin(seed: int, eos_id: int, vocab_size: int = 61, block_size: int = 48):
    """(transformers GPT2LMHeadModel with random weights, the lmforge GPT `convert --from-hf` makes of it)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf_config = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.3,  # peaked next-token distributions: no near-ties for float noise to flip
    )
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    # The path a user takes: save_pretrained, then `lmforge convert --from-hf` into a run directory.
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(Path(tmp) / "hf")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(["convert", "--from-hf", str(Path(tmp) / "hf"), "--out", str(Path(tmp) / "run")])
        assert code == 0
        ours = Run.open(Path(tmp) / "run").load_model()
    assert ours.config.block_size == block_size and ours.config.vocab_size == vocab_size
    return hf, ours


class FixedDistribution:
    """A step model whose next-token logits are always the same, whatever the context."""

    block_size = None

    def __init__(self, logits: list[float]) -> None:
        self.logits = torch.tensor(logits)

    def start(self, input_ids, attention_mask, *, max_new_tokens, copies=1):
        return self.logits.expand(input_ids.shape[0] * copies, -1).clone(), None

    def step(self, next_ids, state):
        return self.logits.expand(next_ids.shape[0], -1).clone(), state

    def reorder(self, state, index):
        return state
