"""``lmforge convert`` against transformers' MarianMTModel: sinusoidal positions, scaled embeddings,
SiLU, shared and separate vocabularies; logits, greedy and beam ids, a bit-exact round trip, and the
SentencePiece tokenizer it cannot read said in one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.generate import GenerationConfig, generate
from lmforge.generate.seq2seq_step import EncoderDecoderStepModel, pad_sources
from lmforge.run import Run

transformers = pytest.importorskip("transformers")

EOS = 0  # Marian's </s>; the pad id is the last one and also the decoder's start


def random_marian(vocab_size: int = 120, seed: int = 0, **overrides):
    """A small MarianMTModel, every weight random, end-of-text raised until some rows end early."""
    torch.manual_seed(seed)
    settings = {
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 48,
        "decoder_ffn_dim": 48,
        "max_position_embeddings": 40,
        "dropout": 0.0,
        "activation_function": "swish",
        "scale_embedding": True,
        "eos_token_id": EOS,
        "pad_token_id": vocab_size - 1,
        "decoder_start_token_id": vocab_size - 1,
        **overrides,
    }
    model = transformers.MarianMTModel(transformers.MarianConfig(vocab_size=vocab_size, **settings))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_positions" not in name:  # Marian's frozen sinusoids stay as they are
                param.add_(torch.randn_like(param) * (0.5 if param.dim() == 2 else 0.1))
        for table in {
            id(t): t for t in (model.model.encoder.embed_tokens, model.model.decoder.embed_tokens)
        }.values():
            table.weight.normal_(0.0, 0.1)
        model.final_logits_bias.normal_(0.0, 0.5)
    return model.eval()


def hf_generate(model, ids, mask, **settings) -> list[list[int]]:
    start = model.config.decoder_start_token_id
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=12,
        min_length=0,
        no_repeat_ngram_size=0,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        bad_words_ids=None,
        eos_token_id=EOS,
        pad_token_id=start,
        decoder_start_token_id=start,
        **settings,
    )
    return [row[: row.index(EOS)] if EOS in row else row for row in out[:, 1:].tolist()]


def sources(vocab_size: int):
    generator = torch.Generator().manual_seed(5)
    rows = [
        torch.randint(1, vocab_size - 1, (n,), generator=generator).tolist() for n in (7, 12, 4, 9, 5, 10)
    ]
    return pad_sources(rows, vocab_size - 1)


def with_end_of_text_tuned(model):
    """Raise end-of-text's bias until both greedy and beam search end some rows early and not all at once."""
    ids, mask = sources(model.config.vocab_size)
    for _ in range(20):
        rows = hf_generate(model, ids, mask) + hf_generate(model, ids, mask, num_beams=4, early_stopping=True)
        if any(len(row) < 12 for row in rows) and sum(len(row) > 1 for row in rows) > 4:
            return model
        with torch.no_grad():
            model.final_logits_bias[0, EOS] += 0.5
    raise AssertionError("no bias gives early ends")


VARIANTS = {
    "shared": {},
    "separate": {"share_encoder_decoder_embeddings": False, "decoder_vocab_size": 120, "vocab_size": 150},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def converted(request, tmp_path_factory):
    settings = dict(VARIANTS[request.param])
    vocab = settings.pop("vocab_size", 120)
    if "decoder_vocab_size" in settings:  # the pad / start id lives in the target vocabulary
        settings |= {"pad_token_id": 119, "decoder_start_token_id": 119}
    model = with_end_of_text_tuned(random_marian(vocab, **settings))
    root = tmp_path_factory.mktemp(f"marian-{request.param}")
    model.save_pretrained(root / "hf")
    for name in ("source.spm", "target.spm"):  # what an OPUS-MT directory holds (contents unread)
        (root / "hf" / name).write_bytes(b"\x00sentencepiece")
    assert main(["convert", "--from-hf", str(root / "hf"), "--out", str(root / "run")]) == 0
    return request.param, root, model


def test_from_hf_gives_marian_logits(converted):
    variant, root, theirs = converted
    ours = Run.open(root / "run").load_model()
    config = ours.config
    assert (config.pos_encoding, config.scale_embedding, config.mlp) == ("sinusoidal", True, "silu")
    assert config.shared_vocab is (variant == "shared") and config.decoder_start_token_id == 119
    ids, mask = sources(theirs.config.vocab_size)
    decoder_ids = torch.tensor([[119, 5, 9, 11, 4, 6]] * 6)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        torch.testing.assert_close(ours(ids, mask, decoder_ids).logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generate_gives_hf_generate_ids(strategy, converted):
    _, root, theirs = converted
    ours = Run.open(root / "run").load_model()
    ids, mask = sources(theirs.config.vocab_size)
    config = GenerationConfig(strategy=strategy, max_new_tokens=12, num_beams=4, eos_id=EOS)
    start = ours.config.decoder_start_token_id
    results = generate(EncoderDecoderStepModel(ours, ids, mask), [[start]] * 6, config)
    beam = {"num_beams": 4, "early_stopping": True, "length_penalty": 1.0} if strategy == "beam" else {}
    assert [r[0].ids for r in results] == hf_generate(theirs, ids, mask, **beam)


def test_round_trip_to_hf_is_bit_exact(converted):
    _, root, theirs = converted
    back = root / "back"
    if not back.exists():
        assert main(["convert", "--to-hf", str(root / "run"), "--out", str(back)]) == 0
    original, written = load_file(root / "hf" / "model.safetensors"), load_file(back / "model.safetensors")
    assert sorted(written) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(written[name], tensor), name
    config = json.loads((back / "config.json").read_text())
    assert config["model_type"] == "marian" and config["forced_eos_token_id"] is None
    for key in ("vocab_size", "decoder_vocab_size", "share_encoder_decoder_embeddings", "pad_token_id"):
        assert config[key] == theirs.config.to_dict()[key], key
    reloaded = transformers.MarianMTModel.from_pretrained(back).eval()
    ids, mask = sources(theirs.config.vocab_size)
    decoder_ids = torch.tensor([[119, 5, 9]] * 6)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits,
            theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits,
            atol=0,
            rtol=0,
        )


def test_the_sentencepiece_tokenizer_is_left_out_in_one_line(tmp_path, capsys):
    random_marian().save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "source.spm").write_bytes(b"")
    capsys.readouterr()
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SentencePiece" in err[0] and "model only" in err[0]
    assert not Run.open(tmp_path / "run").tokenizer_dir.exists()


@pytest.mark.parametrize("positions, dim", [(512, 512), (40, 32), (30, 7)])
def test_sinusoids_are_bit_identical_to_marians(positions, dim):
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    from lmforge.models.seq2seq import marian_sinusoids

    theirs = MarianSinusoidalPositionalEmbedding(positions, dim).create_weight()
    assert torch.equal(marian_sinusoids(positions, dim), theirs)
