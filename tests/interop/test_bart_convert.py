"""``lmforge convert`` against transformers' BartForConditionalGeneration: logits, greedy and beam
ids of ``generate``, BartTokenizerFast ids, and a bit-exact round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.generate import GenerationConfig, generate
from lmforge.generate.seq2seq_step import EncoderDecoderStepModel, pad_sources
from lmforge.run import Run
from tests.tiny_run import TEXT

transformers = pytest.importorskip("transformers")

BOS, PAD, EOS = 0, 1, 2  # BART's ids; the decoder starts from </s> (decoder_start_token_id 2)
SAMPLES = ["Before we proceed any further, hear me speak.", "  spaces\tand\nnew lines", "zebra café ✓"]


@pytest.fixture(scope="module")
def bart_tokenizer_files(tmp_path_factory):
    """vocab.json + merges.txt in BART's layout (<s> <pad> </s> <unk> first, <mask> last) from a
    byte-level BPE trained on TEXT."""
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers

    directory = tmp_path_factory.mktemp("bart-vocab")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([TEXT], trainer)
    backend.model.save(str(directory))
    trained = json.loads((directory / "vocab.json").read_text())
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token, _ in sorted(trained.items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    vocab["<mask>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    return directory


def random_bart(vocab_size: int, seed: int = 0, **overrides):
    """A small BartForConditionalGeneration with every weight random and wide enough for peaked logits."""
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
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        **overrides,
    }
    model = transformers.BartForConditionalGeneration(
        transformers.BartConfig(vocab_size=vocab_size, **settings)
    )
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * (1.0 if param.dim() == 2 else 0.1))
        model.model.shared.weight.normal_(0.0, 0.3)  # varied continuations, not one token repeated
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[0, EOS] += 4.0  # nearer the others (hf_dir raises it further)
    return model.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, bart_tokenizer_files):
    directory = tmp_path_factory.mktemp("hf") / "bart"
    tokenizer = transformers.BartTokenizerFast.from_pretrained(bart_tokenizer_files)
    assert len(tokenizer) > 250
    model = random_bart(len(tokenizer))
    _, ids, mask = batch(len(tokenizer))
    for _ in range(12):  # raise end-of-text until some rows end early and others run on, both ways
        rows = hf_generate(model, ids, mask) + hf_generate(model, ids, mask, num_beams=4, early_stopping=True)
        if any(len(row) < 12 for row in rows) and sum(len(row) > 1 for row in rows) > 4:
            break
        with torch.no_grad():
            model.final_logits_bias[0, EOS] += 0.5
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def run_dir(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "bart"
    assert main(["convert", "--from-hf", str(hf_dir), "--out", str(out)]) == 0
    return out


def hf_model(directory):
    return transformers.BartForConditionalGeneration.from_pretrained(directory).eval()


def batch(vocab_size: int):
    generator = torch.Generator().manual_seed(3)
    sources = [
        torch.randint(3, vocab_size - 1, (n,), generator=generator).tolist() for n in (7, 12, 4, 9, 5, 10)
    ]
    return sources, *pad_sources(sources, PAD)


def hf_generate(model, ids, mask, **settings) -> list[list[int]]:
    """Hugging Face's ids after the start token, cut before the first end-of-text (lmforge's form)."""
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=12,
        min_length=0,
        no_repeat_ngram_size=0,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        eos_token_id=EOS,
        pad_token_id=PAD,
        decoder_start_token_id=EOS,
        **settings,
    )
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(EOS)] if EOS in row else row)
    return rows


def test_from_hf_gives_bart_logits(hf_dir, run_dir):
    config = Run.open(run_dir).read_config()
    assert config["family"] == "seq2seq"
    model = config["model"]
    assert (model["pos_encoding"], model["position_offset"], model["layernorm_embedding"]) == (
        "learned",
        2,
        True,
    )
    assert (model["mlp"], model["decoder_start_token_id"], model["n_encoder_layer"]) == ("gelu_exact", EOS, 2)
    ours, theirs = Run.open(run_dir).load_model(), hf_model(hf_dir)
    _, ids, mask = batch(ours.config.vocab_size)
    decoder_ids = torch.tensor([[EOS, 5, 9, 11, 4, 6]] * 6)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        got = ours(ids, mask, decoder_ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generate_gives_hf_generate_ids(strategy, hf_dir, run_dir):
    ours, theirs = Run.open(run_dir).load_model(), hf_model(hf_dir)
    _, ids, mask = batch(ours.config.vocab_size)
    beams = 4 if strategy == "beam" else 1  # HF: early_stopping True, length_penalty 1, as lmforge's defaults
    config = GenerationConfig(
        strategy=strategy, max_new_tokens=12, num_beams=4, eos_id=EOS, length_penalty=1.0, early_stopping=True
    )
    results = generate(
        EncoderDecoderStepModel(ours, ids, mask), [[ours.config.decoder_start_token_id]] * 6, config
    )
    beam_settings = {"num_beams": 4, "early_stopping": True, "length_penalty": 1.0} if beams > 1 else {}
    expected = hf_generate(theirs, ids, mask, **beam_settings)
    assert [r[0].ids for r in results] == expected
    assert any(len(row) < 12 for row in expected)  # an end-of-text was reached, not only the limit
    assert any(len(row) > 1 for row in expected)


def test_imported_tokenizer_gives_bart_tokenizer_ids(hf_dir, run_dir):
    ours = Run.open(run_dir).load_tokenizer()
    theirs = transformers.AutoTokenizer.from_pretrained(hf_dir)
    for text in SAMPLES:
        assert ours.encode(text) == theirs(text)["input_ids"], text  # <s> text </s>, as BART reads a source
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (BOS, EOS, PAD)


def test_round_trip_to_hf_is_bit_exact(hf_dir, run_dir, tmp_path):
    back = tmp_path / "back"
    assert main(["convert", "--to-hf", str(run_dir), "--out", str(back)]) == 0
    original, written = load_file(hf_dir / "model.safetensors"), load_file(back / "model.safetensors")
    assert sorted(written) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(written[name], tensor), name
    config = json.loads((back / "config.json").read_text())
    assert config["model_type"] == "bart" and config["forced_eos_token_id"] is None
    assert (config["bos_token_id"], config["pad_token_id"], config["eos_token_id"]) == (BOS, PAD, EOS)
    tokenizer, original_tokenizer = (transformers.AutoTokenizer.from_pretrained(d) for d in (back, hf_dir))
    for text in SAMPLES:
        assert tokenizer(text)["input_ids"] == original_tokenizer(text)["input_ids"], text
    reloaded, theirs = hf_model(back), hf_model(hf_dir)
    _, ids, mask = batch(reloaded.config.vocab_size)
    decoder_ids = torch.tensor([[EOS, 5, 9]] * 6)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits,
            theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits,
            atol=0,
            rtol=0,
        )


def test_an_untied_relu_bart_converts_both_ways(tmp_path):
    """transformers 5 unties an untied BART's encoder and decoder tables from ``shared`` too: they
    become lmforge's source and target tables, and every tensor it reads comes back bit-exact."""
    theirs = random_bart(
        50, seed=1, tie_word_embeddings=False, activation_function="relu", scale_embedding=True
    )
    theirs.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    ours = Run.open(tmp_path / "run").load_model()
    assert (ours.config.tie_embeddings, ours.config.mlp, ours.config.scale_embedding) == (False, "relu", True)
    assert not ours.config.shared_vocab
    ids, mask = pad_sources([[5, 6, 7, 8], [9, 10]], PAD)
    decoder_ids = torch.tensor([[EOS, 11, 12]] * 2)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        torch.testing.assert_close(ours(ids, mask, decoder_ids).logits, expected, atol=1e-4, rtol=0)
    assert main(["convert", "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "back")]) == 0
    written = load_file(tmp_path / "back" / "model.safetensors")
    original = load_file(tmp_path / "hf" / "model.safetensors")
    assert sorted(written) == sorted(original)
    for name in set(original) - {"model.shared.weight"}:  # shared: unused by an untied BART
        assert torch.equal(written[name], original[name]), name
    back = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        again = back(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(again, expected, atol=0, rtol=0)


def test_unsupported_configs_are_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    random_bart(50, decoder_attention_heads=2).save_pretrained(tmp_path / "hf")
    capsys.readouterr()
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "different attention heads (4 and 2)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_pre_norm_run_is_refused_as_bart(tmp_path, capsys):
    from lmforge.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

    model = Seq2SeqTransformer(Seq2SeqConfig(vocab_size=20, block_size=8, n_encoder_layer=1, n_decoder_layer=1,
                                             n_head=2, n_embd=8, norm_first=True, pos_encoding="learned"))  # fmt: skip
    run = Run(tmp_path / "run")
    run.path.mkdir()
    run.write_config({"family": "seq2seq", "model": model.config.to_dict()})
    run.save_weights(model)
    assert main(["convert", "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported as BART" in err and "norm_first=True" in err and "position_offset=0" in err
    assert not (tmp_path / "hf").exists()
