"""``lmforge convert`` against Hugging Face itself: GPT2LMHeadModel logits and GPT2TokenizerFast ids."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.cli import main
from lmforge.run import Run
from tests.tiny_run import TEXT, make_run

transformers = pytest.importorskip("transformers")

SAMPLES = [
    "Before we proceed any further, hear me speak.",
    "  two spaces, a tab\tand\nnew lines\n\n",
    "Unseen words: zebra, quixotic, naïve café ✓ 東京",
    "one document<|endoftext|>and the next",
]
VOCAB = 300  # 256 bytes + merges; "<|endoftext|>" is appended last, as in GPT-2 (id 50256 there)


@pytest.fixture(scope="module")
def gpt2_tokenizer_files(tmp_path_factory):
    """vocab.json + merges.txt in GPT-2's format, from a byte-level BPE trained on TEXT."""
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers

    directory = tmp_path_factory.mktemp("gpt2-vocab")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([TEXT], trainer)
    backend.model.save(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text())
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    return directory


def random_hf_gpt2(vocab_size: int, seed: int = 0, **overrides):
    """A GPT2LMHeadModel with every weight random (biases and LayerNorm included) and odd settings."""
    torch.manual_seed(seed)
    settings = {
        "n_positions": 32,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_inner": 48,  # not 4 * n_embd: checks n_inner -> mlp_hidden
        "layer_norm_epsilon": 1e-4,  # not the default: checks the epsilon is carried over
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": vocab_size - 1,
        "eos_token_id": vocab_size - 1,
        **overrides,
    }
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab_size, **settings))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, gpt2_tokenizer_files):
    """save_pretrained of a random GPT-2 and of GPT2TokenizerFast: config, safetensors, tokenizer.json."""
    directory = tmp_path_factory.mktemp("hf") / "gpt2"
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_files)
    random_hf_gpt2(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def hf_model(directory):
    return transformers.GPT2LMHeadModel.from_pretrained(directory).eval()


def some_ids(vocab_size: int, length: int = 32):
    return torch.randint(0, vocab_size, (2, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def assert_same_logits(ours, theirs, vocab_size: int) -> None:
    ids = some_ids(vocab_size, ours.config.block_size)
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-4)


def convert(capsys, *args) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- Hugging Face -> lmforge ----------------------------------------------------------------


def test_from_hf_safetensors_gives_hf_logits(hf_dir, tmp_path, capsys):
    code, out, _ = convert(capsys, "--from-hf", hf_dir, "--out", tmp_path / "run")
    assert code == 0 and "converted" in out and "tokenizer.json" in out
    run = Run.open(tmp_path / "run")
    config = run.read_config()["model"]
    assert config["mlp_hidden"] == 48 and config["norm_eps"] == 1e-4 and config["pos_encoding"] == "learned"
    theirs = hf_model(hf_dir)
    assert_same_logits(run.load_model(), theirs, theirs.config.vocab_size)


def test_from_hf_pytorch_bin_with_old_names_gives_hf_logits(hf_dir, tmp_path, capsys):
    """The original GPT-2 release: pytorch_model.bin, no "transformer." prefix, mask buffers inside."""
    theirs = hf_model(hf_dir)
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(hf_dir / "config.json", old / "config.json")
    state = {
        k.removeprefix("transformer."): v for k, v in theirs.state_dict().items() if k != "lm_head.weight"
    }
    for layer in range(theirs.config.n_layer):
        state[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
        state[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, old / "pytorch_model.bin")
    code, _, err = convert(capsys, "--from-hf", old, "--out", tmp_path / "run")
    assert code == 0
    assert "no tokenizer" in err
    assert_same_logits(Run.open(tmp_path / "run").load_model(), theirs, theirs.config.vocab_size)


def test_from_hf_sharded_safetensors_gives_hf_logits(hf_dir, tmp_path, capsys):
    sharded = tmp_path / "sharded"
    shutil.copytree(hf_dir, sharded)
    tensors = load_file(sharded / "model.safetensors")
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for n, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), 1):
        shard = f"model-0000{n}-of-00002.safetensors"
        save_file({name: tensors[name] for name in part}, sharded / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert convert(capsys, "--from-hf", sharded, "--out", tmp_path / "run")[0] == 0
    theirs = hf_model(hf_dir)
    assert_same_logits(Run.open(tmp_path / "run").load_model(), theirs, theirs.config.vocab_size)


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.json + merges.txt"])
def test_imported_tokenizer_gives_gpt2_tokenizer_fast_ids(
    files, hf_dir, gpt2_tokenizer_files, tmp_path, capsys
):
    source = hf_dir
    if files != "tokenizer.json":  # a weights-only copy with the original release's two files
        source = tmp_path / "hf"
        shutil.copytree(hf_dir, source)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (source / name).unlink()
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(gpt2_tokenizer_files / name, source / name)
    code, out, _ = convert(capsys, "--from-hf", source, "--out", tmp_path / "run")
    assert code == 0 and files in out
    ours = Run.open(tmp_path / "run").load_tokenizer()
    theirs = transformers.GPT2TokenizerFast.from_pretrained(source)
    for text in SAMPLES:
        assert ours.encode(text) == theirs(text)["input_ids"], text
        assert ours.decode(ours.encode(text)) == text
    end_of_text = theirs.convert_tokens_to_ids("<|endoftext|>")
    assert ours.kind == "bpe" and ours.bos_id == ours.eos_id == end_of_text == VOCAB


@pytest.mark.parametrize(
    "variant, expected",
    [
        ({"tie_word_embeddings": False}, {"tie_embeddings": False, "mlp": "gelu"}),
        ({"activation_function": "gelu"}, {"mlp": "gelu_exact"}),  # Hugging Face's "gelu" is the erf form
        ({"activation_function": "gelu_pytorch_tanh"}, {"mlp": "gelu"}),
    ],
    ids=["untied", "exact-gelu", "pytorch-tanh-gelu"],
)
def test_hf_variants_convert_both_ways(variant, expected, tmp_path, capsys):
    theirs = random_hf_gpt2(VOCAB + 1, **variant)
    theirs.save_pretrained(tmp_path / "hf")
    assert convert(capsys, "--from-hf", tmp_path / "hf", "--out", tmp_path / "run")[0] == 0
    ours = Run.open(tmp_path / "run").load_model()
    assert {key: getattr(ours.config, key) for key in expected} == expected
    assert_same_logits(ours, theirs, VOCAB + 1)
    assert convert(capsys, "--to-hf", tmp_path / "run", "--out", tmp_path / "back")[0] == 0
    back = hf_model(tmp_path / "back")
    assert back.config.tie_word_embeddings == theirs.config.tie_word_embeddings
    assert_same_logits(ours, back, VOCAB + 1)


# --- lmforge -> Hugging Face ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_to_hf_gives_lmforge_logits_and_tokenizer_ids(kind, tmp_path, capsys):
    run = make_run(tmp_path / "run", kind=kind, vocab_size=320 if kind == "bpe" else None)
    code, out, _ = convert(capsys, "--to-hf", run.path, "--out", tmp_path / "hf")
    assert code == 0 and "GPT2LMHeadModel.from_pretrained" in out
    ours = run.load_model()
    theirs = hf_model(tmp_path / "hf")
    assert_same_logits(ours, theirs, ours.config.vocab_size)
    tokenizer = run.load_tokenizer()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in SAMPLES[:2]:
        assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text)
    assert theirs.config.eos_token_id == tokenizer.eos_id == hf_tokenizer.eos_token_id
    if kind == "bpe":
        assert type(hf_tokenizer).__name__.startswith("GPT2Tokenizer")


def test_round_trip_hf_lmforge_hf_keeps_every_tensor(hf_dir, tmp_path, capsys):
    assert convert(capsys, "--from-hf", hf_dir, "--out", tmp_path / "run")[0] == 0
    assert convert(capsys, "--to-hf", tmp_path / "run", "--out", tmp_path / "back", "--json")[0] == 0
    before, after = (
        load_file(hf_dir / "model.safetensors"),
        load_file(tmp_path / "back" / "model.safetensors"),
    )
    assert set(before) == set(after)
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    for name in (
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "lmforge_tokenizer.json",
    ):
        assert (tmp_path / "back" / name).is_file()


@pytest.mark.parametrize("kind", ["char", "word"])
def test_round_trip_lmforge_hf_lmforge_keeps_weights_and_any_tokenizer(kind, tmp_path, capsys):
    run = make_run(tmp_path / "run", kind=kind)
    assert convert(capsys, "--to-hf", run.path, "--out", tmp_path / "hf")[0] == 0
    code, out, _ = convert(capsys, "--from-hf", tmp_path / "hf", "--out", tmp_path / "back")
    assert code == 0 and f"tokenizer: {kind}, from tokenizer.json + lmforge_tokenizer.json" in out
    back = Run.open(tmp_path / "back")
    before, after = run.load_model().state_dict(), back.load_model().state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert back.load_tokenizer().encode(SAMPLES[0]) == run.load_tokenizer().encode(SAMPLES[0])


@pytest.mark.parametrize(
    "setting, value",
    [
        ("pos_encoding", "rope"),
        ("pos_encoding", "sinusoidal"),
        ("mlp", "swiglu"),
        ("norm", "rmsnorm"),
        ("bias", False),
    ],
)
def test_to_hf_refuses_what_gpt2_cannot_express(setting, value, tmp_path, capsys):
    run = make_run(tmp_path / "run", **{setting: value})
    code, out, err = convert(capsys, "--to-hf", run.path, "--out", tmp_path / "hf")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"{setting}={value!r}" in err
    assert not (tmp_path / "hf").exists()


# --- bad input: one line, exit 2, nothing written -------------------------------------------


def _other_model_type(directory):
    # "llama" was the example here until Llama-family checkpoints converted (interop/llama.py)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))


def _corrupt_safetensors(directory):
    (directory / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")


def _corrupt_bin(directory):
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated zip")


def _no_weights(directory):
    (directory / "model.safetensors").unlink()


def _no_config(directory):
    (directory / "config.json").unlink()


def _corrupt_tokenizer(directory):
    (directory / "tokenizer.json").write_text("{not json")


def _relu(directory):
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_other_model_type, "'gpt_neox', not 'gpt2'"),
        (_no_weights, "has no weights"),
        (_no_config, "has no config.json"),
        (_corrupt_safetensors, "not a readable safetensors file"),
        (_corrupt_bin, "cannot be loaded as PyTorch weights"),
        (_relu, "activation_function = 'relu'"),
        (_corrupt_tokenizer, "not a valid Hugging Face tokenizer file"),
    ],
    ids=lambda x: getattr(x, "__name__", "")[1:] if callable(x) else "",
)
def test_from_hf_bad_input_is_one_line_and_leaves_nothing(damage, message, hf_dir, tmp_path, capsys):
    source = tmp_path / "hf"
    shutil.copytree(hf_dir, source)
    damage(source)
    code, out, err = convert(capsys, "--from-hf", source, "--out", tmp_path / "run")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no run, no temporary directory


