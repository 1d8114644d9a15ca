"""models/length_groups.py: the split by dynamic programming against a brute force and a hand
count; BERT's and GPT's classifier logits and gradients with the rows in groups against the one
padded pass; and the fine-tuning paths that use it."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from lmforge.finetune.batches import EncodedRow
from lmforge.finetune.classify import batch_logits, classification_loss, predict_rows
from lmforge.models.bert import BERT, BERTConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.length_groups import by_groups, compute_dtype, length_groups, plan_groups


def cost(lengths: list[int], groups: list[list[int]], group_cost: float) -> float:
    return sum(len(g) * max(lengths[i] for i in g) + group_cost for g in groups)


def test_a_split_counted_by_hand():
    lengths = [10, 100, 12, 98]
    # one group: 4 x 100 + 20 = 420; {10, 12} {98, 100}: 2 x 12 + 2 x 100 + 40 = 264;
    # three groups 282, four 300
    assert length_groups(lengths, 20) == [[0, 2], [3, 1]]
    assert cost(lengths, [[0, 2], [3, 1]], 20) == 264
    assert length_groups(lengths, 1000) == [[0, 2, 3, 1]]  # a group dearer than the padding it saves
    assert length_groups(lengths, 0) == [[0], [2], [3], [1]]


@pytest.mark.parametrize("seed", range(20))
def test_the_split_is_the_cheapest_of_every_split_of_the_sorted_rows(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 8))]
    group_cost = rng.choice([0, 5, 30, 200])
    groups = length_groups(lengths, group_cost)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row once
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    brute = min(
        cost(lengths, [order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))], group_cost)
        for k in range(len(order))
        for cuts in itertools.combinations(range(1, len(order)), k)
    )
    assert cost(lengths, groups, group_cost) == brute


def test_plan_groups_keeps_one_pass_where_splitting_saves_too_little():
    full = torch.ones(8, 20, dtype=torch.long)
    assert plan_groups(full) is None  # no padding at all
    mixed = (torch.arange(20)[None] < torch.tensor([2, 3, 2, 20, 19, 3, 20, 2])[:, None]).long()
    assert plan_groups(mixed) == [[0, 2, 7, 1, 5], [4, 3, 6]]
    assert plan_groups(mixed.to("meta")) is None  # not a CPU: one padded pass
    assert plan_groups(mixed, torch.bfloat16) is None  # oneDNN would compile every new shape


def test_by_groups_refuses_groups_that_miss_a_row():
    x, mask = torch.zeros(3, 4, 2), torch.ones(3, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="every row"):
        by_groups(x, mask, [[0], [2]], lambda x, m: x[:, 0])


def padded_batch(vocab: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(1, vocab, (len(lengths), width), generator=generator).masked_fill(mask == 0, 0)
    return ids, mask


def classifiers() -> list[tuple[str, torch.nn.Module]]:
    torch.manual_seed(0)
    bert = BERT(
        BERTConfig(vocab_size=53, block_size=40, n_layer=2, n_head=4, n_embd=32, dropout=0.0, num_labels=3)
    )
    small = dict(vocab_size=53, block_size=40, n_layer=2, n_head=4, n_embd=32, dropout=0.0, num_labels=3)
    gpt = GPT(GPTConfig(**small))
    llama_like = GPT(GPTConfig(**small, pos_encoding="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True))
    return [("bert", bert), ("gpt", gpt), ("gpt-rope", llama_like)]


@pytest.mark.parametrize("name", ["bert", "gpt", "gpt-rope"])
def test_grouped_rows_give_the_padded_pass_logits_and_gradients(name):
    model = dict(classifiers())[name].train()
    lengths = [3, 37, 5, 4, 36, 40, 2, 6]
    ids, mask = padded_batch(53, lengths)
    types = (torch.arange(ids.shape[1])[None] >= 2).long() * mask  # a second segment after two tokens
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    groups = plan_groups(mask)
    assert groups is not None and len(groups) >= 2

    def run(groups):
        model.zero_grad(set_to_none=True)
        logits = model.sequence_logits(ids, mask, types, groups=groups)
        F.cross_entropy(logits, labels).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    padded_logits, padded_grads = run(None)
    grouped_logits, grouped_grads = run(groups)
    torch.testing.assert_close(grouped_logits, padded_logits, rtol=0, atol=1e-5)
    assert grouped_grads.keys() == padded_grads.keys()
    for key in padded_grads:
        torch.testing.assert_close(grouped_grads[key], padded_grads[key], rtol=0, atol=1e-5, msg=key)


def test_classification_loss_and_predict_rows_match_rows_computed_alone():
    model = dict(classifiers())["bert"].eval()
    lengths = [3, 30, 4, 29, 2, 31]
    ids, mask = padded_batch(53, lengths, seed=1)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    batch["labels"] = torch.tensor([0, 1, 2, 1, 0, 2])
    with torch.no_grad():
        alone = torch.cat([model.sequence_logits(ids[i : i + 1, :n]) for i, n in enumerate(lengths)])
        loss_sum, count = classification_loss(model, batch)
        torch.testing.assert_close(batch_logits(model, batch), alone, rtol=0, atol=1e-5)
    assert count == 6
    torch.testing.assert_close(
        loss_sum, F.cross_entropy(alone, batch["labels"], reduction="sum"), atol=1e-5, rtol=0
    )

    rows = [EncodedRow(ids[i, :n].tolist(), [0] * n) for i, n in enumerate(lengths)]
    probs = predict_rows(model, rows, pad_id=0, batch_size=4, device=torch.device("cpu"))
    torch.testing.assert_close(probs, torch.softmax(alone, dim=-1), rtol=0, atol=1e-6)  # rows' order kept


def test_compute_dtype_follows_autocast_then_the_weights():
    model = torch.nn.Linear(2, 2)
    assert compute_dtype(model) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(model) == torch.bfloat16
    assert compute_dtype(model.to(torch.bfloat16)) == torch.bfloat16
