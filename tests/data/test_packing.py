"""Packing against hand-computed rows, its invariants, and a reference Transformer: no leak."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmforge.data.packing import document_causal_mask, pack_documents
from lmforge.errors import DataError, UserInputError


def test_best_fit_hand_computed():
    packed = pack_documents([[1, 2, 3], [4, 5], [6]], block_size=4, pad_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 6], [4, 5, 0, 0]]
    assert packed.document_ids.tolist() == [[0, 0, 0, 1], [0, 0, -1, -1]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
    assert packed.labels.tolist() == [[2, 3, -100, -100], [5, -100, -100, -100]]


def test_sequential_hand_computed_splits_at_row_boundaries():
    packed = pack_documents(
        [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], block_size=4, pad_id=99, strategy="sequential"
    )
    assert packed.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 99, 99]]
    assert packed.document_ids.tolist() == [[0, 0, 0, 1], [0, 1, 1, 1], [0, 1, -1, -1]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0], [0, 0, 1, 2], [0, 0, 0, 0]]
    assert packed.labels.tolist() == [[2, 3, -100, -100], [-100, 7, 8, -100], [-100, -100, -100, -100]]


def test_mask_hand_computed():
    mask = document_causal_mask(torch.tensor([[0, 0, 1, -1]]))
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


documents_strategy = st.lists(st.integers(0, 25), min_size=1, max_size=12)  # document lengths


@settings(max_examples=80, deadline=None)
@given(lengths=documents_strategy, block_size=st.integers(1, 10), best_fit=st.booleans())
def test_every_token_lands_once_with_its_own_positions_labels_and_mask(lengths, block_size, best_fit):
    # token value = 1000 * document + offset, so every packed token says where it came from
    documents = [[1000 * d + i for i in range(n)] for d, n in enumerate(lengths)]
    if sum(lengths) == 0:
        with pytest.raises(DataError):
            pack_documents(documents, block_size, pad_id=-7)
        return
    packed = pack_documents(
        documents, block_size, pad_id=-7, strategy="best_fit" if best_fit else "sequential"
    )
    ids, labels, positions, docs = packed.input_ids, packed.labels, packed.position_ids, packed.document_ids
    assert ids.shape == (len(ids), block_size)
    real = docs != -1
    assert sorted(ids[real].tolist()) == sorted(t for doc in documents for t in doc)
    assert (ids[~real] == -7).all() and (labels[~real] == -100).all() and (positions[~real] == 0).all()
    for row in range(len(ids)):
        for t in range(block_size):
            if not real[row, t]:
                continue
            same_next = t + 1 < block_size and docs[row, t + 1] == docs[row, t]
            if same_next:  # consecutive tokens of one document
                assert ids[row, t + 1] == ids[row, t] + 1 and positions[row, t + 1] == positions[row, t] + 1
            assert labels[row, t] == (ids[row, t + 1] if same_next else -100)
            if positions[row, t] == 0 and best_fit:  # a piece starts at a block boundary of its document
                assert ids[row, t] % 1000 % block_size == 0
    if best_fit:  # only documents longer than the block are split
        pieces = real & (positions == 0)
        assert int(pieces.sum()) == sum(math.ceil(n / block_size) for n in lengths)
    mask = document_causal_mask(docs)
    assert mask.any(dim=-1).all()  # no query row is fully masked
    allowed = (docs[:, :, None] == docs[:, None, :]) & torch.ones(block_size, block_size).tril().bool()
    assert torch.equal(mask[:, 0], allowed)


def test_padding_rows_give_no_nan_in_sdpa():
    packed = pack_documents([[1, 2], [3]], block_size=6, pad_id=0, strategy="sequential")
    q, k, v = torch.randn(3, 1, 2, 6, 4).unbind(0)  # (B, nh, T, hs)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=document_causal_mask(packed.document_ids))
    assert torch.isfinite(out).all()


def test_sdpa_with_the_mask_equals_explicit_attention():
    packed = pack_documents([[1] * 5, [2] * 3, [3] * 6], block_size=8, pad_id=0)
    mask = document_causal_mask(packed.document_ids)  # (B, 1, T, T)
    B = len(packed.input_ids)
    q, k, v = torch.randn(3, B, 2, 8, 4, dtype=torch.float64).unbind(0)
    scores = (q @ k.transpose(-2, -1) / 2.0).masked_fill(~mask, float("-inf"))
    expected = torch.softmax(scores, dim=-1) @ v
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), expected)


# --- the no-leak guarantee, against a reference Transformer written here ----------------------
class ReferenceLM(nn.Module):
    """Tiny pre-norm causal Transformer with learned absolute positions and explicit attention."""

    def __init__(self, vocab: int = 40, dim: int = 32, heads: int = 2, layers: int = 2, positions: int = 32):
        super().__init__()
        self.heads = heads
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(positions, dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm1": nn.LayerNorm(dim),
                    "qkv": nn.Linear(dim, 3 * dim),
                    "proj": nn.Linear(dim, dim),
                    "norm2": nn.LayerNorm(dim),
                    "mlp": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
                }
            )
            for _ in range(layers)
        )
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        x = self.tokens(ids) + self.positions(position_ids)  # (B, T, C)
        for block in self.blocks:
            q, k, v = block["qkv"](block["norm1"](x)).split(x.shape[-1], dim=-1)
            q, k, v = (z.view(B, T, self.heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # Vaswani et al. eq. 1
            attention = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            x = x + block["proj"]((attention @ v).transpose(1, 2).reshape(B, T, -1))
            x = x + block["mlp"](block["norm2"](x))
        return self.head(x)  # (B, T, vocab)


def alone(model: nn.Module, document: list[int]) -> torch.Tensor:
    n = len(document)
    causal = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
    return model(torch.tensor([document]), torch.arange(n)[None], causal)[0]


@pytest.fixture
def packed_documents():
    gen = torch.Generator().manual_seed(0)
    documents = [torch.randint(1, 40, (n,), generator=gen).tolist() for n in (5, 3, 7, 9, 2)]
    return documents, pack_documents(documents, block_size=12, pad_id=0)


def segments(packed):
    """(row, start, end) of every packed piece."""
    for row, docs in enumerate(packed.document_ids.tolist()):
        for k in set(docs) - {-1}:
            where = [t for t, d in enumerate(docs) if d == k]
            yield row, where[0], where[-1] + 1


def test_each_packed_document_gets_the_logits_it_gets_alone(packed_documents):
    documents, packed = packed_documents
    torch.manual_seed(0)
    model = ReferenceLM().double().eval()
    with torch.no_grad():
        logits = model(packed.input_ids, packed.position_ids, document_causal_mask(packed.document_ids))
        found = 0
        for row, start, end in segments(packed):
            document = packed.input_ids[row, start:end].tolist()
            assert document in documents
            torch.testing.assert_close(logits[row, start:end], alone(model, document), rtol=0, atol=1e-5)
            found += 1
    assert found == len(documents)
    assert torch.isfinite(logits).all()  # padding rows included


def test_without_the_document_mask_documents_leak(packed_documents):
    documents, packed = packed_documents
    torch.manual_seed(0)
    model = ReferenceLM().double().eval()
    T = packed.input_ids.shape[1]
    plain_causal = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        logits = model(packed.input_ids, packed.position_ids, plain_causal)
        leaked = [
            (logits[row, start:end] - alone(model, packed.input_ids[row, start:end].tolist())).abs().max()
            for row, start, end in segments(packed)
            if start > 0  # a document with another before it in its row
        ]
    assert leaked and min(leaked) > 1e-3


def test_lmforge_gpt_takes_the_packed_batch_as_is(packed_documents):
    from lmforge.models.gpt import GPT, GPTConfig

    documents, packed = packed_documents
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        out = model(**packed.as_dict())
        for row, start, end in segments(packed):
            document = packed.input_ids[row, start:end]
            torch.testing.assert_close(
                out.logits[row, start:end], model(document[None]).logits[0], rtol=0, atol=1e-5
            )
    assert torch.isfinite(out.loss)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(UserInputError, match="block_size"):
        pack_documents([[1]], block_size=0, pad_id=0)
    with pytest.raises(UserInputError, match="strategy"):
        pack_documents([[1]], block_size=4, pad_id=0, strategy="random")
    with pytest.raises(DataError, match="nothing to pack"):
        pack_documents([[], []], block_size=4, pad_id=0)
