"""Multi-head attention for every Transformer family: causal (GPT), bidirectional (BERT), cross.

Shapes in comments: B batch, T query length, S key length (T plus any cached past, or the memory
length in cross-attention), C model width, nh heads, hs head size (C // nh).

Masks are bool, broadcastable to (B, nh, T, S), True where a query may attend to a key:

    causal_mask(3, 5)                      queries are the last 3 of 5 positions (2 cached):
        [[1 1 1 0 0],                      query t sees keys s <= t + 2
         [1 1 1 1 0],
         [1 1 1 1 1]]
    build_attention_mask(key_padding_mask=[[1, 1, 1, 0]])  -> (1, 1, 1, 4): no query sees key 3
    build_attention_mask(query_padding_mask=[[1, 0]], key_padding_mask=[[1, 1, 0]])
        -> (1, 1, 2, 3): query 0 sees keys 0, 1; query 1 (padding) sees nothing, so its output is 0

Which path runs (``attend``), given a mask or ``None``:

    reference=True            reference_attention: softmax(QK^T / sqrt(hs)) V written out (Vaswani
                              et al. eq. 1), in fp32 softmax; the only path that returns the weights
    bf16 on a CPU, T <= 256,  matmul_attention: two batched matmuls and a softmax, the mask fused
    training (no dropout)     into the first as an additive bias (no mask and not causal: no bias)
    otherwise                 F.scaled_dot_product_attention: mask=None with is_causal -> its causal
                              kernel; mask=None without -> its unmasked kernel; else the bool mask
                              (a causal chunk after a cached past, T > 1 and T != S, gets a built
                              causal_mask: SDPA's is_causal would align it top-left)

A query row whose mask is all False (a padding query, or one whose every visible key is padding)
gets output exactly 0 and weights exactly 0 on every path, and no NaN in any gradient: PyTorch's
SDPA does so itself (checked on a CPU with torch 2.13; the CUDA kernels are untested here), and
the two hand-written paths do the same. Such rows are what a query padding
mask produces; nothing downstream should read them (mask them out of any loss).

A KV cache (generate/cache.py) holds the self-attention keys and values of past tokens:
``kv_cache.update(layer, k, v)`` returns past + present, the caller advances it once per forward.
Cross-attention keys and values depend only on the memory (the encoder's output), so a decoder
computes them once with ``CrossAttention.project_memory`` and passes them to every step as
``memory_kv`` instead of the memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.kernels.qk_norm_rope import attention_heads


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding (layers.RotaryEmbedding gives cos, sin) applied to q or k:
    x cos + rotate_half(x) sin, rotate_half(x) = (-x2, x1) for the halves (x1, x2) of each head.

    Computed as roll(x) = (x2, x1) times sin with its first half negated, the product added in
    the same kernel (addcmul): the negation moves to the small (T, hs) table, and a roll replaces
    a negation, two slices and a concatenation. Forward plus backward on gpt-nano's queries and
    keys: 0.6 ms a layer instead of 1.05 (2-core Xeon, fp32)."""
    half = x.shape[-1] // 2
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return torch.addcmul(x * cos, torch.roll(x, half, dims=-1), signed_sin)


# --- masks -----------------------------------------------------------------------------------


