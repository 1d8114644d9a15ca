"""BERT: a bidirectional Transformer encoder pretrained as a masked language model (Devlin et al. 2019).

Read top to bottom: config, then the model. The blocks live in ``layers.py`` (post-norm,
non-causal ``Block``), attention in ``attention.py`` (the same three paths GPT uses).

    [CLS] the [MASK] sat [SEP] [PAD]    input_ids (B, T), attention_mask (B, T): 1 real, 0 padding
      -> token + learned position + segment embedding -> LayerNorm -> dropout
      -> n_layer post-norm blocks: norm(x + attn(x)), then norm(x + mlp(x)), exact (erf) GELU;
         attention sees every real token, before and after, never a padding key
      -> hidden states (B, T, C)
         -> masked-LM head: dense -> GELU -> LayerNorm -> decoder tied to the token table + bias
            -> logits (B, T, vocab): logits[:, t] scores the token *at* t (not the next one)
         -> pooler: dense -> tanh on the [CLS] position (B, C) -> classifier (B, num_labels)

Unlike GPT, ``labels`` are aligned with the inputs, not shifted: ``labels[:, t]`` is the original
token at a masked position t, -100 elsewhere (data/masking.py), so the loss counts masked
positions only. A model's ``lm_kind`` is "masked" (models/protocol.py): commands that continue
or score text left to right refuse it.

Which heads exist is part of the config, so a converted Hugging Face ``BertModel`` (no masked-LM
head), ``BertForMaskedLM`` (no pooler) or ``BertForSequenceClassification`` (pooler and
classifier) keeps exactly the weights it came with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.layers import Block, build_attention_mask
from lmforge.models.length_groups import by_groups
from lmforge.models.loss import IGNORE_INDEX, language_model_loss
from lmforge.models.protocol import LMOutput, NeuralLM


@dataclass
class BERTConfig:
    vocab_size: int = 30522
    block_size: int = 512  # learned positions: the longest input (HF max_position_embeddings)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_hidden: int | None = None  # None: 4 * n_embd (HF intermediate_size)
    type_vocab_size: int = 2  # segments: sentence A and sentence B
    dropout: float = 0.1
    norm_eps: float = 1e-12
    mlm_head: bool = True  # the masked-LM head (a converted BertModel has none)
    pooler: bool = True  # dense + tanh on [CLS] (a converted BertForMaskedLM has none)
    num_labels: int = 0  # > 0: a classifier on the pooled [CLS] (BertForSequenceClassification)
    id2label: dict[str, str] | None = None  # the classifier's label names, by id as a string

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.num_labels and not self.pooler:
            raise ValueError("a classifier reads the pooled [CLS] state; it needs pooler=True")
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)


class BERT(NeuralLM):
    family = "bert"
    config_class = BERTConfig
    decoding = "none"  # an encoder predicts masked tokens in place; nothing decodes it left to right
    lm_kind = "masked"
    has_attention_maps = True
    lora_targets = ("c_attn", "c_proj", "c_fc")  # LoRA's default: attention and MLP linears
    sequence_layout = "cls_text_sep"  # a classified text: [CLS] text [SEP] (pair [SEP]) (finetune/batches.py)

    @staticmethod
    def classifier_config(config: dict, labels: list[str]) -> tuple[dict, tuple[str, ...]]:
        """(this config as BertForSequenceClassification for ``labels``: pooled [CLS], no masked-LM
        head; the new modules a pretrained checkpoint lacks: the classifier, and the pooler of a
        checkpoint that had none)."""
        head = {"num_labels": len(labels), "pooler": True, "mlm_head": False}
        head["id2label"] = {str(i): name for i, name in enumerate(labels)}
        fresh = ("classifier.",) if config.get("pooler", True) else ("classifier.", "pooler.")
        return {**config, **head}, fresh

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)  # tokens
        self.wpe = nn.Embedding(config.block_size, C)  # positions
        self.wse = nn.Embedding(config.type_vocab_size, C)  # segments (token types)
        self.ln_emb = nn.LayerNorm(C, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(
            Block(
                C,
                config.n_head,
                config.mlp_hidden,
                norm="layernorm",
                mlp="gelu_exact",
                dropout=config.dropout,
                norm_eps=config.norm_eps,
                prenorm=False,
                is_causal=False,
            )
            for _ in range(config.n_layer)
        )
        if config.mlm_head:
            self.mlm_dense = nn.Linear(C, C)
            self.mlm_ln = nn.LayerNorm(C, eps=config.norm_eps)
            self.lm_head = nn.Linear(C, config.vocab_size)  # its weight is the token table, its bias its own
        if config.pooler:
            self.pooler = nn.Linear(C, C)
        if config.num_labels:
            self.classifier = nn.Linear(C, config.num_labels)
        self.apply(self._init_weights)
        if config.mlm_head:
            self.lm_head.weight = self.wte.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, LayerNorm (1, 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def context_limit(self) -> int:
        """Learned positions stop at ``block_size``: the longest input."""
        return self.config.block_size

    def describe(self) -> str:
        config = self.config
        return f"encoder, {config.n_layer} layers x {config.n_embd} wide, context {config.block_size}"

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token, position and segment tables (the masked-LM decoder is the token table)."""
        return [self.wte.weight, self.wpe.weight, self.wse.weight]

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The last layer's hidden states (B, T, C), and per-layer attention weights when asked.

        attention_mask: (B, T) with 1 for real tokens and 0 for padding: no query attends to a
            padding key, so padding changes nothing at the real positions. (Padding positions
            still attend to the real tokens, as in Hugging Face's BERT; nothing should read them.)
        token_type_ids: (B, T) segment of each token (0: sentence A, 1: sentence B); default 0.
        position_ids: (T,) or (B, T); default 0..T-1.
        output_attentions: use the explicit reference attention and return its weights.
        """
        x = self._embed(input_ids, token_type_ids, position_ids)
        mask = None if attention_mask is None else build_attention_mask(key_padding_mask=attention_mask)
        attentions = [] if output_attentions else None
        for block in self.h:
            x, weights = block(x, mask=mask, reference=output_attentions)  # mask (B, 1, 1, T) or None
            if attentions is not None:
                attentions.append(weights)
        return x, attentions

    def _embed(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token + position + segment embeddings, normalised: the first block's input (B, T, C)."""
        length = input_ids.shape[1]
        if length > self.config.block_size:
            raise ValueError(f"sequence of {length} tokens exceeds block_size={self.config.block_size}")
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device)  # (T,)
        segments = self.wse(token_type_ids) if token_type_ids is not None else self.wse.weight[0]
        x = self.wte(input_ids) + self.wpe(position_ids) + segments  # (B, T, C)
        return self.drop(self.ln_emb(x))

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Masked-LM logits (B, T, vocab) from hidden states (B, T, C)."""
        if not self.config.mlm_head:
            raise ValueError(
                "this BERT has no masked-LM head (it was converted from a BertModel); it gives hidden "
                "states (encode), not token predictions"
            )
        return self.lm_head(self.mlm_ln(F.gelu(self.mlm_dense(hidden))))

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """tanh(dense(h_[CLS])): (B, T, C) -> (B, C), the sentence summary a classifier reads."""
        if not self.config.pooler:
            raise ValueError("this BERT has no pooler (it was converted from a BertForMaskedLM)")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_labels) from hidden states (B, T, C): classifier(dropout(pool))."""
        if not self.config.num_labels:
            raise ValueError("this BERT has no classifier (num_labels is 0)")
        return self.classifier(self.drop(self.pool(hidden)))

    def sequence_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        groups: list[list[int]] | None = None,
    ) -> torch.Tensor:
        """Class logits (B, num_labels) of [CLS] ... [SEP] rows (right-padded, ``attention_mask`` 0 on padding).

        Equal to ``classify(encode(...)[0])``, but the last block computes the [CLS] position only
        (``Block.forward_at``): the pooler reads nothing else of it, and the rest of that block is
        a sixth of a 6-layer encoder's work that fine-tuning would throw away. ``groups`` (from
        ``length_groups.plan_groups``) runs the rows in groups of similar length, each cut to its
        longest row: the same logits from fewer padded positions.
        """
        if not self.config.num_labels:
            raise ValueError("this BERT has no classifier (num_labels is 0)")
        x = self._embed(input_ids, token_type_ids)
        if groups is None or attention_mask is None:
            return self._classify_embedded(x, attention_mask)
        return by_groups(x, attention_mask, groups, self._classify_embedded)

    def _classify_embedded(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Class logits (B, num_labels) from the first block's input (B, T, C)."""
        mask = None if attention_mask is None else build_attention_mask(key_padding_mask=attention_mask)
        for block in self.h[:-1]:
            x, _ = block(x, mask=mask)
        first = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # [CLS] in every row
        cls = self.h[-1].forward_at(x, first, mask)  # (B, C)
        return self.classifier(self.drop(torch.tanh(self.pooler(cls))))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        reduction: Literal["mean", "sum"] = "mean",
        output_attentions: bool = False,
        last_logits_only: bool = False,
        labelled_logits_only: bool = False,
    ) -> LMOutput:
        """Masked-LM logits for every position, the hidden states, and the loss when ``labels`` are given.

        labels: (B, T), the original token at masked positions and -100 elsewhere (not shifted).
        reduction: "sum" lets a trainer normalise by the masked tokens of a whole optimizer step.
        last_logits_only: logits (B, 1, vocab) for the last position only (the protocol's option).
        labelled_logits_only: logits (N, vocab) for the N labelled (masked) positions only: the same
            loss for about a seventh of the head's work, which is most of a small BERT's step.
        """
        hidden, attentions = self.encode(
            input_ids, attention_mask, token_type_ids, position_ids, output_attentions
        )
        if labelled_logits_only:
            if labels is None:
                raise ValueError("labelled_logits_only needs labels (which positions to score)")
            keep = labels != IGNORE_INDEX  # (B, T)
            labels = labels[keep]  # (N,)
            logits = self.mlm_logits(hidden[keep])  # (N, vocab)
        else:
            logits = self.mlm_logits(hidden[:, -1:] if last_logits_only else hidden)  # (B, T, vocab)
        loss = None if labels is None else language_model_loss(logits, labels, reduction)
        return LMOutput(logits=logits, loss=loss, attentions=attentions, hidden_states=hidden)
