"""The model protocol (models/protocol.py): every family meets it, its numbers are the hand-counted
ones, and no module above ``models/`` asks which family it holds."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import lmforge
from lmforge.models.ngram import NGramConfig, NGramLM
from lmforge.models.protocol import LanguageModel, LMOutput, NeuralLanguageModel, StreamScorer
from lmforge.models.registry import FAMILIES, PRESETS, build_model, model_class, preset_config

# encoder-decoders read a source and a target: their protocol tests live in their own files
NEURAL = [family for family in FAMILIES if family != "ngram" and model_class(family).lm_kind != "seq2seq"]


def on_meta(preset: str, **overrides) -> torch.nn.Module:
    """A preset's model without memory behind its weights (gpt2-xl has 1.5B): shapes only."""
    family, config = preset_config(preset, **overrides)
    with torch.device("meta"):
        return build_model(family, {**config, "vocab_size": 67})


def tiny_ngram() -> NGramLM:
    # the stream 1 2 1 2 <eos>: unigrams {0, 1, 2}; bigrams (<s> 1) (1 2) (2 1) (2 <eos>)
    return NGramLM.fit([[1, 2, 1, 2]], NGramConfig(order=2, eos_id=0, vocab_size=3))


@pytest.mark.parametrize("family", NEURAL)
def test_every_neural_family_meets_the_protocol_and_returns_lm_output(family):
    torch.manual_seed(0)
    shape = {"n_head": 2} if family in ("gpt", "bert", "seq2seq") else {"hidden_size": 8}
    model = build_model(family, {"vocab_size": 11, "n_embd": 8, "block_size": 8, **shape})
    assert isinstance(model, LanguageModel) and isinstance(model, NeuralLanguageModel)
    assert not isinstance(model, StreamScorer)
    assert model.family == family and model_class(family) is type(model)
    assert model.config.to_dict()["vocab_size"] == 11
    ids = torch.randint(0, 11, (2, 5))
    out = model(ids, labels=ids)
    assert type(out) is LMOutput and out.logits.shape == (2, 5, 11) and out.loss.shape == ()
    assert model(ids, last_logits_only=True).logits.shape == (2, 1, 11)


def test_the_ngram_model_meets_the_protocol_as_a_stream_scorer():
    lm = tiny_ngram()
    assert isinstance(lm, LanguageModel) and isinstance(lm, StreamScorer)
    assert not isinstance(lm, NeuralLanguageModel)  # no forward pass
    assert model_class("ngram") is NGramLM
    assert lm.describe() == "2-gram, modified-kn"
    assert lm.num_parameters() == lm.num_parameters(exclude_embeddings=True) == 3 + 4
    assert lm.scores_whole_stream and lm.context_limit is None and lm.decoding == "counts"
    with pytest.raises(ValueError, match="counted from data"):
        build_model("ngram", {"order": 2})


DESCRIPTIONS = {
    "gpt-nano": "4 layers x 128 wide, context 64",
    "gpt-mini": "6 layers x 192 wide, context 256",
    "gpt2": "12 layers x 768 wide, context 1024",
    "gpt2-medium": "24 layers x 1024 wide, context 1024",
    "gpt2-large": "36 layers x 1280 wide, context 1024",
    "gpt2-xl": "48 layers x 1600 wide, context 1024",
    "gpt3-small": "12 layers x 768 wide, context 2048",
    "gpt3-medium": "24 layers x 1024 wide, context 2048",
    "gpt3-large": "24 layers x 1536 wide, context 2048",
    "gpt3-xl": "24 layers x 2048 wide, context 2048",
    "gpt3-2.7b": "32 layers x 2560 wide, context 2048",
    "gpt3-6.7b": "32 layers x 4096 wide, context 2048",
    "gpt3-13b": "40 layers x 5120 wide, context 2048",
    "gpt3-175b": "96 layers x 12288 wide, context 2048",
    "llama-nano": "4 layers x 128 wide, context 64",
    "llama-mini": "6 layers x 192 wide, context 256",
    "llama3.2-1b": "16 layers x 2048 wide, context 131072",
    "llama3-8b": "32 layers x 4096 wide, context 8192",
    "qwen2-0.5b": "24 layers x 896 wide, context 32768",
    "mistral-7b": "32 layers x 4096 wide, context 32768",
    "bert-nano": "encoder, 2 layers x 128 wide, context 128",
    "bert-mini": "encoder, 6 layers x 384 wide, context 512",
    "bert-base": "encoder, 12 layers x 768 wide, context 512",
    "seq2seq-nano": "encoder-decoder, 2+2 layers x 128 wide, context 64",
    "seq2seq-small": "encoder-decoder, 4+4 layers x 256 wide, context 256",
    "bart-base": "encoder-decoder, 6+6 layers x 768 wide, context 1024",
    "marian-base": "encoder-decoder, 6+6 layers x 512 wide, context 512",
    "window": "(the previous 8 tokens x 32-dim embeddings -> 256 tanh units + direct connections; "
    "trained on windows of 64)",
    "rnn": "(Elman RNN, tanh, 1 layer x 256, 64-dim embeddings; truncated BPTT over windows of 64)",
    "lstm": "(LSTM, 1 layer x 512, 128-dim embeddings; truncated BPTT over windows of 64)",
    "gru": "(GRU, 1 layer x 256, 64-dim embeddings; truncated BPTT over windows of 64)",
    "rnn-attn": "(GRU bidirectional encoder-decoder, dot attention, 1 layer x 128, 64-dim embeddings)",
    "rnn-attn-additive": "(GRU bidirectional encoder-decoder, additive attention, 1 layer x 128, "
    "64-dim embeddings)",
    "rnn-seq2seq": "(GRU bidirectional encoder-decoder, no attention, 1 layer x 128, 64-dim embeddings)",
}


