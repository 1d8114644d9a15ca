"""The model flags of ``lmforge pretrain``, declared once: overrides of a preset's shape.

Every field defaults to None, "the preset's value" (``models/registry.py`` holds the presets), so
a flag that is not given never changes a model, and ``--resume`` can tell a shape change from a
flag left alone. Each help text names the families the setting applies to; the registry refuses a
setting the chosen family does not have, naming the ones it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmforge.train.config import setting


@dataclass
class ModelSettings:
    """model shape (each flag overrides the preset's value)"""

    n_layer: int | None = setting(
        None,
        "[gpt, rnn, lstm, gru, rnn_seq2seq] Transformer blocks, or stacked recurrent layers",
        positive=True,
    )
    n_encoder_layer: int | None = setting(None, "[seq2seq] encoder blocks", positive=True)
    n_decoder_layer: int | None = setting(None, "[seq2seq] decoder blocks", positive=True)
    n_head: int | None = setting(None, "[gpt, seq2seq] attention heads", positive=True)
    n_kv_head: int | None = setting(
        None,
        "[gpt] key/value heads, dividing n_head: grouped-query attention (Llama 3, Mistral, Qwen2) "
        "when fewer; the KV cache shrinks by n_head / n_kv_head (default: n_head)",
        positive=True,
    )
    n_embd: int | None = setting(
        None, "[all] width of the token embeddings (gpt: the model width)", positive=True
    )
    block_size: int | None = setting(
        None,
        "[all] gpt: the context, the longest input it reads; seq2seq: the longest source (and target). window, rnn, lstm, gru: the training "
        "window (for recurrent models, how far back truncated backpropagation through time "
        "reaches); they read inputs of any length",
        positive=True,
    )
    mlp_hidden: int | None = setting(
        None, "[gpt, seq2seq] MLP hidden width (default 4 x n_embd)", positive=True
    )
    dropout: float | None = setting(None, "[all] dropout probability", non_negative=True, at_most=1.0)
    bias: bool | None = setting(None, "[gpt] biases in linear layers and norms")
    pos_encoding: Literal["learned", "sinusoidal", "rope"] | None = setting(
        None,
        "[gpt, seq2seq] position encoding: learned (GPT-2), sinusoidal (Vaswani et al.), rope (rotary; gpt only)",
    )
    norm: Literal["layernorm", "rmsnorm"] | None = setting(None, "[gpt] layernorm or rmsnorm")
    mlp: Literal["gelu", "gelu_exact", "swiglu", "relu", "silu", "relu2"] | None = setting(
        None,
        "[gpt, seq2seq] gelu (GPT-2's tanh approximation), gelu_exact (the erf form of BERT, "
        "nanoGPT and BART), swiglu (Llama; gpt only), relu (Vaswani et al.), silu (Marian's swish) "
        "or relu2 (ReLU squared, Primer; gpt only)",
    )
    qk_norm: bool | None = setting(
        None, "[gpt] RMSNorm of each head's queries and keys before attention (Qwen3, OLMo 2)"
    )
    zero_init_proj: bool | None = setting(
        None, "[gpt] start the attention and MLP output projections at zero (each block an identity)"
    )
    logit_softcap: float | None = setting(
        None, "[gpt] cap the logits smoothly: c * tanh(logits / c) (Gemma 2)", positive=True
    )
    hidden_size: int | None = setting(
        None,
        "[window, rnn, lstm, gru, rnn_seq2seq] tanh units of the window model; width of the recurrent state",
        positive=True,
    )
    context: int | None = setting(
        None, "[window] how many previous tokens each prediction sees (n)", positive=True
    )
    direct: bool | None = setting(
        None, "[window] direct connections from the embeddings to the output (Bengio et al.)"
    )
    activation: Literal["tanh", "relu", "sigmoid"] | None = setting(
        None,
        "[rnn] sigma of the Elman network: tanh, relu or sigmoid (sigmoid runs the Python loop, the others nn.RNN)",
    )
    tie_embeddings: bool | None = setting(
        None,
        "[gpt, seq2seq, rnn, lstm, gru, rnn_seq2seq] share the output layer with the token embedding (recurrent models: "
        "needs n_embd == hidden_size; the default ties exactly then)",
    )
    cell: Literal["gru", "lstm"] | None = setting(
        None, "[rnn_seq2seq] the recurrent cell of the encoder and the decoder: gru or lstm"
    )
    bidirectional: bool | None = setting(
        None, "[rnn_seq2seq] the encoder reads the source both ways (its states projected to hidden_size)"
    )
    attention: Literal["dot", "additive", "none"] | None = setting(
        None,
        "[rnn_seq2seq] how each decoder step looks at the source states: dot (Luong: s_t . h_i), "
        "additive (Bahdanau: v . tanh(W s_t + U h_i)) or none (the bottleneck model: the decoder sees "
        "only the encoder's final state)",
    )
    order: int | None = setting(
        None, "[ngram] n, the tokens an n-gram spans (default 3: a trigram model)", positive=True
    )
    smoothing: Literal["mle", "add-k", "kn", "modified-kn", "stupid-backoff"] | None = setting(
        None,
        "[ngram] mle (plain counts: unseen n-grams get 0), add-k (Laplace with k=1), kn "
        "(interpolated Kneser-Ney), modified-kn (the default: three discounts, Chen & Goodman) or "
        "stupid-backoff (fast scores that are not probabilities)",
    )
    add_k: float | None = setting(None, "[ngram] k of add-k smoothing (default 1)", positive=True)
    discount: float | None = setting(
        None, "[ngram] the Kneser-Ney discount D (default: estimated from the counts)", positive=True
    )
