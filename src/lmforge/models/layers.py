"""Transformer building blocks shared by every Transformer family: GPT, BERT, encoder-decoder.

Shapes in comments: B batch, T query length, S key length (T plus any cached past, or the
memory length in cross-attention), C model width, nh heads, hs head size (C // nh).

    Block(prenorm=True,  is_causal=True)    GPT:  x + attn(norm(x)), then x + mlp(norm(x))
    Block(prenorm=False, is_causal=False)   BERT: norm(x + attn(x)), then norm(x + mlp(x))
    DecoderBlock                            seq2seq decoder: causal self-attention, then
                                            cross-attention over the encoder's memory, then MLP

Attention itself (the three paths that must agree: SDPA, the bf16 CPU matmul path and the
explicit reference; masks; KV and memory caching) lives in ``attention.py`` and is re-exported
here, so ``from lmforge.models.layers import SelfAttention, causal_mask, ...`` keeps working.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.kernels.gelu import gelu_tanh
from lmforge.kernels.swiglu import swiglu
from lmforge.models.attention import (  # noqa: F401  (re-exported)
    CrossAttention,
    SelfAttention,
    apply_rotary,
    attend,
    build_attention_mask,
    causal_mask,
    matmul_attention,
    reference_attention,
)

NormKind = Literal["layernorm", "rmsnorm"]
MLPKind = Literal["gelu", "gelu_exact", "swiglu", "relu", "silu", "relu2"]  # gelu: GPT-2's tanh approximation


def make_norm(kind: NormKind, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; choose layernorm or rmsnorm")


# --- position encodings --------------------------------------------------------------------


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (Vaswani et al. 3.5)."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)[:, : dim // 2]
    return table.float()


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al., RoFormer), in the rotate-half layout of GPT-NeoX/Llama.

    Rotates each (x_i, x_{i+hs/2}) pair of a query/key by angle pos * theta^(-2i/hs), so the
    dot product of a query and a key depends only on their distance. ``attention.apply_rotary``
    applies the (cos, sin) this returns.

    ``scaling`` stretches the frequencies for a longer context, as Hugging Face's ``rope_scaling``:
    {"rope_type": "linear", "factor": f} divides every frequency by f (positions interpolated);
    {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"} (Llama 3.1) divides only the low frequencies (wavelength
    above original / low_freq_factor) by the factor, keeps the high ones (below original /
    high_freq_factor), and blends linearly in between.

    The cos/sin table covers the first ``TABLE_START`` positions at most and grows (doubling) when a
    forward asks for more: a 131072-position Llama 3 costs nothing until it reads that far.
    """

    TABLE_START = 4096

    def __init__(
        self, head_size: int, max_len: int, theta: float = 10000.0, scaling: dict | None = None
    ) -> None:
        super().__init__()
        # on the CPU whatever device the model is built on: a table of a few kB, moved with the
        # model; on the meta device (registry.build_sketch) arange runs torch's reference
        # implementation, whose first call imports torch._dynamo
        steps = torch.arange(0, head_size, 2, dtype=torch.float64, device="cpu")
        inv_freq = 1.0 / (theta ** (steps / head_size))
        self.inv_freq = scaled_frequencies(inv_freq, scaling)  # float64, kept off the state dict
        self.max_len = max_len
        cos, sin = self._table(min(max_len, self.TABLE_START))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (length, hs) in float32, computed in float64."""
        positions = torch.arange(length, dtype=torch.float64, device=self.inv_freq.device)
        angles = torch.outer(positions, self.inv_freq)  # (length, hs/2)
        angles = torch.cat([angles, angles], dim=-1)  # (length, hs)
        return angles.cos().float(), angles.sin().float()

    def forward(
        self, position_ids: torch.Tensor, end: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for the given positions, shaped to broadcast over (B, T, 2, nh, hs) stacked q/k:
        (T,) -> (1, T, 1, 1, hs); (B, T) -> (B, T, 1, 1, hs). ``end``: a bound on the positions
        (past + T), so the table can grow without reading the positions back from the device."""
        if end is not None and end > self.cos.shape[0]:
            self._grow(end)
        cos, sin = self.cos[position_ids], self.sin[position_ids]
        if position_ids.dim() == 1:
            cos, sin = cos[None], sin[None]
        return cos[:, :, None, None], sin[:, :, None, None]

    def _grow(self, end: int) -> None:
        length = self.cos.shape[0]
        while length < end:
            length *= 2
        cos, sin = self._table(min(max(length, end), max(self.max_len, end)))
        self.cos = cos.to(device=self.cos.device, dtype=self.cos.dtype)
        self.sin = sin.to(device=self.sin.device, dtype=self.sin.dtype)


