"""Transformer building blocks shared by every Transformer family (GPT now, BERT and seq2seq later).

Shapes in comments: B batch, T query length, S key length (T plus any cached past),
C model width, nh heads, hs head size (C // nh).

Attention has two paths that must agree: ``F.scaled_dot_product_attention`` (fast, used for
training and decoding) and ``reference_attention``, softmax(QK^T / sqrt(hs)) V written out
(Vaswani et al. eq. 1), which also returns the weights for tests and heat maps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormKind = Literal["layernorm", "rmsnorm"]
MLPKind = Literal["gelu", "gelu_exact", "swiglu"]  # gelu: GPT-2's tanh approximation


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
    dot product of a query and a key depends only on their distance.
    """

    def __init__(self, head_size: int, max_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (max_len, hs/2)
        angles = torch.cat([angles, angles], dim=-1)  # (max_len, hs)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for the given positions, shaped to broadcast over (B, T, 2, nh, hs) stacked q/k:
        (T,) -> (1, T, 1, 1, hs); (B, T) -> (B, T, 1, 1, hs)."""
        cos, sin = self.cos[position_ids], self.sin[position_ids]
        if position_ids.dim() == 1:
            cos, sin = cos[None], sin[None]
        return cos[:, :, None, None], sin[:, :, None, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos.to(x.dtype)) + (rotated * sin.to(x.dtype))


# --- attention -------------------------------------------------------------------------------


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(hs)) V with disallowed positions set to -inf before the softmax.

    q (B, nh, T, hs), k and v (B, nh, S, hs), mask bool broadcastable to (B, nh, T, S), True
    where attention is allowed. Returns (output (B, nh, T, hs), weights (B, nh, T, S)).
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, nh, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return weights @ v, weights


def causal_mask(
    query_len: int,
    key_len: int,
    device: torch.device | None = None,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool mask (B or 1, 1, T, S), True where query t may attend to key s.

    Queries are the last ``query_len`` of ``key_len`` positions (earlier ones sit in a KV cache),
    so query t sees keys s <= t + (S - T). ``padding_mask`` (B, S), 1 for real tokens, hides
    padding keys. Every query may always see itself, so a padding query never has an empty row
    (an all -inf row gives NaN in softmax); its output is garbage that no loss or sample reads.
    """
    offset = key_len - query_len
    query_pos = torch.arange(query_len, device=device)[:, None] + offset
    key_pos = torch.arange(key_len, device=device)[None, :]
    allowed = key_pos <= query_pos  # (T, S)
    allowed = allowed[None, None]
    if padding_mask is not None:
        allowed = allowed & padding_mask[:, None, None, :].bool()
        allowed = allowed | (key_pos == query_pos)[None, None]
    return allowed


def _matmul_attention_is_faster(q: torch.Tensor) -> bool:
    """On a CPU in bf16, up to 256 queries, PyTorch's flash kernel is 1.6-3x slower (forward plus
    backward) than two batched bf16 matmuls and a softmax; in fp32, and for longer sequences, it
    wins. Measured on an AVX-512 BF16 AMD EPYC with torch 2.13 (benchmarks/train_throughput.py)."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.shape[-2] <= 256


def matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """reference_attention's result through as few kernels as possible: the mask becomes an
    additive 0/-inf bias fused into the score matmul (baddbmm), softmax runs in the input dtype.
    q (B, nh, T, hs), k and v (B, nh, S, hs); mask as in reference_attention, None = causal."""
    B, nh, T, hs = q.shape
    S = k.shape[2]
    if mask is None:
        mask = causal_mask(T, S, q.device)
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    bias = bias.expand(B, nh, T, S).reshape(B * nh, T, S)
    scores = torch.baddbmm(
        bias, q.reshape(B * nh, T, hs), k.reshape(B * nh, S, hs).transpose(1, 2), alpha=1 / math.sqrt(hs)
    )  # (B*nh, T, S)
    return (torch.softmax(scores, dim=-1) @ v.reshape(B * nh, S, hs)).view(B, nh, T, hs)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection; causal unless a mask says otherwise."""

    def __init__(self, n_embd: int, n_head: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache=None,
        layer: int = 0,
        reference: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (B, T, C), plus the weights (B, nh, T, S) on the reference path.

        ``mask`` None means plainly causal over x alone. ``kv_cache``, when given, stores this
        step's keys and values for ``layer`` and returns all of them (past + present).
        """
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        if rotary is not None:
            q, k = apply_rotary(qkv[:, :, :2], *rotary).unbind(2)  # queries and keys in one pass
        else:
            q, k = qkv[:, :, 0], qkv[:, :, 1]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, 2].transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nh, S, hs)
        weights = None
        if reference:
            if mask is None:
                mask = causal_mask(T, k.shape[2], x.device)
            y, weights = reference_attention(q, k, v, mask)
        elif _matmul_attention_is_faster(q) and (self.dropout == 0 or not self.training):
            y = matmul_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T > 1,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y)), weights


# --- feed-forward ---------------------------------------------------------------------------


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU -> Linear.

    ``approximate="tanh"`` is GPT-2's GELU (HF's ``gelu_new``); ``"none"`` is the exact erf form
    of BERT and nanoGPT, and about 3x cheaper on a CPU.
    """

    def __init__(
        self,
        n_embd: int,
        hidden: int,
        bias: bool = True,
        dropout: float = 0.0,
        approximate: Literal["tanh", "none"] = "tanh",
    ) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020): (SiLU(x W1) * x W3) W2, as in Llama."""

    def __init__(self, n_embd: int, hidden: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 2 * hidden, bias=bias)  # gate and up projections, fused
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

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
    ) -> None:
        super().__init__()
        self.ln_1 = make_norm(norm, n_embd, norm_eps, bias)
        self.attn = SelfAttention(n_embd, n_head, bias, dropout)
        self.ln_2 = make_norm(norm, n_embd, norm_eps, bias)
        if mlp == "swiglu":
            self.mlp = SwiGLU(n_embd, mlp_hidden, bias, dropout)
        elif mlp in ("gelu", "gelu_exact"):
            self.mlp = MLP(n_embd, mlp_hidden, bias, dropout, approximate="tanh" if mlp == "gelu" else "none")
        else:
            raise ValueError(f"unknown mlp {mlp!r}; choose gelu, gelu_exact or swiglu")

    def forward(self, x: torch.Tensor, **attention_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.ln_1(x), **attention_kwargs)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, weights
