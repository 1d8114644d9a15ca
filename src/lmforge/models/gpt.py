"""GPT: a decoder-only Transformer language model (Radford et al. 2018/2019).

Read top to bottom: config, then the model. The blocks live in ``layers.py``.

    tokens (B, T) -> token embedding (+ learned or sinusoidal positions) -> n_layer pre-norm blocks
    (causal self-attention, rotary positions applied to q/k when chosen) -> final norm
    -> linear head tied to the token embedding -> logits (B, T, vocab)

With ``labels`` (aligned with the logits: ``labels[:, t]`` is the token that should follow
position t; -100 is ignored) the forward pass also returns the cross-entropy loss.

The Llama family is this model with rotary positions, RMSNorm, a SwiGLU MLP and no biases
(``registry.LLAMA``), plus the settings its relatives add, each a field below:

    n_kv_head        grouped-query attention: fewer key/value heads than query heads (Llama 2 70B,
                     Llama 3, Mistral, Qwen2); the KV cache shrinks by n_head / n_kv_head
    rope_theta       the rotary base: 10000 (Llama 2, Mistral 7B v0.1), 500000 (Llama 3), 1e6 (Qwen2)
    rope_scaling     Llama 3.1's "llama3" frequency scaling (or "linear"), as Hugging Face writes it
    qkv_bias         Qwen2: biases on the query, key and value projections only
    sliding_window   Mistral: query t sees keys t - window < s <= t only (training, prefill and
                     cached decoding alike); a window that covers the sequence changes nothing
    tie_embeddings   Llama 3.2 1B/3B and small Qwen2 share the head with the token table

and the levers of the training speed-runs (modded-nanogpt), each off by default:

    qk_norm          RMSNorm of each head's query and key before attention (Qwen3, OLMo 2)
    mlp="relu2"      ReLU squared in the MLP (So et al. 2021, Primer)
    zero_init_proj   the output projections of attention and MLP start at zero, so a fresh
                     model's blocks are identities and the residual stream starts as the embeddings
    logit_softcap    logits = c * tanh(logits / c) (Gemma 2): no logit beyond +-c, in training
                     and decoding alike
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from lmforge.models.layers import Block, RotaryEmbedding, causal_mask, make_norm, rope_type, sinusoidal_table
from lmforge.models.length_groups import by_groups
from lmforge.models.loss import language_model_loss
from lmforge.models.protocol import CacheLayout, LMOutput, NeuralLM


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024  # longest context the model accepts
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_hidden: int | None = None  # None: 4 * n_embd for GELU, the 2/3-sized equivalent for SwiGLU
    dropout: float = 0.0
    bias: bool = True
    pos_encoding: Literal["learned", "sinusoidal", "rope"] = "learned"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["gelu", "gelu_exact", "swiglu", "relu2"] = "gelu"  # gelu: GPT-2's tanh form; gelu_exact: erf
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    num_labels: int = 0  # > 0: a classifier on the last real token's state (GPT2ForSequenceClassification)
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None: n_head
    rope_scaling: dict | None = None  # Hugging Face's rope_scaling: {"rope_type": "llama3" | "linear", ...}
    qkv_bias: bool | None = None  # a bias on the q/k/v projection (Qwen2); None: as ``bias``
    sliding_window: int | None = None  # Mistral: each query sees this many keys at most, itself included
    qk_norm: bool = False  # RMSNorm of queries and keys per head
    zero_init_proj: bool = False  # attention's and the MLP's output projections start at zero
    logit_softcap: float | None = None  # c: logits = c * tanh(logits / c)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if self.logit_softcap is not None and not self.logit_softcap > 0:
            raise ValueError(f"logit_softcap={self.logit_softcap} must be positive")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window={self.sliding_window} must be at least 1")
        rope_type(self.rope_scaling)  # refuses a kind RotaryEmbedding cannot compute
        if self.pos_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("rotary positions need an even head size (n_embd / n_head)")
        if self.mlp_hidden is None:
            # SwiGLU has three matrices; 2/3 of 4C keeps its parameter count equal to GELU's two.
            self.mlp_hidden = 4 * self.n_embd if self.mlp != "swiglu" else _round_up(8 * self.n_embd // 3, 64)

    def to_dict(self) -> dict:
        return asdict(self)


def _round_up(x: int, multiple: int) -> int:
    return multiple * math.ceil(x / multiple)


ModelOutput = LMOutput  # the name earlier callers import from here


class GPT(NeuralLM):
    family = "gpt"
    config_class = GPTConfig
    decoding = "kv_cache"  # generate/step.py decodes through a preallocated key-value cache
    has_attention_maps = True
    lora_targets = ("c_attn", "c_proj", "c_fc")  # LoRA's default: attention and MLP linears
    sequence_layout = "text_end"  # a classified text: its tokens, then end-of-text (finetune/batches.py)

    @staticmethod
    def classifier_config(config: dict, labels: list[str]) -> tuple[dict, tuple[str, ...]]:
        """(this config with a head for ``labels``, the new modules a pretrained checkpoint lacks)."""
        return {**config, "num_labels": len(labels)}, ("score.",)

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos_encoding == "sinusoidal":
            self.register_buffer(
                "wpe_table", sinusoidal_table(config.block_size, config.n_embd), persistent=False
            )
        else:
            self.rotary = RotaryEmbedding(
                config.n_embd // config.n_head, config.block_size, config.rope_theta, config.rope_scaling
            )
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(
            Block(
                config.n_embd,
                config.n_head,
                config.mlp_hidden,
                norm=config.norm,
                mlp=config.mlp,
                bias=config.bias,
                dropout=config.dropout,
                norm_eps=config.norm_eps,
                n_kv_head=config.n_kv_head,
                qkv_bias=config.qkv_bias,
                qk_norm=config.qk_norm,
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = make_norm(config.norm, config.n_embd, config.norm_eps, config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if config.num_labels:
            self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)  # Hugging Face's name
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer), one per attention and MLP,
        # so the residual stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
                if config.zero_init_proj:  # modded-nanogpt: every block starts as the identity
                    nn.init.zeros_(param)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def context_limit(self) -> int:
        """Learned (and precomputed) positions stop at ``block_size``: the longest input."""
        return self.config.block_size

    def describe(self) -> str:
        config = self.config
        return f"{config.n_layer} layers x {config.n_embd} wide, context {config.block_size}"

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token table, learned positions, and the output head (the token table itself when tied)."""
        tables = [self.wte.weight, self.lm_head.weight]
        if self.config.pos_encoding == "learned":
            tables.append(self.wpe.weight)
        return tables

    def cache_layout(self) -> CacheLayout:
        """Keys and values per layer: (n_kv_head, head size) in the embedding's dtype."""
        config = self.config
        return CacheLayout(
            config.n_layer,
            config.n_kv_head or config.n_head,
            config.n_embd // config.n_head,
            self.wte.weight.dtype,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache=None,
        reduction: Literal["mean", "sum"] = "mean",
        output_attentions: bool = False,
        last_logits_only: bool = False,
    ) -> LMOutput:
        """Logits for every position, and the loss when ``labels`` are given.

        attention_mask: (B, S) with 1 for real tokens and 0 for padding (S counts cached tokens
            too), or a bool (B, 1, T, S) mask used as is (e.g. packed documents).
        position_ids: (T,) or (B, T); default: past length + 0..T-1.
        kv_cache: a cache with ``length`` and ``update(layer, k, v)``; filled as a side effect.
        reduction: "sum" lets a trainer normalise by the target tokens of a whole optimizer step.
        output_attentions: use the explicit reference attention and return its weights.
        last_logits_only: logits (B, 1, vocab) for the last position only; decoding needs no more,
            and the head is the largest matmul for a long prompt.
        """
        x, attentions = self._blocks(input_ids, attention_mask, position_ids, kv_cache, output_attentions)
        if last_logits_only:
            x = x[:, -1:]
        hidden = self.ln_f(x)  # the last hidden states (what Hugging Face's GPT2Model returns)
        logits = self.lm_head(hidden)  # (B, T, vocab)
        if self.config.logit_softcap is not None:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)  # Gemma 2: |logit| < cap

        loss = None
        if labels is not None:
            loss = language_model_loss(logits, labels, reduction)
        return LMOutput(logits=logits, loss=loss, attentions=attentions, hidden_states=hidden)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The final hidden states (B, T, C), after the last norm: what the head and a classifier read.

        Causal attention lets no token see the ones after it, so right padding changes nothing at
        the real positions and needs no mask; ``attention_mask`` is for left padding.
        """
        x, attentions = self._blocks(input_ids, attention_mask, None, None, output_attentions)
        return self.ln_f(x), attentions

    def sequence_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        groups: list[list[int]] | None = None,
    ) -> torch.Tensor:
        """Class logits (B, num_labels) from the state of each row's last real token.

        Rows are right-padded (``attention_mask`` 1 then 0): the last real token has read the
        whole text, as in Hugging Face's GPT2ForSequenceClassification. ``token_type_ids`` is
        accepted for a common call with BERT and ignored (a decoder has no segments). ``groups``
        (from ``length_groups.plan_groups``) runs the rows in groups of similar length, each cut to
        its longest row: the same logits from fewer padded positions.
        """
        if not self.config.num_labels:
            raise ValueError("this GPT has no classifier (num_labels is 0)")
        if attention_mask is None:
            hidden, _ = self.encode(input_ids)  # (B, T, C)
            return self.score(hidden[:, -1])
        if groups is None:
            return self._classify_embedded(self._embed(input_ids), attention_mask)
        return by_groups(self._embed(input_ids), attention_mask, groups, self._classify_embedded)

    def _classify_embedded(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_labels) of right-padded rows from the first block's input (B, T, C)."""
        x, _ = self._through_blocks(x, None, None, None, False)
        last = attention_mask.sum(dim=1) - 1  # (B,)
        rows = torch.arange(x.shape[0], device=x.device)
        return self.score(self.ln_f(x[rows, last]))  # (B, num_labels)

    def _blocks(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        kv_cache,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Embeddings through every block: the residual stream (B, T, C) before the final norm."""
        x = self._embed(input_ids, position_ids, kv_cache)
        return self._through_blocks(x, attention_mask, position_ids, kv_cache, output_attentions)

    def _embed(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None, kv_cache=None
    ) -> torch.Tensor:
        """Token (+ learned or sinusoidal position) embeddings: the first block's input (B, T, C)."""
        T = input_ids.shape[1]
        past = kv_cache.length if kv_cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size={self.config.block_size}")
        x = self.wte(input_ids)  # (B, T, C)
        if self.config.pos_encoding in ("learned", "sinusoidal"):
            if position_ids is None:
                position_ids = torch.arange(past, past + T, device=input_ids.device)  # (T,)
            if self.config.pos_encoding == "learned":
                x = x + self.wpe(position_ids)
            else:
                x = x + self.wpe_table[position_ids].to(x.dtype)
        return self.drop(x)

    def _through_blocks(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        kv_cache,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The embeddings (B, T, C) through every block (rotary positions from ``position_ids``,
        default the next T after the cache): the residual stream before the final norm."""
        T = x.shape[1]
        past = kv_cache.length if kv_cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=x.device)  # (T,)
        rotary = self.rotary(position_ids, end=past + T) if self.config.pos_encoding == "rope" else None
        mask = self._mask(attention_mask, T, past, x.device)

        attentions = [] if output_attentions else None
        for layer, block in enumerate(self.h):
            x, weights = block(
                x, mask=mask, rotary=rotary, kv_cache=kv_cache, layer=layer, reference=output_attentions
            )
            if attentions is not None:
                attentions.append(weights)
        if kv_cache is not None:
            kv_cache.advance(T)
        return x, attentions

    def _mask(
        self, attention_mask: torch.Tensor | None, T: int, past: int, device: torch.device
    ) -> torch.Tensor | None:
        """The bool mask (B|1, 1, T, past + T) of T queries after ``past`` cached keys, or None when
        plain causality is all there is (SDPA's fast path). A sliding window narrower than the
        keys is added to whatever mask there is; a window as wide as them changes nothing."""
        window = self.config.sliding_window
        if window is not None and window >= past + T:
            window = None
        if attention_mask is not None and attention_mask.dim() == 2:
            return causal_mask(T, past + T, device, padding_mask=attention_mask, window=window)
        if attention_mask is not None:
            if window is None:
                return attention_mask
            return attention_mask & causal_mask(T, past + T, device, window=window)
        if (past > 0 and T > 1) or window is not None:
            return causal_mask(T, past + T, device, window=window)
        return None  # plainly causal (or one new token seeing the whole cache)