def causal_mask(
    query_len: int,
    key_len: int,
    device: torch.device | None = None,
    padding_mask: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Bool mask (B or 1, 1, T, S), True where query t may attend to key s.

    Queries are the last ``query_len`` of ``key_len`` positions (earlier ones sit in a KV cache),
    so query t sees keys s <= t + (S - T). ``window`` (Mistral's sliding window) also hides keys
    more than window - 1 positions back: query t sees t - window < s <= t, itself included.
    ``padding_mask`` (B, S), 1 for real tokens, hides padding keys. Every query may always see itself, so a left-padding query still has a key;
    its output is garbage that no loss or sample reads. (``build_attention_mask`` instead leaves
    such a row empty, which gives output 0.)
    """
    offset = key_len - query_len
    query_pos = torch.arange(query_len, device=device)[:, None] + offset
    key_pos = torch.arange(key_len, device=device)[None, :]
    allowed = key_pos <= query_pos  # (T, S)
    if window is not None:
        allowed = allowed & (key_pos > query_pos - window)
    allowed = allowed[None, None]
    if padding_mask is not None:
        allowed = allowed & padding_mask[:, None, None, :].bool()
        allowed = allowed | (key_pos == query_pos)[None, None]
    return allowed


def build_attention_mask(
    *,
    key_padding_mask: torch.Tensor | None = None,
    query_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    query_len: int | None = None,
    key_len: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """The bool mask for padded batches of encoders, decoders and cross-attention.

    key_padding_mask (B, S) and query_padding_mask (B, T): 1 (or True) for real tokens.
    causal: queries are the last T of S positions, as in ``causal_mask`` (self-attention only);
    T defaults to S (nothing cached).
    Returns (B or 1, 1, T or 1, S), True where attention is allowed, or None when there is
    nothing to mask (no padding, not causal): pass None on to keep SDPA's unmasked kernel.
    Padding queries get an empty row (output 0, see the module docstring); keys are never
    unmasked to fill a row, unlike ``causal_mask``.
    """
    if key_padding_mask is not None:
        key_len = key_padding_mask.shape[1]
        device = key_padding_mask.device
    if query_padding_mask is not None:
        query_len = query_padding_mask.shape[1]
        device = query_padding_mask.device
    allowed = None
    if causal:
        query_len = key_len if query_len is None else query_len  # self-attention, nothing cached
        if query_len is None or key_len is None:
            raise ValueError("a causal mask needs query_len and key_len (or padding masks that give them)")
        allowed = causal_mask(query_len, key_len, device)  # (1, 1, T, S)
    if key_padding_mask is not None:
        keys = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        allowed = keys if allowed is None else allowed & keys
    if query_padding_mask is not None:
        queries = query_padding_mask.bool()[:, None, :, None]  # (B, 1, T, 1)
        allowed = queries if allowed is None else allowed & queries
    return allowed


# --- the three paths -------------------------------------------------------------------------


def repeat_kv(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """Keys or values (B, n_kv, S, hs) of grouped-query attention as (B, nh, S, hs): query head j
    reads key/value head j // (nh / n_kv), Hugging Face's ``repeat_kv`` and SDPA's ``enable_gqa``."""
    groups = n_head // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(hs)) V with disallowed positions set to -inf before the softmax.

    q (B, nh, T, hs), k and v (B, nh, S, hs), mask bool broadcastable to (B, nh, T, S), True
    where attention is allowed; None attends everywhere. Returns (output (B, nh, T, hs),
    weights (B, nh, T, S)); a row with no allowed key gets weights and output 0.
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, nh, T, S)
    if mask is not None:
        has_key = mask.any(-1, keepdim=True)  # (B|1, 1, T|1, 1)
        # an empty row softmaxes finite zeros instead of -inf (NaN), then is zeroed
        scores = scores.masked_fill(~mask, float("-inf")).masked_fill(~has_key, 0.0)
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    if mask is not None:
        weights = weights * has_key
    return weights @ v, weights


def _matmul_attention_is_faster(q: torch.Tensor) -> bool:
    """On a CPU with bf16 hardware, in bf16, up to 256 queries, PyTorch's flash kernel is 1.6-3x
    slower (forward plus backward) than two batched bf16 matmuls and a softmax (AVX-512 BF16 AMD
    EPYC, torch 2.13); in fp32, for longer sequences and where bf16 is emulated, it wins. Which
    holds on this machine is raced once and cached (``hardware.bf16_matmul_attention_pays_off``).

    Only where a backward pass follows (``q.requires_grad``): the forward alone is faster through
    the flash kernel at every shape measured (Emerald Rapids, bf16: 0.33 against 0.78 ms at
    12 x 4 heads x 64 tokens, 3.2 against 10.8 at 8 x 6 x 256), and on a KV cache's view (decoding,
    serving) the matmuls would first copy the cache's keys and values every layer: 22 against
    4.7 ms a layer for 32 rows over 640 keys, which made bf16 decoding slower than fp32."""
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.shape[-2] <= 256 and q.requires_grad):
        return False
    from lmforge.hardware import bf16_matmul_attention_pays_off

    return bf16_matmul_attention_pays_off()


