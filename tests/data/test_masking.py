"""Masked-LM masking against its definition: who may be chosen, the 15% / 80-10-10 rates, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.batching import pad_batch
from lmforge.data.masking import mask_batch, mask_tokens
from lmforge.errors import TokenizerError, UserInputError
from lmforge.tokenizers.base import Tokenizer

PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
SPECIAL = {PAD, CLS, SEP, MASK, UNK}
VOCAB = 60
ORDINARY = VOCAB - len(SPECIAL)


class ListTokenizer(Tokenizer):
    """A fixed vocabulary of BERT-style specials and words w5..w59: just enough of the interface."""

    kind = "word"

    def __init__(self, with_mask: bool = True) -> None:
        self.vocab = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + [f"w{i}" for i in range(5, VOCAB)]
        names = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]"}
        super().__init__({**names, "mask": "[MASK]"} if with_mask else names)

    vocab_size = property(lambda self: len(self.vocab))
    encode = decode = save = None  # unused here

    def id_to_token(self, token_id: int) -> str:
        return self.vocab[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.index(token) if token in self.vocab else None


def sentences(batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] w.. [SEP] rows of random lengths, padded: (input_ids, attention_mask)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (batch_size,), generator=gen).tolist()
    rows = [[CLS, *torch.randint(5, VOCAB, (n,), generator=gen).tolist(), SEP] for n in lengths]
    batch = pad_batch(rows, pad_id=PAD)
    return batch.input_ids, batch.attention_mask


def mask(input_ids, seed=0, attention_mask=None, **kwargs):
    return mask_tokens(
        input_ids,
        mask_id=MASK,
        vocab_size=VOCAB,
        special_ids=SPECIAL,
        generator=torch.Generator().manual_seed(seed),
        attention_mask=attention_mask,
        **kwargs,
    )


@settings(max_examples=80, deadline=None)
@given(
    ids=st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20), min_size=1, max_size=6),
    seed=st.integers(0, 2**31),
    probability=st.sampled_from([0.15, 0.5, 1.0]),
)
def test_never_masks_special_or_padding_and_labels_only_chosen(ids, seed, probability):
    batch = pad_batch(ids, pad_id=PAD)
    original = batch.input_ids.clone()
    masked, labels = mask(batch.input_ids, seed, batch.attention_mask, mlm_probability=probability)
    assert torch.equal(batch.input_ids, original)  # the input is not modified
    protected = torch.isin(original, torch.tensor(sorted(SPECIAL))) | (batch.attention_mask == 0)
    assert torch.equal(masked[protected], original[protected])
    assert (labels[protected] == -100).all()
    chosen = labels != -100
    assert torch.equal(labels[chosen], original[chosen])  # the label is the original id
    assert not (masked != original)[~chosen].any()  # nothing outside the chosen changes
    replaced = masked[chosen & (masked != original) & (masked != MASK)]
    assert not torch.isin(replaced, torch.tensor(sorted(SPECIAL))).any()  # random ids are ordinary


def test_padding_is_never_chosen_even_when_its_id_is_ordinary():
    ids = torch.full((4, 30), 7)
    attention = torch.ones_like(ids)
    attention[:, 10:] = 0  # id 7 is not special, but these are padding
    masked, labels = mask(ids, attention_mask=attention, mlm_probability=1.0)
    assert (labels[:, 10:] == -100).all() and (masked[:, 10:] == 7).all()
    assert (labels[:, :10] == 7).all()


def binomial_bound(successes: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(successes - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


def test_rates_match_15_percent_and_80_10_10():
    ids, attention = sentences(512, seed=1)
    eligible = attention.bool() & ~torch.isin(ids, torch.tensor(sorted(SPECIAL)))
    chosen_total = eligible_total = masked_total = random_total = kept_total = 0
    for seed in range(10):
        masked, labels = mask(ids, seed, attention)
        chosen = labels != -100
        chosen_total += int(chosen.sum())
        eligible_total += int(eligible.sum())
        masked_total += int((masked[chosen] == MASK).sum())
        random_total += int(((masked != ids) & (masked != MASK))[chosen].sum())
        kept_total += int((masked == ids)[chosen].sum())
    assert eligible_total > 100_000
    assert binomial_bound(chosen_total, eligible_total, 0.15)
    assert binomial_bound(masked_total, chosen_total, 0.8)
    # a random replacement equals the original 1 time in ORDINARY, and then counts as kept
    assert binomial_bound(random_total, chosen_total, 0.1 * (1 - 1 / ORDINARY))
    assert binomial_bound(kept_total, chosen_total, 0.1 + 0.1 / ORDINARY)


def test_random_replacements_are_spread_over_the_whole_ordinary_vocabulary():
    ids = torch.full((200, 200), 5)
    masked, _ = mask(ids, mlm_probability=1.0, mask_replace_prob=0.0, random_replace_prob=1.0)
    counts = torch.bincount(masked.flatten(), minlength=VOCAB)
    assert (counts[sorted(SPECIAL)] == 0).all()
    expected = ids.numel() / ORDINARY
    assert ((counts[5:] - expected).abs() < 5 * math.sqrt(expected)).all()


def test_same_generator_gives_same_masking():
    ids, attention = sentences(16, seed=2)
    first = mask(ids, 5, attention)
    again = mask(ids, 5, attention)
    other = mask(ids, 6, attention)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_probability_extremes():
    ids, attention = sentences(8, seed=3)
    _, labels = mask(ids, attention_mask=attention, mlm_probability=0.0)
    assert (labels == -100).all()
    masked, labels = mask(
        ids, attention_mask=attention, mlm_probability=1.0, mask_replace_prob=1.0, random_replace_prob=0.0
    )
    chosen = labels != -100
    assert (masked[chosen] == MASK).all() and int(chosen.sum()) == int((attention.bool() & (ids > UNK)).sum())


def test_bad_probabilities_are_a_clear_error():
    ids = torch.tensor([[5, 6]])
    with pytest.raises(UserInputError, match="mlm_probability"):
        mask(ids, mlm_probability=1.5)
    with pytest.raises(UserInputError, match="exceeds 1"):
        mask(ids, mask_replace_prob=0.8, random_replace_prob=0.3)


def test_mask_batch_takes_ids_from_the_tokenizer():
    batch = pad_batch([[CLS, 9, 10, 11, SEP], [CLS, 12, SEP]], pad_id=PAD)
    out = mask_batch(batch, ListTokenizer(), torch.Generator().manual_seed(0), mlm_probability=1.0)
    assert torch.equal(out.attention_mask, batch.attention_mask)
    assert out.labels.tolist() == [[-100, 9, 10, 11, -100], [-100, 12, -100, -100, -100]]
    with pytest.raises(TokenizerError, match="no mask token"):
        mask_batch(batch, ListTokenizer(with_mask=False), torch.Generator())


# --- pretraining batches: [CLS] window [SEP] over a packed stream --------------------------------


def stream(length: int = 500) -> np.ndarray:
    generator = np.random.default_rng(0)
    data = generator.integers(5, VOCAB, length).astype(np.uint16)  # ordinary words
    data[::37] = SEP  # documents packed, [SEP] between them
    return data


def test_masked_windows_are_cls_stream_sep_and_label_only_masked_stream_tokens():
    from lmforge.data.masking import MaskedWindowSampler

    data = stream()
    sampler = MaskedWindowSampler(data, ListTokenizer(), batch_size=64, block_size=12, seed=3)
    batch = sampler.next_batch()
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (64, 12)
    assert (ids[:, 0] == CLS).all() and (ids[:, -1] == SEP).all()
    chosen = labels != -100
    assert not chosen[:, [0, -1]].any()  # [CLS] and the closing [SEP] are never targets
    # where chosen the label is the original token, elsewhere the input is: each row is a stream window
    original = torch.where(chosen, labels, ids)
    windows = {tuple(data[s : s + 10].tolist()) for s in range(len(data) - 9)}
    for row, row_chosen in zip(original, chosen, strict=True):
        assert tuple(row[1:-1].tolist()) in windows
        assert not row_chosen[row == SEP].any()  # a document separator inside is special: never chosen
    changed = ids != original
    assert changed.any() and chosen[changed].all()  # only chosen positions were replaced


def test_masked_window_rate_is_15_percent_of_ordinary_tokens():
    from lmforge.data.masking import MaskedWindowSampler

    sampler = MaskedWindowSampler(stream(5000), ListTokenizer(), batch_size=512, block_size=34, seed=0)
    batch = sampler.next_batch()
    ordinary = ~torch.isin(
        torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"]),
        torch.tensor(sorted(SPECIAL)),
    )
    rate = (batch["labels"] != -100).sum().item() / ordinary.sum().item()
    assert abs(rate - 0.15) < 0.01  # 512 x ~31 ordinary tokens: sd of the rate about 0.0028


def test_masked_window_sampler_resumes_exactly_from_its_state():
    from lmforge.data.masking import MaskedWindowSampler

    first = MaskedWindowSampler(stream(), ListTokenizer(), batch_size=4, block_size=12, seed=7)
    first.next_batch()
    state = first.state_dict()
    expected = first.next_batch()
    second = MaskedWindowSampler(stream(), ListTokenizer(), batch_size=4, block_size=12, seed=99)
    second.load_state_dict(state)
    got = second.next_batch()
    assert all(torch.equal(expected[k], got[k]) for k in ("input_ids", "labels"))


def test_masked_eval_batches_are_consecutive_windows_with_one_fixed_masking():
    from lmforge.data.masking import masked_eval_batches

    data = stream()
    batches = masked_eval_batches(data, ListTokenizer(), batch_size=8, block_size=12, num_batches=3)
    again = masked_eval_batches(data, ListTokenizer(), batch_size=8, block_size=12, num_batches=3)
    assert len(batches) == 3 and all(b["input_ids"].shape == (8, 12) for b in batches)
    for a, b in zip(batches, again, strict=True):  # the same at every call: no seed of the run enters
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    rows = torch.cat([b["input_ids"] for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    original = torch.where(labels != -100, labels, rows)[:, 1:-1].reshape(-1)
    assert torch.equal(
        original, torch.from_numpy(data[: 24 * 10].astype("int64"))
    )  # the split's start, in order
    short = masked_eval_batches(data[:25], ListTokenizer(), batch_size=8, block_size=12, num_batches=3)
    assert [b["input_ids"].shape[0] for b in short] == [2]  # only whole windows: 25 // 10


def test_masked_lm_batches_need_mask_cls_and_sep():
    from lmforge.data.masking import MaskedWindowSampler

    with pytest.raises(TokenizerError, match=r"needs \[MASK\]"):
        MaskedWindowSampler(stream(), ListTokenizer(with_mask=False), batch_size=2, block_size=12)
