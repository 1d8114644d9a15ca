"""Seq2seq training batches: the contract's dict (checked by hand and against Hugging Face's
``shift_tokens_right``), length limits, the seeded bucketing sampler and its exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.data.seq2seq_batches import (
    Seq2SeqBatches,
    TargetIds,
    collate_pairs,
    fixed_eval_batches,
    length_report,
    pair_batches,
    target_special_ids,
)
from lmforge.data.seq2seq_shards import PairSplit, TokenRows
from lmforge.errors import DataError, TokenizerError
from lmforge.tokenizers import train_tokenizer

IDS = TargetIds(start=1, end=2, pad=0)


def make_split(sources: list[list[int]], targets: list[list[int]]) -> PairSplit:
    def rows(lists):
        offsets = np.cumsum([0] + [len(row) for row in lists]).astype(np.int64)
        return TokenRows(np.array([i for row in lists for i in row], dtype=np.uint16), offsets)

    return PairSplit(rows(sources), rows(targets))


def random_split(n: int, seed: int = 0) -> PairSplit:
    """n pairs; pair i's source starts with token 100 + i, so a batch row names its pair."""
    rng = np.random.default_rng(seed)
    sources = [[100 + i] + rng.integers(3, 50, rng.integers(0, 30)).tolist() for i in range(n)]
    targets = [rng.integers(3, 50, rng.integers(1, 30)).tolist() for _ in range(n)]
    return make_split(sources, targets)


def test_collate_matches_the_hand_written_batch():
    batch = collate_pairs([[5, 6, 7], [8]], [[20, 21], [22, 23, 24]], IDS)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["decoder_input_ids"].tolist() == [[1, 20, 21, 0], [1, 22, 23, 24]]
    assert batch["labels"].tolist() == [[20, 21, 2, -100], [22, 23, 24, 2]]
    assert all(tensor.dtype == torch.long for tensor in batch.values())


def test_decoder_inputs_are_hugging_face_shift_tokens_right_of_the_labels():
    from transformers.models.bart.modeling_bart import shift_tokens_right

    split = random_split(16)
    batch = collate_pairs([split.sources[i] for i in range(16)], [split.targets[i] for i in range(16)], IDS)
    expected = shift_tokens_right(batch["labels"], pad_token_id=IDS.pad, decoder_start_token_id=IDS.start)
    # equal wherever a label is scored; past a row's end HF shifts the end token into the first
    # padding column, which is never scored and which a causal decoder's earlier positions never see
    scored = batch["labels"] != -100
    assert torch.equal(batch["decoder_input_ids"][scored], expected[scored])
    assert (batch["decoder_input_ids"][~scored] == IDS.pad).all()


def test_limits_keep_the_first_tokens_and_a_cut_target_gets_no_end_token():
    batch = collate_pairs(
        [[5, 6, 7, 8], [9]], [[20, 21, 22, 23], [24]], IDS, max_source_length=2, max_target_length=3
    )
    assert batch["input_ids"].tolist() == [[5, 6], [9, 0]]
    assert batch["labels"].tolist() == [[20, 21, 22], [24, 2, -100]]  # cut: no end where the text goes on
    assert batch["decoder_input_ids"].tolist() == [[1, 20, 21], [1, 24, 0]]
    # a target that fits exactly with its end token (3 + 1 = 4) is not cut
    fits = collate_pairs([[5]], [[20, 21, 22]], IDS, max_target_length=4)
    assert fits["labels"].tolist() == [[20, 21, 22, 2]]


def test_length_report_counts_and_refuses_naming_the_limit():
    split = make_split([[1] * 5, [1] * 9, [1] * 3], [[2] * 4, [2] * 2, [2] * 7])
    report = length_report(split, max_source_length=4, max_target_length=5)
    assert report == {
        "pairs": 3,
        "longest_source": 9,
        "sources_truncated": 2,
        "longest_target": 7,
        "targets_truncated": 1,  # 7 + start > 5; 4 + start = 5 fits
    }
    with pytest.raises(
        DataError, match="2 of 3 training sources are longer than the model's source limit of 4 tokens"
    ):
        length_report(split, max_source_length=4, on_long="refuse", what="training")
    assert length_report(split)["sources_truncated"] == 0


def test_special_ids_per_tokenizer_kind():
    texts = ["abc def ghi"] * 20
    bpe = train_tokenizer("bpe", texts, 300)
    assert target_special_ids(bpe) == TargetIds(bpe.bos_id, bpe.eos_id, bpe.eos_id)  # no pad: the end id
    unigram = train_tokenizer("unigram", texts * 10, 30)
    assert target_special_ids(unigram) == TargetIds(unigram.bos_id, unigram.eos_id, unigram.pad_id)
    assert len({unigram.bos_id, unigram.eos_id, unigram.pad_id}) == 3
    wordpiece = train_tokenizer("wordpiece", texts, 60)
    assert target_special_ids(wordpiece) == TargetIds(wordpiece.cls_id, wordpiece.sep_id, wordpiece.pad_id)
    bare = train_tokenizer("char", texts, special_tokens={"bos": "", "eos": ""})
    with pytest.raises(TokenizerError, match="no end-of-text token"):
        target_special_ids(bare)


def batch_pairs(batch) -> list[int]:
    return (batch["input_ids"][:, 0] - 100).tolist()


@pytest.mark.parametrize("by_length", [True, False])
def test_an_epoch_visits_every_pair_once(by_length):
    split = random_split(103)
    sampler = Seq2SeqBatches(split, 8, IDS, seed=4, by_length=by_length, pool=3)
    seen = []
    while sampler.epoch == 0 and len(seen) < 103:
        seen += batch_pairs(sampler.next_batch())
    assert sorted(seen) == list(range(103))
    second = []
    while len(second) < 103:
        second += batch_pairs(sampler.next_batch())
    assert sorted(second) == list(range(103)) and second != seen  # a fresh order each epoch


def test_every_batch_row_is_its_pair():
    split = random_split(30)
    sampler = Seq2SeqBatches(split, 7, IDS, seed=1)
    for _ in range(10):
        batch = sampler.next_batch()
        for row, pair in enumerate(batch_pairs(batch)):
            source, target = split.sources[pair].tolist(), split.targets[pair].tolist()
            assert batch["input_ids"][row, : len(source)].tolist() == source
            assert batch["attention_mask"][row].sum() == len(source)
            assert batch["labels"][row, : len(target) + 1].tolist() == target + [IDS.end]
            assert (batch["labels"][row, len(target) + 1 :] == -100).all()


def test_same_seed_same_batches_and_resume_is_exact():
    split = random_split(50)
    first = Seq2SeqBatches(split, 4, IDS, seed=9)
    reference = [first.next_batch() for _ in range(30)]  # crosses two epochs (13 batches each)
    again = Seq2SeqBatches(split, 4, IDS, seed=9)
    for _ in range(17):
        again.next_batch()
    state = again.state_dict()
    resumed = Seq2SeqBatches(split, 4, IDS, seed=9)
    resumed.load_state_dict(state)
    for expected in reference[17:]:
        got = resumed.next_batch()
        assert all(torch.equal(got[key], expected[key]) for key in expected)
    other = Seq2SeqBatches(split, 4, IDS, seed=10).next_batch()
    assert not torch.equal(other["input_ids"], reference[0]["input_ids"])


def padding(batches) -> int:
    return sum(int((b["attention_mask"] == 0).sum() + (b["labels"] == -100).sum()) for b in batches)


def test_batching_by_length_wastes_less_on_padding():
    split = random_split(400)
    by_length = Seq2SeqBatches(split, 16, IDS, seed=0)
    shuffled = Seq2SeqBatches(split, 16, IDS, seed=0, by_length=False)
    epoch = len(split) // 16 + 1
    assert padding([by_length.next_batch() for _ in range(epoch)]) < 0.5 * padding(
        [shuffled.next_batch() for _ in range(epoch)]
    )


def test_sampler_reports_truncation_or_refuses():
    split = make_split([[100] * 5, [101] * 2], [[3] * 2, [3] * 9])
    sampler = Seq2SeqBatches(split, 2, IDS, max_source_length=4, max_target_length=6)
    assert sampler.truncated["sources_truncated"] == 1 and sampler.truncated["targets_truncated"] == 1
    batch = sampler.next_batch()
    assert batch["input_ids"].shape[1] == 4 and batch["labels"].shape[1] == 6
    with pytest.raises(DataError, match="target limit"):
        Seq2SeqBatches(split, 2, IDS, max_target_length=6, on_long="refuse")


def test_pair_batches_every_pair_once_in_order_and_ranks_partition():
    split = random_split(23)
    assert [i for b in pair_batches(split, 5, IDS) for i in batch_pairs(b)] == list(range(23))
    ranks = [
        [i for b in pair_batches(split, 4, IDS, rank=r, world_size=3) for i in batch_pairs(b)]
        for r in range(3)
    ]
    assert sorted(sum(ranks, [])) == list(range(23)) and ranks[1][:2] == [1, 4]


def test_fixed_eval_batches_are_the_same_every_time_and_spread_over_the_split():
    split = random_split(100)
    first = fixed_eval_batches(split, 8, IDS, num_batches=3)
    second = fixed_eval_batches(split, 8, IDS, num_batches=3)
    assert len(first) == 3 and all(torch.equal(a[k], b[k]) for a, b in zip(first, second) for k in a)
    chosen = sorted(i for b in first for i in batch_pairs(b))
    assert chosen == [i * 100 // 24 for i in range(24)]
    few = fixed_eval_batches(random_split(5), 8, IDS, num_batches=3)
    assert len(few) == 1 and sorted(batch_pairs(few[0])) == list(range(5))


def test_collate_refuses_an_empty_side_or_unpaired_lists():
    with pytest.raises(DataError, match="pair 1 of the batch has an empty side"):
        collate_pairs([[5], [6]], [[7], []], IDS)
    with pytest.raises(DataError, match="as many targets as sources"):
        collate_pairs([[5], [6]], [[7]], IDS)