def test_every_preset_has_a_hand_written_description():
    assert set(DESCRIPTIONS) == set(PRESETS)


@pytest.mark.parametrize("preset", DESCRIPTIONS)
def test_describe_says_the_presets_shape(preset):
    assert on_meta(preset).describe() == DESCRIPTIONS[preset]


@pytest.mark.parametrize(
    "preset,overrides,expected",
    [
        ("window", {"direct": False, "context": 3}, "(the previous 3 tokens x 32-dim embeddings -> 256 tanh units; "
         "trained on windows of 64)"),
        ("rnn", {"n_embd": 32, "hidden_size": 32, "n_layer": 2, "activation": "relu", "block_size": 16},
         "(Elman RNN, relu, 2 layers x 32, 32-dim embeddings, tied; truncated BPTT over windows of 16)"),
        ("gru", {"n_layer": 3}, "(GRU, 3 layers x 256, 64-dim embeddings; truncated BPTT over windows of 64)"),
    ],
)  # fmt: skip
def test_describe_follows_the_settings(preset, overrides, expected):
    assert on_meta(preset, **overrides).describe() == expected


@pytest.mark.parametrize(
    "family,config,total,without_embeddings",
    [
        # wte 11*4 + wpe 8*4 + block (ln 8, qkv 4*12+12, proj 4*4+4, ln 8, fc 4*16+16, proj 16*4+4)
        # + ln_f 8; the head is the token table itself
        ("gpt", {"pos_encoding": "learned"}, 44 + 32 + 8 + 60 + 20 + 8 + 80 + 68 + 8, 252),
        ("gpt", {"pos_encoding": "learned", "tie_embeddings": False}, 328 + 44, 252),
        ("gpt", {"pos_encoding": "rope"}, 328 - 32, 252),  # rotary positions learn nothing
        # C 6*3, H 6*5 + 5, U 5*6 + 6, W 6*6 (n = 2 tokens x m = 3 wide: 6 features)
        ("window", {"vocab_size": 6, "context": 2, "n_embd": 3, "hidden_size": 5}, 18 + 35 + 36 + 36, 107),
        # embedding 7*3, nn.RNN 3*3 + 3*3 + 3 + 3, head bias 7 (its weight is the embedding: E == H)
        ("rnn", {"vocab_size": 7, "n_embd": 3, "hidden_size": 3}, 21 + 24 + 7, 31),
        # embedding 7*2, nn.LSTM 4 gates x (3*2 + 3*3 + 3 + 3), head 3*7 + 7
        ("lstm", {"vocab_size": 7, "n_embd": 2, "hidden_size": 3}, 14 + 84 + 28, 126 - 14 - 21),
        ("gru", {"vocab_size": 7, "n_embd": 2, "hidden_size": 3}, 14 + 63 + 28, 105 - 14 - 21),
    ],
)
def test_num_parameters_equals_a_hand_count(family, config, total, without_embeddings):
    if family == "gpt":
        shape = {"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 4, "mlp_hidden": 16}
        config = {**shape, "bias": True, "norm": "layernorm", "mlp": "gelu", **config}
    model = build_model(family, config)
    assert model.num_parameters() == total
    assert model.num_parameters(exclude_embeddings=True) == without_embeddings


# Table 2.1 of Brown et al. 2020: (layers, width, heads, head size, parameters as published)
GPT3_TABLE = {
    "gpt3-small": (12, 768, 12, 64, 125e6),
    "gpt3-medium": (24, 1024, 16, 64, 350e6),
    "gpt3-large": (24, 1536, 16, 96, 760e6),
    "gpt3-xl": (24, 2048, 24, 128, 1.3e9),  # 24 x 128 = 3072 != 2048: read as 16 heads of 128
    "gpt3-2.7b": (32, 2560, 32, 80, 2.7e9),
    "gpt3-6.7b": (32, 4096, 32, 128, 6.7e9),
    "gpt3-13b": (40, 5140, 40, 128, 13e9),  # 5140 != 40 x 128: read as width 5120
    "gpt3-175b": (96, 12288, 96, 128, 175e9),
}


def gpt2_architecture_count(layers: int, width: int, context: int = 2048, vocab: int = 50257) -> int:
    """Per block: two LayerNorms (4C), qkv (3C^2 + 3C), attention out (C^2 + C), MLP (8C^2 + 5C);
    then token and position tables and the final LayerNorm; the head is the token table (tied)."""
    return layers * (12 * width**2 + 13 * width) + vocab * width + context * width + 2 * width


@pytest.mark.parametrize("preset", GPT3_TABLE)
def test_gpt3_presets_count_within_3_percent_of_table_2_1(preset):
    layers, width, heads, head_size, published = GPT3_TABLE[preset]
    family, config = preset_config(preset)
    with torch.device("meta"):  # 175B parameters: shapes only, no memory
        model = build_model(family, config)  # the preset's own vocabulary (GPT-2's 50257)
    assert family == "gpt" and config["block_size"] == 2048 and model.config.vocab_size == 50257
    assert config["n_layer"] == layers and model.config.n_embd // model.config.n_head == head_size
    assert model.lm_head.weight is model.wte.weight and model.config.pos_encoding == "learned"
    counted = model.num_parameters()
    assert counted == gpt2_architecture_count(layers, model.config.n_embd)
    assert abs(counted - published) / published < 0.03
    if preset not in ("gpt3-xl", "gpt3-13b"):
        assert (model.config.n_embd, model.config.n_head) == (width, heads)


def test_the_inconsistent_gpt3_rows_are_read_by_their_counts():
    """XL: 24 heads x 128 = 3072 cannot be its width, 2048 (1.3B) can, as 16 heads of 128. 13B: the
    width 5120 = 40 x 128 gives Table D.1's 12,850M; the listed 5140 would give 12.95B and cannot
    split into 40 heads."""
    xl = preset_config("gpt3-xl")[1]
    assert (xl["n_embd"], xl["n_head"]) == (2048, 16)
    assert abs(gpt2_architecture_count(24, 3072) - 1.3e9) / 1.3e9 > 0.5  # the other reading is far off
    big = preset_config("gpt3-13b")[1]
    assert (big["n_embd"], big["n_head"]) == (5120, 40)
    assert round(gpt2_architecture_count(40, 5120) / 1e7) == 1285  # Table D.1: 12,850M
    assert round(gpt2_architecture_count(40, 5140) / 1e7) == 1295


def test_tied_weights_are_counted_once():
    model = build_model("rnn", {"vocab_size": 7, "n_embd": 3, "hidden_size": 3})
    assert model.head.weight is model.embedding.weight
    assert model.num_parameters() == sum(p.numel() for p in model.state_dict().values()) - 21


@pytest.mark.parametrize("preset", PRESETS)
def test_context_limit_state_and_decoding(preset):
    model = on_meta(preset)
    transformer = PRESETS[preset][0] in ("gpt", "bert", "seq2seq")
    assert model.context_limit == (PRESETS[preset][1]["block_size"] if transformer else None)
    assert model.has_attention_maps is transformer
    assert model.carries_state is (preset in ("rnn", "lstm", "gru"))
    seq2seq = {"seq2seq": "encoder_decoder", "rnn_seq2seq": "encoder_decoder"}
    expected = {"gpt": "kv_cache", "window": "window", "bert": "none", **seq2seq}.get(
        PRESETS[preset][0], "recurrent_state"
    )
    assert model.decoding == expected and not model.scores_whole_stream
    kind = {"bert": "masked", "seq2seq": "seq2seq", "rnn_seq2seq": "seq2seq"}.get(
        PRESETS[preset][0], "causal"
    )
    assert model.lm_kind == kind


def test_ngram_scores_through_the_protocol_as_its_own_logprobs():
    from lmforge.inference import score_text, stream_loss

    lm = tiny_ngram()
    ids = [1, 2, 1, 0, 2]
    scores = score_text(lm, ids, start_id=0)
    np.testing.assert_allclose(scores.logprobs, lm.logprobs(ids))
    loss, count = stream_loss(lm, np.array(ids), block_size=None)
    assert count == 4 and loss == pytest.approx(-lm.logprobs(ids)[1:].mean())


# --- nothing above models/ switches on a family --------------------------------------------------

SOURCE = Path(lmforge.__file__).parent
FAMILY_NAMES = {*FAMILIES, "recurrent"}
FAMILY_CLASSES = {"GPT", "BERT", "FixedWindowLM", "RecurrentLM", "ElmanRNN", "LSTMLM", "GRULM", "NGramLM"}
# Files that still name a family today, each for a reason:
ALLOWED = {
    "interop/",  # GPT-2 conversion is GPT-specific by definition
}


def _names_family(node: ast.AST) -> bool:
    """``x.family``, ``family``, ``x["family"]`` or ``getattr(x, "family")``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "family"
    if isinstance(node, ast.Name):
        return node.id == "family"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "family"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
        return (
            len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "family"
        )
    return False


def _constants(operands: list[ast.AST]) -> list[object]:
    """The constants among ``operands``, and inside the tuples, lists and sets among them."""
    values = []
    for o in operands:
        items = o.elts if isinstance(o, (ast.Tuple, ast.List, ast.Set)) else [o]
        values += [item.value for item in items if isinstance(item, ast.Constant)]
    return values


# "seq2seq" names a family and also a model's lm_kind and a dataset's task: comparing those is no switch
NOT_FAMILIES = {"lm_kind", "task"}


def _names_no_family(node: ast.AST) -> bool:
    name = getattr(node, "id", getattr(node, "attr", None))
    return name in NOT_FAMILIES


def family_switches(source: str) -> list[str]:
    """Each place ``source`` tests a model family by name or class, as ``line: code``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        why = None
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_names_family(o) for o in operands):
                why = "compares a family"
            elif FAMILY_NAMES.intersection(_constants(operands)) and not any(map(_names_no_family, operands)):
                why = "compares with a family name"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
                classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
                names = {getattr(c, "id", getattr(c, "attr", None)) for c in classes}
                if names & FAMILY_CLASSES:
                    why = "tests a family's class"
        elif isinstance(node, ast.Subscript) and _names_family(node.slice):
            why = "looks a family up"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if node.args and _names_family(node.args[0]):
                why = "looks a family up"
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if len(FAMILY_NAMES.intersection(keys)) >= 2:
                why = "maps family names"
        if why:
            found.append(f"{node.lineno}: {why}: {ast.unparse(node)[:80]}")
    return found