ROPE_TYPES = ("default", "linear", "llama3")


def scaled_frequencies(inv_freq: torch.Tensor, scaling: dict | None) -> torch.Tensor:
    """The rotary frequencies after ``scaling`` (``RotaryEmbedding``'s docstring); None: unchanged."""
    kind = rope_type(scaling)
    if kind == "default":
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    # llama3: transformers' _compute_llama3_parameters (Meta's apply_scaling in llama3/model.py)
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    wavelength = 2 * math.pi / inv_freq
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    medium = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(medium, blended, scaled)


def rope_type(scaling: dict | None) -> str:
    """The kind of a ``rope_scaling`` dict ("rope_type", or the older "type"); refuses unknown kinds."""
    if not scaling:
        return "default"
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope scaling {kind!r} is not supported; lmforge computes {', '.join(ROPE_TYPES)}")
    return kind


# --- feed-forward ---------------------------------------------------------------------------


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU (or ReLU, SiLU) -> Linear.

    ``approximate="tanh"`` is GPT-2's GELU (HF's ``gelu_new``; on a CPU in fp32 through a compiled
    kernel, ``kernels/gelu.py``); ``"none"`` is the exact erf form
    of BERT and nanoGPT, and about 3x cheaper on a CPU. ``activation`` "relu" (Vaswani et al.),
    "silu" (Marian's "swish") or "relu2" (ReLU squared: So et al. 2021, Primer; the modded-nanogpt
    speed-runs) replaces the GELU.
    """

    def __init__(
        self,
        n_embd: int,
        hidden: int,
        bias: bool = True,
        dropout: float = 0.0,
        approximate: Literal["tanh", "none"] = "tanh",
        activation: Literal["gelu", "relu", "silu", "relu2"] = "gelu",
    ) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.approximate = approximate
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "relu2":
            h = F.relu(h).square()
        elif self.activation == "silu":
            h = F.silu(h)
        else:
            h = gelu_tanh(h) if self.approximate == "tanh" else F.gelu(h)
        return self.dropout(self.c_proj(h))


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020): (SiLU(x W1) * x W3) W2, as in Llama; W1 and W3 fused
    in c_fc (gate rows, then up rows), the activation through ``kernels/swiglu.py`` on a CPU."""

    def __init__(self, n_embd: int, hidden: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 2 * hidden, bias=bias)  # gate and up projections, fused
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(swiglu(self.c_fc(x))))


def make_mlp(kind: MLPKind, n_embd: int, hidden: int, bias: bool = True, dropout: float = 0.0) -> nn.Module:
    if kind == "swiglu":
        return SwiGLU(n_embd, hidden, bias, dropout)
    if kind in ("gelu", "gelu_exact"):
        return MLP(n_embd, hidden, bias, dropout, approximate="tanh" if kind == "gelu" else "none")
    if kind in ("relu", "silu", "relu2"):
        return MLP(n_embd, hidden, bias, dropout, activation=kind)
    raise ValueError(f"unknown mlp {kind!r}; choose gelu, gelu_exact, swiglu, relu, silu or relu2")


