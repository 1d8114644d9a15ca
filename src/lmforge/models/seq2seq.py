"""The Transformer encoder-decoder (Vaswani et al. 2017), with the options BART and Marian need.

Read top to bottom: config, then the model. The blocks live in ``layers.py`` (``Block`` for the
encoder, ``DecoderBlock`` for the decoder), attention in ``attention.py``, the decoding state in
``seq2seq_cache.py``.

    source (B, S), right-padded, attention_mask (B, S)
      -> token embedding (x sqrt(C) when scale_embedding) + positions -> [LayerNorm] -> dropout
      -> n_encoder_layer blocks, bidirectional, no query sees a padding key -> [final norm]
      -> memory (B, S, C)
    decoder_input_ids (B, T): decoder_start_token_id, then the target shifted right
      -> token embedding + positions -> [LayerNorm] -> dropout
      -> n_decoder_layer blocks: causal self-attention, cross-attention over the memory (padding
         masked), feed-forward -> [final norm] -> head (tied to the target table) + final_logits_bias
      -> logits (B, T, vocab): logits[:, t] scores the target token after decoder_input_ids[:, t]

Options, each a config field:
    norm_first           pre-norm blocks and a final norm after each stack (mBART, T5-like training
                         stability); False: post-norm, norm(x + sublayer(x)) (Vaswani, BART, Marian)
    pos_encoding         "learned" (BART: a table of block_size + position_offset rows, read at
                         position + position_offset, offset 2) or "sinusoidal" (Marian's layout:
                         the sines of every frequency in the first half of the vector, the cosines
                         in the second; computed, not learned)
    scale_embedding      token embeddings times sqrt(n_embd) (Vaswani, Marian)
    layernorm_embedding  a LayerNorm after embedding + positions (BART)
    mlp                  the feed-forward activation: gelu_exact (BART's "gelu"), gelu (tanh), relu
                         (Vaswani), silu (Marian's "swish")
    shared_vocab         one token table for source and target (BART, most Marian); False: a
                         separate source table of source_vocab_size rows (vocab_size is the target's)
    tie_embeddings       the head is the target token table
    final_logits_bias    a (1, vocab) buffer added to the logits (BART and Marian carry one)

Decoding (models/protocol.py; generate/seq2seq_step.py drives it): ``encode`` reads the source once,
``start_decoding`` preallocates the decoder's self-attention cache for ``max_length`` target tokens
and projects each layer's cross-attention keys and values from the memory ONCE, ``decode`` feeds
T >= 1 target tokens, ``reorder_decoding`` moves rows for beam search.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from lmforge.models.layers import Block, DecoderBlock, build_attention_mask
from lmforge.models.loss import language_model_loss
from lmforge.models.protocol import LMOutput, NeuralLM
from lmforge.models.seq2seq_cache import Seq2SeqState

ACTIVATIONS = ("gelu", "gelu_exact", "relu", "silu")


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 32000  # the target vocabulary (and the source's when shared_vocab)
    block_size: int = 512  # the longest source: rows of its position table
    target_block_size: int | None = None  # the longest decoder input (start token included); None: block_size
    n_encoder_layer: int = 6
    n_decoder_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    mlp_hidden: int | None = None  # None: 4 * n_embd
    dropout: float = 0.1
    mlp: Literal["gelu", "gelu_exact", "relu", "silu"] = "relu"
    norm_first: bool = False  # pre-norm blocks plus a final norm per stack; False: post-norm
    pos_encoding: Literal["learned", "sinusoidal"] = "sinusoidal"
    position_offset: int = 0  # learned positions: row of position p is p + offset (BART: 2)
    scale_embedding: bool = False  # token embeddings x sqrt(n_embd)
    layernorm_embedding: bool = False  # LayerNorm after embeddings + positions (BART)
    shared_vocab: bool = True  # one token table for source and target
    source_vocab_size: int | None = None  # the source table's rows when not shared_vocab
    tie_embeddings: bool = True  # the head is the target token table
    final_logits_bias: bool = False  # a (1, vocab) buffer added to the logits
    norm_eps: float = 1e-5
    decoder_start_token_id: int = 0  # the decoder's first input (pretrain: the tokenizer's bos, else eos)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.mlp not in ACTIVATIONS:
            raise ValueError(f"unknown mlp {self.mlp!r} for seq2seq; choose {', '.join(ACTIVATIONS)}")
        if self.pos_encoding not in ("learned", "sinusoidal"):
            raise ValueError(f"seq2seq positions are learned or sinusoidal, not {self.pos_encoding!r}")
        if self.pos_encoding == "sinusoidal" and self.position_offset:
            raise ValueError("position_offset applies to learned positions only")
        if self.n_encoder_layer < 1 or self.n_decoder_layer < 1:
            raise ValueError("a seq2seq model needs at least one encoder and one decoder layer")
        if self.shared_vocab and self.source_vocab_size not in (None, self.vocab_size):
            raise ValueError(
                f"source_vocab_size={self.source_vocab_size} differs from vocab_size={self.vocab_size} "
                "but shared_vocab is true; set shared_vocab false for separate vocabularies"
            )
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.n_embd

    @property
    def n_layer(self) -> int:
        """Encoder plus decoder layers: what a summary or an estimate counts as depth."""
        return self.n_encoder_layer + self.n_decoder_layer

    @property
    def target_limit(self) -> int:
        return self.target_block_size or self.block_size

    def to_dict(self) -> dict:
        return asdict(self)


def marian_sinusoids(n_pos: int, dim: int) -> torch.Tensor:
    """(n_pos, dim) float32: sin(pos / 10000^(2i/dim)) for i < dim/2, then the cosines of the same
    angles (Hugging Face's MarianSinusoidalPositionalEmbedding, computed the same way in float64
    with numpy, so a converted Marian model reads bit-identical positions)."""
    import numpy as np

    j = np.arange(dim)
    angles = np.arange(n_pos)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
    out = torch.empty(n_pos, dim, dtype=torch.float32)
    sentinel = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :sentinel] = torch.tensor(np.sin(angles[:, 0::2]), dtype=torch.float32)
    out[:, sentinel:] = torch.tensor(np.cos(angles[:, 1::2]), dtype=torch.float32)
    return out


class Seq2SeqTransformer(NeuralLM):
    family = "seq2seq"
    config_class = Seq2SeqConfig
    decoding = "encoder_decoder"
    lm_kind = "seq2seq"
    has_attention_maps = True  # output_attentions: decoder self-attention and cross-attention weights
    lora_targets = ("c_attn", "c_proj", "c_fc", "q_proj", "kv_proj")

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)  # target tokens (and source tokens when shared)
        if not config.shared_vocab:
            self.source_wte = nn.Embedding(config.source_vocab_size or config.vocab_size, C)
        if config.pos_encoding == "learned":
            self.enc_wpe = nn.Embedding(config.block_size + config.position_offset, C)
            self.dec_wpe = nn.Embedding(config.target_limit + config.position_offset, C)
        else:
            rows = max(config.block_size, config.target_limit)
            self.register_buffer("pos_table", marian_sinusoids(rows, C), persistent=False)
        if config.layernorm_embedding:
            self.enc_ln_emb = nn.LayerNorm(C, eps=config.norm_eps)
            self.dec_ln_emb = nn.LayerNorm(C, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        shape = {
            "norm": "layernorm",
            "mlp": config.mlp,
            "dropout": config.dropout,
            "norm_eps": config.norm_eps,
            "prenorm": config.norm_first,
        }
        self.enc_h = nn.ModuleList(
            Block(C, config.n_head, config.mlp_hidden, is_causal=False, **shape)
            for _ in range(config.n_encoder_layer)
        )
        self.dec_h = nn.ModuleList(
            DecoderBlock(C, config.n_head, config.mlp_hidden, **shape) for _ in range(config.n_decoder_layer)
        )
        if config.norm_first:
            self.enc_ln_f = nn.LayerNorm(C, eps=config.norm_eps)
            self.dec_ln_f = nn.LayerNorm(C, eps=config.norm_eps)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        if config.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.apply(self._init_weights)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.embed_scale = math.sqrt(C) if config.scale_embedding else 1.0

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BART's initialisation: N(0, 0.02) weights, zero biases, LayerNorm (1, 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # --- the protocol's attributes ---------------------------------------------------------

    @property
    def context_limit(self) -> int:
        """The longest source: the encoder's position table."""
        return self.config.block_size

    @property
    def target_limit(self) -> int:
        """The longest decoder input, the start token included: the decoder's position table."""
        return self.config.target_limit

    def describe(self) -> str:
        c = self.config
        return (
            f"encoder-decoder, {c.n_encoder_layer}+{c.n_decoder_layer} layers x {c.n_embd} wide, "
            f"context {c.block_size}"
        )

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token tables, learned position tables and an untied head."""
        tables = [self.wte.weight]
        if not self.config.shared_vocab:
            tables.append(self.source_wte.weight)
        if self.config.pos_encoding == "learned":
            tables += [self.enc_wpe.weight, self.dec_wpe.weight]
        if not self.config.tie_embeddings:
            tables.append(self.lm_head.weight)
        return tables

    # --- the two stacks ---------------------------------------------------------------------

    def _embed(self, ids: torch.Tensor, start: int, *, source: bool) -> torch.Tensor:
        """Token embeddings (scaled) + positions start..start+T-1 [+ LayerNorm], dropped out: (B, T, C)."""
        T = ids.shape[1]
        limit = self.config.block_size if source else self.config.target_limit
        if start + T > limit:
            side = "source" if source else "target"
            raise ValueError(f"{side} of {start + T} tokens exceeds the model's {side} length of {limit}")
        table = self.source_wte if source and not self.config.shared_vocab else self.wte
        x = table(ids) * self.embed_scale
        positions = torch.arange(start, start + T, device=ids.device)
        if self.config.pos_encoding == "learned":
            wpe = self.enc_wpe if source else self.dec_wpe
            x = x + wpe(positions + self.config.position_offset)
        else:
            x = x + self.pos_table[positions].to(x.dtype)
        if self.config.layernorm_embedding:
            x = (self.enc_ln_emb if source else self.dec_ln_emb)(x)
        return self.drop(x)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The memory (B, S, C) of right-padded sources; no query attends to a padding key."""
        return self._encode(input_ids, attention_mask)[0]

    def _encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        x = self._embed(input_ids, 0, source=True)
        mask = None if attention_mask is None else build_attention_mask(key_padding_mask=attention_mask)
        attentions = [] if output_attentions else None
        for block in self.enc_h:
            x, weights = block(x, mask=mask, reference=output_attentions)
            if attentions is not None:
                attentions.append(weights)
        if self.config.norm_first:
            x = self.enc_ln_f(x)
        return x, attentions

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.norm_first:
            hidden = self.dec_ln_f(hidden)
        logits = self.lm_head(hidden)
        if self.config.final_logits_bias:
            logits = logits + self.final_logits_bias.to(logits.dtype)
        return logits

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reduction: Literal["mean", "sum"] = "mean",
        output_attentions: bool = False,
        last_logits_only: bool = False,
    ) -> LMOutput:
        """Logits (B, T, vocab) of every target position in one pass, and the loss given ``labels``.

        output_attentions: the explicit reference attention; ``attentions`` are the decoder's
            self-attention weights (B, nh, T, T) per layer, ``cross_attentions`` its weights over
            the source (B, nh, T, S), 0 on padding, summing to 1 over the real source tokens.
        decoder_input_ids: None shifts ``labels`` (else ``input_ids``) right behind the start token,
            as Hugging Face's BART does.
        decoder_attention_mask: (B, T), 0 on target padding (right padding needs none: causality
            already hides later positions, and labels are -100 there).
        """
        if decoder_input_ids is None:  # Hugging Face's default: the labels (else the source) shifted right
            decoder_input_ids = self.shift_right(labels if labels is not None else input_ids)
        memory, _ = self._encode(input_ids, attention_mask)
        memory_mask = (
            None if attention_mask is None else build_attention_mask(key_padding_mask=attention_mask)
        )
        self_mask = None
        if decoder_attention_mask is not None:
            self_mask = build_attention_mask(key_padding_mask=decoder_attention_mask, causal=True)
        x = self._embed(decoder_input_ids, 0, source=False)
        attentions = [] if output_attentions else None
        cross = [] if output_attentions else None
        for block in self.dec_h:
            x, weights, cross_weights = block(
                x, memory, memory_mask=memory_mask, mask=self_mask, reference=output_attentions
            )
            if attentions is not None:
                attentions.append(weights)
                cross.append(cross_weights)
        logits = self._logits(x[:, -1:] if last_logits_only else x)
        loss = None if labels is None else language_model_loss(logits, labels, reduction)
        return LMOutput(
            logits=logits, loss=loss, attentions=attentions, hidden_states=x, cross_attentions=cross
        )

    def shift_right(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T): ``decoder_start_token_id``, then ids[:, :-1]; a -100 label becomes the
        start id (a padding position, masked out of the loss)."""
        start = torch.full_like(ids[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, ids[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.decoder_start_token_id)

    # --- decoding ---------------------------------------------------------------------------

    def start_decoding(
        self, memory: torch.Tensor, attention_mask: torch.Tensor | None, *, max_length: int
    ) -> Seq2SeqState:
        """An empty decoder state for up to ``max_length`` target tokens over ``memory`` (B, S, C):
        the self-attention cache preallocated, every layer's cross keys and values projected now."""
        if max_length > self.target_limit:
            raise ValueError(
                f"{max_length} target positions exceed the model's target length of {self.target_limit}"
            )
        memory_kv = [block.cross_attn.project_memory(memory) for block in self.dec_h]
        B, nh, _, hs = memory_kv[0][0].shape
        shape = (len(self.dec_h), B, nh, max_length, hs)
        keys = torch.empty(shape, dtype=memory_kv[0][0].dtype, device=memory.device)
        values = torch.empty_like(keys)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = build_attention_mask(key_padding_mask=attention_mask)  # (B, 1, 1, S)
        return Seq2SeqState(keys, values, memory_kv, mask, torch.arange(B, device=memory.device))

    def decode(
        self, decoder_input_ids: torch.Tensor, state: Seq2SeqState
    ) -> tuple[torch.Tensor, Seq2SeqState]:
        """Feed T >= 1 more target tokens (N, T): their logits (N, T, vocab) and the state after them."""
        T = decoder_input_ids.shape[1]
        if state.length + T > state.max_length:
            raise ValueError(
                f"the decoder state holds {state.max_length} positions; {state.length + T} were asked for"
            )
        x = self._embed(decoder_input_ids, state.length, source=False)
        for i, block in enumerate(self.dec_h):
            x, _, _ = block(
                x, memory_kv=state.memory_kv[i], memory_mask=state.memory_mask, kv_cache=state, layer=i
            )
        state.advance(T)
        return self._logits(x), state

    def reorder_decoding(self, state: Seq2SeqState, index: torch.Tensor) -> Seq2SeqState:
        """Row i continues old row ``index[i]`` (beam search; expanding each source into copies)."""
        state.reorder(index)
        return state
