"""Loading a run for inference (lmforge/inference.py) against the model and tokenizer used by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import UserInputError
from lmforge.inference import check_window, encode_prompt, load_for_inference, score_text, stream_loss
from lmforge.models.ngram import NGramConfig, NGramLM
from lmforge.run import Run
from tests.tiny_run import TEXT, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("inference") / "run")  # block_size 16


def test_loads_the_runs_model_and_tokenizer_in_eval_mode_on_the_device(run):
    loaded = load_for_inference(run.path, device="cpu")
    assert loaded.device == torch.device("cpu") and not loaded.model.training
    assert loaded.eos_id == loaded.tokenizer.document_separator_id == loaded.tokenizer.eos_id
    reference = run.load_model()
    for (name, mine), (_, theirs) in zip(loaded.model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(mine, theirs), name
    bf16 = load_for_inference(run.path, device="cpu", dtype="bf16").model
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("pays_off", [True, False])
def test_pack_rows_packs_where_the_race_says_so_and_keeps_the_logits(run, monkeypatch, pays_off):
    from lmforge.generate import packing
    from lmforge.generate.packing import PackedLinear, packing_available

    plain = load_for_inference(run.path, device="cpu").model
    if not packing_available(plain):
        pytest.skip("this PyTorch has no oneDNN packing")
    monkeypatch.setattr(packing, "packing_pays_off", lambda model, rows: pays_off)
    packed = load_for_inference(run.path, device="cpu", pack_rows=2).model
    assert any(isinstance(m, PackedLinear) for m in packed.modules()) == pays_off
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, plain(ids).logits, rtol=1e-4, atol=1e-4)


def test_encode_prompt_keeps_the_last_tokens_of_the_context(run):
    tokenizer = run.load_tokenizer()
    text = TEXT[:40]
    assert encode_prompt(text, tokenizer, None) == (tokenizer.encode(text), 0)
    assert encode_prompt(text, tokenizer, 16) == (tokenizer.encode(text)[-16:], 40 - 16)
    assert encode_prompt("", tokenizer, 16) == ([tokenizer.eos_id], 0)  # from nothing: a document start


def test_check_window_refuses_windows_past_the_context(run):
    model = run.load_model()
    assert check_window(model, None, None) == 16 and check_window(model, 8, 8) == 8
    with pytest.raises(UserInputError, match="larger than the model's context of 16"):
        check_window(model, 17, None)
    with pytest.raises(UserInputError, match="--stride must be between 1 and the block size 8"):
        check_window(model, 8, 9)


def test_score_text_is_the_softmax_after_the_document_start(run):
    model, tokenizer = run.load_model(), run.load_tokenizer()
    ids = tokenizer.encode("Speak, speak.")
    scores = score_text(model, ids, start_id=tokenizer.eos_id)
    with torch.no_grad():
        logits = model(torch.tensor([[tokenizer.eos_id, *ids]])).logits[0].double()
    by_hand = logits.log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)]
    assert scores.token_ids == ids
    np.testing.assert_allclose(scores.logprobs, by_hand.numpy(), rtol=1e-5)


def test_stream_loss_is_the_mean_cross_entropy_of_its_windows(run):
    model = run.load_model()
    tokens = np.asarray(run.load_tokenizer().encode(TEXT)[: 2 * 16 + 1], dtype=np.int64)
    loss, count = stream_loss(model, tokens, block_size=16, batch_size=1)
    x = torch.from_numpy(tokens)
    with torch.no_grad():  # two windows of 16 predictions, each token after the first scored once
        logits = torch.cat([model(x[i : i + 16][None]).logits[0] for i in (0, 16)])
    assert count == 32
    assert loss == pytest.approx(F.cross_entropy(logits.double(), x[1:]).item(), rel=1e-6)


def test_an_ngram_run_stays_in_numpy_on_the_cpu(run, tmp_path):
    tokenizer = run.load_tokenizer()
    config = NGramConfig(order=3, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id)
    lm = NGramLM.fit(np.asarray(tokenizer.encode(TEXT)), config)
    counted = Run.create(tmp_path / "ngram")
    counted.save_tokenizer(tokenizer)
    counted.write_config({"family": "ngram", "model": config.to_dict()})
    counted.save_ngram(lm)
    loaded = load_for_inference(counted.path, device="auto", dtype="bf16", pack_rows=4)
    assert isinstance(loaded.model, NGramLM) and loaded.device == torch.device("cpu")
    ids = tokenizer.encode("Speak")
    np.testing.assert_allclose(score_text(loaded.model, ids, start_id=None).logprobs, lm.logprobs(ids))