@pytest.mark.parametrize(
    "code",
    [
        'if model.family == "gpt":\n    pass',
        'ok = config["family"] != "ngram"',
        'if kind in ("rnn", "lstm"):\n    pass',
        "ok = isinstance(model, (GPT, torch.Tensor))",
        "ok = isinstance(model, gpt.GPT)",
        "wrapper = STEP_MODELS[model.family]",
        'wrapper = STEP_MODELS.get(getattr(model, "family", None))',
        'STEP = {"gpt": 1, "window": 2}',
    ],
)
def test_the_detector_finds_a_family_switch(code):
    assert family_switches(code)


def test_the_detector_passes_family_neutral_code():
    code = (
        'print(f"a {model.family} model")\n'
        'if model.decoding == "kv_cache" and not model.has_attention_maps:\n    pass\n'
        "ok = isinstance(model, nn.Module)\n"
        'state = {"window": 3, "step": 1}\n'
        'if model.lm_kind == "seq2seq" or task == "seq2seq":\n    pass\n'
        'cls = model_class(config["family"])\n'
    )
    assert family_switches(code) == []


def test_no_module_outside_models_switches_on_a_family():
    offenders = {}
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith("models/") or any(relative.startswith(a) for a in ALLOWED):
            continue
        found = family_switches(path.read_text(encoding="utf-8"))
        if found:
            offenders[relative] = found
    assert offenders == {}, "ask the model protocol (models/protocol.py) instead:\n" + "\n".join(
        f"{name}:{line}" for name, lines in offenders.items() for line in lines
    )