def matmul_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool = True,
) -> torch.Tensor:
    """reference_attention's result through as few kernels as possible: the mask becomes an
    additive 0/-inf bias fused into the score matmul (baddbmm), softmax runs in the input dtype.
    q (B, nh, T, hs), k and v (B, nh, S, hs); mask as in reference_attention; None means causal
    (queries the last T of S positions) when ``is_causal``, else no mask and no bias at all."""
    B, nh, T, hs = q.shape
    S = k.shape[2]
    if mask is None and is_causal:
        mask = causal_mask(T, S, q.device)
    q3, kt3 = q.reshape(B * nh, T, hs), k.reshape(B * nh, S, hs).transpose(1, 2)
    if mask is None:
        scores = torch.bmm(q3, kt3) * (1 / math.sqrt(hs))  # (B*nh, T, S)
        return (torch.softmax(scores, dim=-1) @ v.reshape(B * nh, S, hs)).view(B, nh, T, hs)
    has_key = mask.any(-1, keepdim=True)  # (B|1, 1, T|1, 1)
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    bias.masked_fill_(~has_key, 0.0)  # an empty row: finite scores, zeroed below
    bias = bias.expand(B, nh, T, S).reshape(B * nh, T, S)
    scores = torch.baddbmm(bias, q3, kt3, alpha=1 / math.sqrt(hs))  # (B*nh, T, S)
    y = (torch.softmax(scores, dim=-1) @ v.reshape(B * nh, S, hs)).view(B, nh, T, hs)
    return y * has_key