def test_missing_directories_and_existing_outputs_are_refused(hf_dir, tmp_path, capsys):
    code, _, err = convert(capsys, "--from-hf", tmp_path / "absent", "--out", tmp_path / "run")
    assert code == 2 and "does not exist" in err
    code, _, err = convert(capsys, "--to-hf", tmp_path / "absent", "--out", tmp_path / "hf")
    assert code == 2 and "does not exist" in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):  # someone else's files: never, --overwrite or not
        code, _, err = convert(capsys, "--from-hf", hf_dir, "--out", tmp_path / "run", *extra)
        assert code == 2 and "not a run (keep.txt)" in err
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["keep.txt"]
    (tmp_path / "run" / "keep.txt").unlink()
    assert convert(capsys, "--from-hf", hf_dir, "--out", tmp_path / "run")[0] == 0
    code, _, err = convert(capsys, "--from-hf", hf_dir, "--out", tmp_path / "run")
    assert code == 2 and "--overwrite" in err
    assert convert(capsys, "--from-hf", hf_dir, "--out", tmp_path / "run", "--overwrite")[0] == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    code, _, err = convert(capsys, "--to-hf", tmp_path / "run", "--out", tmp_path / "run", "--overwrite")
    assert code == 2 and "somewhere else" in err
    code, _, err = convert(capsys, "--out", tmp_path / "x")
    assert code == 2 and "exactly one of --from-hf" in err


def test_run_without_tokenizer_is_refused_by_score_with_the_reason(hf_dir, tmp_path, capsys):
    source = tmp_path / "hf"
    shutil.copytree(hf_dir, source)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (source / name).unlink()
    code, out, err = convert(capsys, "--from-hf", source, "--out", tmp_path / "run", "--json")
    assert code == 0 and "warning:" in err and "no tokenizer" in err
    assert json.loads(out)["tokenizer"] is None
    assert not (tmp_path / "run" / "tokenizer").exists()
    code = main(["score", "--checkpoint", str(tmp_path / "run"), "--text", "hello"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has no tokenizer" in err and "tokenizer.json" in err


def test_resuming_a_converted_run_is_refused_with_the_reason(hf_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert convert(capsys, "--from-hf", str(hf_dir), "--out", str(out))[0] == 0
    code = main(["pretrain", "--resume", str(out), "--max-steps", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no training state to resume" in err and "\n" not in err
