"""Sentence embeddings from any run with hidden states: the mean of the last layer's hidden states
over a text's real tokens, L2-normalised (sentence-transformers' mean pooling).

    vectors, truncated = embed_texts(loaded.model, loaded.tokenizer, ["a cat", "a dog sat"])
    vectors @ vectors.T          # cosine similarities: the rows have unit length

A BERT reads [CLS] text [SEP] (as it was pretrained and as sentence-transformers feeds it) and
attends to every real token, never a padding one; a causal model (GPT) reads the text alone, left
to right, so padding on the right changes nothing it sees. Texts are batched, padded to the
longest of the batch, and the mean counts only the real tokens: a text embeds the same alone or
beside a longer one. A model with no hidden states (recurrent, n-gram) is refused.
"""

from __future__ import annotations

import torch

from lmforge.errors import UserInputError


def _ids(model, tokenizer, text: str) -> tuple[list[int], bool]:
    """(the ids the model reads for ``text``, whether they were cut to its context)."""
    ids = tokenizer.encode(text)
    limit = model.context_limit
    wrap = model.lm_kind == "masked" and tokenizer.cls_id is not None and tokenizer.sep_id is not None
    room = None if limit is None else limit - 2 * wrap
    cut = room is not None and len(ids) > room
    if cut:
        ids = ids[:room]
    if wrap:
        ids = [tokenizer.cls_id, *ids, tokenizer.sep_id]
    return ids, cut


def _hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last layer's hidden states (B, T, C) at every position, without the LM head."""
    encode = getattr(model, "encode", None)
    if encode is None:
        raise UserInputError(
            f"this {model.family} model gives no hidden states to pool; embed with a Transformer run "
            "(GPT or BERT)"
        )
    # A causal model needs no mask for right padding (no real token sees a later one), and without
    # one it keeps SDPA's fast causal path.
    mask = attention_mask if model.lm_kind == "masked" else None
    return encode(input_ids, mask)[0]


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 32) -> tuple[torch.Tensor, int]:
    """((N, C) unit-length float32 embeddings, how many texts were cut to the model's context)."""
    if not isinstance(model, torch.nn.Module):
        raise UserInputError(
            f"this {model.family} model counts tokens and has no hidden states; embed with a Transformer run"
        )
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    encoded = [_ids(model, tokenizer, text) for text in texts]
    if any(not ids for ids, _ in encoded):
        raise UserInputError("a text encodes to no tokens; every text needs at least one token")
    vectors = []
    for start in range(0, len(encoded), batch_size):
        rows = [ids for ids, _ in encoded[start : start + batch_size]]
        width = max(map(len, rows))
        input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in rows], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows], device=device)
        hidden = _hidden(model, input_ids, mask).float()  # (B, T, C)
        weights = mask[..., None].float()
        mean = (hidden * weights).sum(1) / weights.sum(1)  # (B, C)
        vectors.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
    return torch.cat(vectors), sum(cut for _, cut in encoded)