def attend_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, row_keys: list[int]) -> torch.Tensor:
    """One query per row, row i attending to its first ``row_keys[i]`` keys: a call per row over
    those keys alone, where one batched call would read every row's keys up to the longest row's
    under a mask. q (B, nh, 1, hs), k and v (B, n_kv, S, hs) -> (B, nh, 1, hs)."""
    return torch.cat(
        [
            attend(q[i : i + 1], k[i : i + 1, :, :keys], v[i : i + 1, :, :keys], None, is_causal=False)[0]
            for i, keys in enumerate(row_keys)
        ]
    )


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    is_causal: bool,
    dropout_p: float = 0.0,
    reference: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pick a path (see the module docstring). q (B, nh, T, hs), k and v (B, nh, S, hs), or
    (B, n_kv, S, hs) with fewer key/value heads (grouped-query attention; each serves nh / n_kv
    query heads: SDPA's ``enable_gqa``, expanded by ``repeat_kv`` on the other paths).

    mask: bool (B|1, 1|nh, T|1, S) used as is, or None: causal when ``is_causal`` (queries are
    the last T of S positions), else unmasked. Returns (output (B, nh, T, hs), weights or None).
    """
    T, S = q.shape[2], k.shape[2]
    grouped = k.shape[1] != q.shape[1]
    if mask is None and is_causal and T > 1 and T != S:
        # SDPA's is_causal aligns the mask top-left; a cached past needs it bottom-right
        mask = causal_mask(T, S, q.device)
    if reference:
        if mask is None and is_causal:
            mask = causal_mask(T, S, q.device)
        return reference_attention(q, repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1]), mask)
    if _matmul_attention_is_faster(q) and dropout_p == 0:
        return matmul_attention(q, repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1]), mask, is_causal), None
    causal = mask is None and is_causal and T > 1
    if grouped:
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal, enable_gqa=True
        )
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
    return y, None


# --- modules ---------------------------------------------------------------------------------


class HeadNorm(nn.RMSNorm):
    """RMSNorm of queries or keys, its gain in the activations' dtype: under bf16 autocast the
    projection hands it bf16, and torch's fused kernel takes input and gain of one dtype only
    (else it warns and runs the slow composite).

    One gain serves every head, so a rank that holds some of the heads (tensor parallelism,
    ``parallel/tensor.py``) sees only part of its gradient: ``sync_gain`` is then set to an
    identity whose backward sums the gradient over the ranks, and every reader takes the gain
    through ``gain()``."""

    sync_gain: Callable[[torch.Tensor], torch.Tensor] | None = None

    def gain(self) -> torch.Tensor:
        return self.weight if self.sync_gain is None else self.sync_gain(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.gain().to(x.dtype), self.eps)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection.

    ``is_causal`` (GPT: True, BERT: False) says what ``mask=None`` means; a mask given to
    ``forward`` is used as is and must already include causality where wanted.

    ``n_kv_head`` < ``n_head`` is grouped-query attention (Ainslie et al. 2023; Llama 2 70B, Llama 3,
    Mistral, Qwen2): the fused c_attn's rows are n_head query heads, then n_kv_head key heads, then
    n_kv_head value heads, (n_head + 2 n_kv_head) x hs in all, and a KV cache holds n_kv_head heads.
    ``qkv_bias`` (None: ``bias``) puts a bias on c_attn alone, as Qwen2 does.
    ``qk_norm`` RMS-normalises each head's query and key (one learned gain of hs for all the
    heads, as Qwen3 and OLMo 2) before rotary positions: the attention logits stay bounded
    however large the projections grow (Dehghani et al. 2023; the modded-nanogpt speed-runs).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        bias: bool = True,
        dropout: float = 0.0,
        is_causal: bool = True,
        n_kv_head: int | None = None,
        qkv_bias: bool | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_kv_head < 1 or n_head % n_kv_head:
            raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head}")
        self.n_head = n_head
        self.n_kv_head = n_kv_head
        self.head_dim = n_embd // n_head
        self.is_causal = is_causal
        qkv_width = (n_head + 2 * n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(n_embd, qkv_width, bias=bias if qkv_bias is None else qkv_bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = HeadNorm(self.head_dim, eps=norm_eps)
            self.k_norm = HeadNorm(self.head_dim, eps=norm_eps)

    def score_flops_per_token(self, context: int) -> float:
        """Forward FLOPs per query of q k^T and of the weighted sum of v over ``context`` positions:
        2 matmuls x 2 FLOPs per multiply-add x C per key; a causal query sees context/2 keys on
        average (Kaplan et al. 2020, Table 1). models/flops.py adds it to the linears' count."""
        keys = context / 2 if self.is_causal else context
        return 2 * 2 * keys * self.c_proj.in_features

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

        ``kv_cache``, when given, stores this step's keys and values for ``layer`` and returns
        all of them (past + present); the caller advances it after the last layer.
        """
        B, T, _ = x.shape
        if self.n_kv_head != self.n_head:
            q, k, v = self._grouped_qkv(x, rotary)
        else:
            q, k, v = self._qkv(x, rotary)
        row_keys = None
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, n_kv, S, hs)
            row_keys = getattr(kv_cache, "row_keys", None)  # serve/slots.py DecodeView
        dropout_p = self.dropout if self.training else 0.0
        if row_keys is not None and T == 1 and not reference:
            y, weights = attend_rows(q, k, v, row_keys), None
        else:
            y, weights = attend(
                q, k, v, mask, is_causal=self.is_causal, dropout_p=dropout_p, reference=reference
            )
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y)), weights

    def _qkv(self, x: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (B, nh, T, hs) when every query head has its own key/value head."""
        B, T, _ = x.shape
        # heads from the projection's width, not n_head: under tensor parallelism
        # (parallel/tensor.py) a rank's c_attn gives its own heads' queries, keys and values only
        qkv = self.c_attn(x)
        heads = qkv.shape[-1] // (3 * self.head_dim)
        if (fused := self._fused_heads(qkv, heads, heads, rotary)) is not None:
            return fused
        qkv = qkv.view(B, T, 3, -1, self.head_dim)
        if self.qk_norm or rotary is not None:
            # split, not two slices: its backward joins the two gradients in one copy
            qk, v = qkv.split([2, 1], dim=2)
            qk = self._normed(qk) if self.qk_norm else qk
            qk = qk if rotary is None else apply_rotary(qk, *rotary)  # queries and keys in one pass
            q, k = qk.unbind(2)
            v = v[:, :, 0]
        else:
            # unbind, not three selects: its backward stacks the three gradients in one copy, where
            # each select's would zero a tensor of qkv's size and add into it
            q, k, v = qkv.unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)

    def _fused_heads(self, qkv: torch.Tensor, n_q: int, n_kv: int, rotary) -> tuple | None:
        """q, k, v (B, heads, T, hs) through the compiled QK-norm + rotary kernel on a CPU
        (``kernels/qk_norm_rope.py``: one pass instead of a dozen ops each way), or None where it
        does not apply (no QK-norm and no rotary, a GPU, too small, not built or not faster)."""
        if not (self.qk_norm or rotary is not None):
            return None
        gains = eps = None
        if self.qk_norm:
            gains, eps = (self.q_norm.gain(), self.k_norm.gain()), self.q_norm.eps
            if self.k_norm.eps != eps or any(type(g) not in (torch.Tensor, nn.Parameter) for g in gains):
                return None  # (a DTensor gain, under FSDP, is not memory the kernel can read)
        return attention_heads(qkv, n_q, n_kv, self.head_dim, gains, eps, rotary)

    def _normed(self, qk: torch.Tensor) -> torch.Tensor:
        """Queries and keys (B, T, 2, nh, hs) RMS-normalised in one call, then each scaled by its
        own gain: no copy of the values to stack them back beside (gpt-nano: 4 ms of an 83 ms step)."""
        gains = torch.stack([self.q_norm.gain(), self.k_norm.gain()]).to(qk.dtype)[:, None]  # (2, 1, hs)
        return F.rms_norm(qk, (self.head_dim,), eps=self.q_norm.eps) * gains

    def _grouped_qkv(self, x: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, nh, T, hs), keys and values (B, n_kv, T, hs) of grouped-query attention."""
        B, T, _ = x.shape
        qkv = self.c_attn(x)
        if (fused := self._fused_heads(qkv, self.n_head, self.n_kv_head, rotary)) is not None:
            return fused
        heads = qkv.view(B, T, -1, self.head_dim)  # (B, T, nh + 2 n_kv, hs)
        q, k, v = heads.split([self.n_head, self.n_kv_head, self.n_kv_head], dim=2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            cos, sin = (t[:, :, 0] for t in rotary)  # (B|1, T, 1, hs): broadcast over the heads
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def attend_from(self, x: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The output (B, C) at one query position per row, ``rows`` (B,), over every key of x (B, T, C).

        Equal to ``forward(x, mask)[0][range(B), rows]`` at a fraction of the work: keys and values
        for all T positions, the query, the attention and the output projection for one. It is
        what a model that reads a single position of its last layer needs (a classifier reads
        [CLS], or a decoder's last token). ``mask``: bool, broadcastable to (B, 1, 1, T), the keys
        each chosen query sees (causality included where wanted; no rotary positions here).
        """
        B, T, C = x.shape
        weight, bias = self.c_attn.weight, self.c_attn.bias  # rows: query, key, value projections
        q_width = self.n_head * self.head_dim
        kv = F.linear(x, weight[q_width:], None if bias is None else bias[q_width:]).view(
            B, T, 2, self.n_kv_head, self.head_dim
        )
        picked = x[torch.arange(B, device=x.device), rows]  # (B, C)
        q = F.linear(picked, weight[:q_width], None if bias is None else bias[:q_width]).view(
            B, self.n_head, 1, self.head_dim
        )
        if self.qk_norm:
            q = self.q_norm(q)
            kv = torch.stack([self.k_norm(kv[:, :, 0]), kv[:, :, 1]], dim=2)
        k, v = (repeat_kv(t.transpose(1, 2), self.n_head) for t in kv.unbind(2))  # (B, nh, T, hs) each
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, nh, 1, hs)
        return self.resid_dropout(self.c_proj(y.reshape(B, C)))