class Block(nn.Module):
    """Residual block of self-attention then feed-forward.

    prenorm (GPT-2, Llama): x + attn(norm(x)), then x + mlp(norm(x)).
    post-norm (``prenorm=False``; Vaswani et al., BERT): norm(x + attn(x)), then norm(x + mlp(x)).
    ``is_causal`` is the attention's meaning of ``mask=None``. Parameter names (ln_1, attn, ln_2,
    mlp) are the same either way: GPT's state dict keys.

    ``checkpointed`` (set by ``train/transforms.activation_checkpointing``): while gradients are
    recorded, keep only the block's input and recompute its inside during backward
    (``torch.utils.checkpoint``, non-reentrant), trading one more forward for the activations. A
    flag rather than a wrapper module, so parameter names (and checkpoints) stay as they are. Not
    while a key-value cache is filled: recomputing would write the cache twice.
    """

    checkpointed = False

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        mlp_hidden: int,
        *,
        norm: NormKind = "layernorm",
        mlp: MLPKind = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
        prenorm: bool = True,
        is_causal: bool = True,
        n_kv_head: int | None = None,
        qkv_bias: bool | None = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.prenorm = prenorm
        self.ln_1 = make_norm(norm, n_embd, norm_eps, bias)
        self.attn = SelfAttention(
            n_embd,
            n_head,
            bias,
            dropout,
            is_causal=is_causal,
            n_kv_head=n_kv_head,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            norm_eps=norm_eps,
        )
        self.ln_2 = make_norm(norm, n_embd, norm_eps, bias)
        self.mlp = make_mlp(mlp, n_embd, mlp_hidden, bias, dropout)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        """``_forward(x, ...)``, recomputed in backward when ``checkpointed``."""
        if self._recompute(kwargs):
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._forward, x, *args, use_reentrant=False, **kwargs)
        return self._forward(x, *args, **kwargs)

    def _recompute(self, kwargs: dict) -> bool:
        return self.checkpointed and torch.is_grad_enabled() and kwargs.get("kv_cache") is None

    def _forward(self, x: torch.Tensor, **attention_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (B, T, C) and the attention weights (reference path) or None;
        ``attention_kwargs`` go to ``SelfAttention.forward`` (mask, rotary, kv_cache, layer, ...)."""
        if self.prenorm:
            attended, weights = self.attn(self.ln_1(x), **attention_kwargs)
            x = x + attended
            return x + self.mlp(self.ln_2(x)), weights
        attended, weights = self.attn(x, **attention_kwargs)
        x = self.ln_1(x + attended)
        return self.ln_2(x + self.mlp(x)), weights

    def forward_at(self, x: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``forward(x, mask=mask)[0][range(B), rows]``: the output (B, C) at one position per row,
        computing the query, attention and MLP of that position only (``SelfAttention.attend_from``).
        For a last block whose other positions nothing reads: about five sixths of its work saved."""
        if self._recompute({}):
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._forward_at, x, rows, mask, use_reentrant=False)
        return self._forward_at(x, rows, mask)

    def _forward_at(self, x: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        picked = x[torch.arange(x.shape[0], device=x.device), rows]  # (B, C)
        if self.prenorm:
            y = picked + self.attn.attend_from(self.ln_1(x), rows, mask)
            return y + self.mlp(self.ln_2(y))
        y = self.ln_1(picked + self.attn.attend_from(x, rows, mask))
        return self.ln_2(y + self.mlp(y))


class DecoderBlock(Block):
    """An encoder-decoder's decoder block: causal self-attention, cross-attention over the memory
    (the encoder's output), feed-forward; each a residual, pre- or post-norm as in ``Block``.

    Parameters: ln_1, attn, ln_cross, cross_attn, ln_2, mlp.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        mlp_hidden: int,
        *,
        norm: NormKind = "layernorm",
        mlp: MLPKind = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
        prenorm: bool = True,
        memory_dim: int | None = None,
    ) -> None:
        super().__init__(
            n_embd,
            n_head,
            mlp_hidden,
            norm=norm,
            mlp=mlp,
            bias=bias,
            dropout=dropout,
            norm_eps=norm_eps,
            prenorm=prenorm,
            is_causal=True,
        )
        self.ln_cross = make_norm(norm, n_embd, norm_eps, bias)
        self.cross_attn = CrossAttention(n_embd, n_head, bias, dropout, memory_dim)

    def _forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
        reference: bool = False,
        **attention_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, T, C) over memory (B, S, memory_dim) -> (B, T, C), self- and cross-attention
        weights (reference path) or None.

        memory_kv: ``self.cross_attn.project_memory(memory)``, computed once per memory when
            decoding step by step (then pass it instead of ``memory``).
        memory_mask: bool (B, 1, 1 or T, S), e.g. ``build_attention_mask(key_padding_mask=...)``.
        attention_kwargs: to the causal self-attention (mask, rotary, kv_cache, layer).
        """
        attention_kwargs["reference"] = reference
        cross_kwargs = {"memory_kv": memory_kv, "reference": reference}
        if self.prenorm:
            attended, weights = self.attn(self.ln_1(x), **attention_kwargs)
            x = x + attended
            crossed, cross_weights = self.cross_attn(self.ln_cross(x), memory, memory_mask, **cross_kwargs)
            x = x + crossed
            return x + self.mlp(self.ln_2(x)), weights, cross_weights
        attended, weights = self.attn(x, **attention_kwargs)
        x = self.ln_1(x + attended)
        crossed, cross_weights = self.cross_attn(x, memory, memory_mask, **cross_kwargs)
        x = self.ln_cross(x + crossed)
        return self.ln_2(x + self.mlp(x)), weights, cross_weights
