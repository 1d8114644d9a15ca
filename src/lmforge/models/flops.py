"""Floating-point operations a model does per token, counted from its modules (no forward pass,
so a model on the meta device, 175B parameters or not, is counted instantly).

A multiply-add is 2 FLOPs. Per token, forward:

    nn.Linear(in, out)          2 x in x out (a head tied to the token table is still a matmul)
    nn.RNN / nn.LSTM / nn.GRU   2 x (input-to-hidden + hidden-to-hidden weights), every layer
    attention scores            2 x 2 x C x (keys a query sees): q k^T and the weighted sum of v,
                                C = n_embd; a causal query sees context/2 keys on average, so a GPT
                                layer adds 2 x context x C (Kaplan et al. 2020, Table 1: "attention
                                mask", 2 n_layer n_ctx d_attn), a bidirectional one 4 x context x C
    embeddings, norms, activations, softmax   0: lookups and element-wise work, a fraction of a
                                percent at any real width (Kaplan et al. leave them out too)

Training is 3 x forward: the backward pass computes two matmuls (the input's gradient and the
weight's) for each of the forward's one (Kaplan et al. 2020 section 2.1; Hoffmann et al. 2022
appendix F). A module that computes scores says how many through ``score_flops_per_token(context)``
(models/attention.py), so nothing here names a family.
"""

from __future__ import annotations

from torch import nn

TRAINING_MULTIPLIER = 3  # forward + backward (two matmuls per forward matmul)


def own_flops_per_token(module: nn.Module, context: int) -> int:
    """Forward FLOPs per token of ``module`` itself, not counting its children."""
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features
    if isinstance(module, nn.RNNBase):
        return 2 * sum(p.numel() for name, p in module.named_parameters() if name.startswith("weight_"))
    scores = getattr(module, "score_flops_per_token", None)
    return int(scores(context)) if callable(scores) else 0


def forward_flops_per_token(model: nn.Module, context: int) -> int:
    """Forward FLOPs per token of ``model`` and everything in it, for inputs of ``context`` tokens."""
    return sum(own_flops_per_token(module, context) for module in model.modules())


def attention_flops_per_token(model: nn.Module, context: int) -> int:
    """The attention scores' share of ``forward_flops_per_token``: what 6N leaves out."""
    return sum(
        int(module.score_flops_per_token(context))
        for module in model.modules()
        if callable(getattr(module, "score_flops_per_token", None))
    )