class CrossAttention(nn.Module):
    """Multi-head attention of x (B, T, C) over a memory (B, S, memory_dim), never causal.

    Queries come from x through ``q_proj``; keys and values from the memory through one fused
    ``kv_proj`` (an encoder-decoder's decoder attending to the encoder's output).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        bias: bool = True,
        dropout: float = 0.0,
        memory_dim: int | None = None,
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv_proj = nn.Linear(memory_dim or n_embd, 2 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def score_flops_per_token(self, context: int) -> float:
        """Forward FLOPs per query of q k^T and the weighted sum of v over a memory of ``context``
        positions, every one of them seen (models/flops.py; ``SelfAttention``'s, not halved)."""
        return 2 * 2 * context * self.c_proj.in_features

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, nh, S, hs) of a memory (B, S, memory_dim): compute once per
        memory and pass as ``memory_kv`` to every decoding step."""
        B, S, _ = memory.shape
        C = self.c_proj.in_features
        kv = self.kv_proj(memory).view(B, S, 2, self.n_head, C // self.n_head)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, nh, S, hs) each

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        reference: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) over ``memory`` (B, S, memory_dim) or its precomputed ``memory_kv`` ->
        (B, T, C), plus the weights (B, nh, T, S) on the reference path.

        mask: bool (B, 1, 1 or T, S), e.g. ``build_attention_mask(key_padding_mask=memory_padding)``;
        None lets every query see the whole memory.
        """
        if (memory is None) == (memory_kv is None):
            raise ValueError("give either memory or its precomputed memory_kv, not both or neither")
        B, T, C = x.shape
        k, v = self.project_memory(memory) if memory_kv is None else memory_kv
        q = self.q_proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        y, weights = attend(q, k, v, mask, is_causal=False, dropout_p=dropout_p, reference=reference)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights
