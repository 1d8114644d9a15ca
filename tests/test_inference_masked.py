"""fill-mask and probe against independent truths: transformers' BertForMaskedLM on the same random
weights, a hand loop of pseudo-log-likelihood, and ``score_text`` for causal models."""

from __future__ import annotations

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import UserInputError
from lmforge.inference import load_for_inference, score_text
from lmforge.inference_masked import encode_with_masks, fill_mask, masked_pll, probe
from tests.tiny_run import make_bert_run, make_run

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_mlm(tmp_path_factory):
    """A random BertForMaskedLM saved by transformers and converted by `lmforge convert --from-hf`."""
    from tests.interop.test_bert_convert import save_hf

    root = tmp_path_factory.mktemp("mlm")
    save_hf(root / "hf", "BertForMaskedLM")
    assert main(["convert", "--from-hf", str(root / "hf"), "--out", str(root / "run")]) == 0
    return root / "hf", load_for_inference(root / "run", causal_for=None, device="cpu")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return load_for_inference(
        make_bert_run(tmp_path_factory.mktemp("bert") / "run").path, causal_for=None, device="cpu"
    )


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    return load_for_inference(make_run(tmp_path_factory.mktemp("gpt") / "run").path, device="cpu")


@torch.no_grad()
def test_fill_mask_probabilities_equal_softmax_of_transformers_bert_for_masked_lm(hf_mlm):
    hf_dir, loaded = hf_mlm
    text = "hello [MASK] world, the [MASK] cafe!"
    reference = transformers.AutoTokenizer.from_pretrained(hf_dir)
    batch = reference(text, return_tensors="pt")
    ids, positions = encode_with_masks(loaded.tokenizer, text)
    assert ids == batch["input_ids"][0].tolist()
    theirs = transformers.BertForMaskedLM.from_pretrained(hf_dir).eval()
    probs = torch.softmax(theirs(**batch).logits[0, positions], dim=-1)  # (masks, vocab)
    fills = fill_mask(loaded.model, loaded.tokenizer, text, top_k=5)
    assert len(fills) == 2
    for row, expected in zip(fills, probs):
        top = expected.topk(5)
        assert [f.token_id for f in row] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([f.prob for f in row]), top.values, rtol=0, atol=1e-5)


def test_top_k_is_sorted_sums_to_at_most_one_and_to_one_over_the_whole_vocabulary(bert):
    model, tokenizer = bert.model, bert.tokenizer
    (row,) = fill_mask(model, tokenizer, "speak, [MASK] speak", top_k=7)
    probs = [f.prob for f in row]
    assert len(row) == 7 and probs == sorted(probs, reverse=True) and sum(probs) <= 1
    (whole,) = fill_mask(model, tokenizer, "speak, [MASK] speak", top_k=10_000)
    assert len(whole) == tokenizer.vocab_size
    assert sum(f.prob for f in whole) == pytest.approx(1, abs=1e-5)


def test_the_tokenizers_own_mask_spelling_is_accepted_too(bert):
    tokenizer = bert.tokenizer
    own = tokenizer.id_to_token(tokenizer.mask_id)
    assert encode_with_masks(tokenizer, f"all {own} speak") == encode_with_masks(
        tokenizer, "all [MASK] speak"
    )


@torch.no_grad()
def test_pseudo_log_likelihood_equals_a_hand_loop(bert):
    model, tokenizer = bert.model, bert.tokenizer
    before, middle = tokenizer.encode("before we"), tokenizer.encode("proceed any")
    ids = [tokenizer.cls_id, *before, *middle, *tokenizer.encode("further"), tokenizer.sep_id]
    positions = list(range(1 + len(before), 1 + len(before) + len(middle)))
    expected = 0.0
    for i in positions:  # one forward pass per masked position, the others visible
        row = list(ids)
        row[i] = tokenizer.mask_id
        logits = model(torch.tensor([row])).logits[0, i]
        expected += torch.log_softmax(logits, dim=-1)[ids[i]].item()
    assert masked_pll(model, ids, positions, tokenizer.mask_id) == pytest.approx(expected, abs=1e-5)
    ranked = probe(model, tokenizer, "before we ___ further.", ["proceed any", "speak"])
    (mine,) = [c for c in ranked if c.text == "proceed any"]
    assert mine.tokens == len(middle)
    assert mine.logprob == pytest.approx(
        masked_pll(model, [*ids[:-1], *tokenizer.encode("."), ids[-1]], positions, tokenizer.mask_id),
        abs=1e-5,
    )


def test_causal_probe_scores_equal_score_text_and_probabilities_are_their_softmax(gpt):
    model, tokenizer = gpt.model, gpt.tokenizer
    candidates = ["speak", "die", "all"]
    ranked = probe(model, tokenizer, "Speak, ___.", candidates)
    start = tokenizer.document_start_id
    expected = {
        c: score_text(model, tokenizer.encode(f"Speak, {c}."), start_id=start).logprob for c in candidates
    }
    assert {c.text: c.logprob for c in ranked} == pytest.approx(expected, abs=1e-6)
    assert [c.logprob for c in ranked] == sorted(expected.values(), reverse=True)
    softmax = torch.softmax(torch.tensor(list(expected.values()), dtype=torch.float64), 0).tolist()
    assert {c.text: c.prob for c in ranked} == pytest.approx(dict(zip(expected, softmax)), abs=1e-9)


@pytest.mark.parametrize(
    ("text", "candidates", "message"),
    [
        ("no blank here", ["a", "b"], "has no ___"),
        ("two ___ ___", ["a", "b"], "more than one ___"),
        ("one ___", ["a"], "at least 2"),
        ("one ___", ["a", " a "], "at least 2"),
        ("speak " * 40 + "___", ["a", "b"], "longer than the model's context"),
    ],
)
def test_probe_refuses(bert, text, candidates, message):
    with pytest.raises(UserInputError, match=message):
        probe(bert.model, bert.tokenizer, text, candidates)


def test_fill_mask_refuses_a_text_without_mask_and_one_longer_than_the_context(bert):
    with pytest.raises(UserInputError, match=r"no \[MASK\]"):
        fill_mask(bert.model, bert.tokenizer, "speak speak")
    with pytest.raises(UserInputError, match="longer than the model's context of 32"):
        fill_mask(bert.model, bert.tokenizer, "speak " * 30 + "[MASK]")
