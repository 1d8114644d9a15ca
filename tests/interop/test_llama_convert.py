"""``lmforge convert`` of Llama, Qwen2 and Mistral against transformers itself: logits, greedy ids,
tokenizer ids and the chat template, both ways."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lmforge.cli import main
from lmforge.generate import GenerationConfig, generate
from lmforge.run import Run
from tests.tiny_run import TEXT

transformers = pytest.importorskip("transformers")

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SAMPLES = ["Before we proceed any further, hear me speak.", "  two spaces\tand naïve café ✓", "x"]
COMMON = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
}
# each family with what sets it apart: GQA + llama3 rope scaling + an untied head; q/k/v biases +
# a tied head; a sliding window narrower than the test sequences
FAMILIES = {
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            "num_key_value_heads": 2,
            "rope_theta": 10000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            "tie_word_embeddings": False,
        },
    ),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        {"num_key_value_heads": 1, "sliding_window": 6, "tie_word_embeddings": False},
    ),
}


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """A Llama-3-style tokenizer: byte-level BPE trained on TEXT, bos added by its post-processor."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[BOS, EOS],
        show_progress=False,
    )
    backend.train_from_iterator([TEXT], trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS)
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def random_hf(family: str, vocab_size: int, seed: int = 0, **overrides):
    """A transformers model of ``family`` with every weight random, norms and biases included."""
    config_class, model_class, settings = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(vocab_size=vocab_size, **{**COMMON, **settings, **overrides})
    model = getattr(transformers, model_class)(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(torch.randn_like(param) * 0.1)
            else:
                param.normal_(0.0, 0.15)
    model.generation_config.eos_token_id = None  # greedy runs the full length on both sides
    return model.eval()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dir(request, tmp_path_factory, hf_tokenizer):
    """(family, save_pretrained of a random model and of the tokenizer, the model)."""
    directory = tmp_path_factory.mktemp(request.param) / "hf"
    model = random_hf(request.param, len(hf_tokenizer))
    model.save_pretrained(directory)
    hf_tokenizer.save_pretrained(directory)
    return request.param, directory, model


@pytest.fixture(scope="module")
def converted(family_dir, tmp_path_factory):
    family, directory, model = family_dir
    out = tmp_path_factory.mktemp(family + "-run") / "run"
    assert main(["convert", "--from-hf", str(directory), "--out", str(out)]) == 0
    return family, directory, model, Run.open(out)


def some_ids(vocab_size: int, length: int = 40) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def assert_same_logits(ours, theirs) -> None:
    ids = some_ids(theirs.config.vocab_size)
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-4)


def test_from_hf_gives_transformers_logits(converted):
    family, _, theirs, run = converted
    ours = run.load_model()
    config = ours.config
    assert (config.n_kv_head, config.norm, config.mlp) == (
        theirs.config.num_key_value_heads,
        "rmsnorm",
        "swiglu",
    )
    assert config.tie_embeddings == theirs.config.tie_word_embeddings
    assert (config.rope_scaling or {}).get("rope_type") == ("llama3" if family == "llama" else None)
    assert config.qkv_bias == (True if family == "qwen2" else None)
    assert config.sliding_window == (6 if family == "mistral" else None)
    assert_same_logits(ours, theirs)


@torch.no_grad()
def test_greedy_ids_equal_transformers_generate(converted):
    """Two prompts of different lengths, left-padded on both sides: prefill, then cached steps past
    Mistral's window."""
    _, _, theirs, run = converted
    ours = run.load_model()
    prompts = [[5, 17, 80, 33, 2, 140, 9, 61, 7], [44, 12, 250]]
    new = 14
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = theirs.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        pad_token_id=0,
    )
    expected = out[:, width:].tolist()
    got = generate(ours, prompts, GenerationConfig(strategy="greedy", max_new_tokens=new))
    assert [rows[0].ids for rows in got] == expected


def test_to_hf_round_trip_loads_in_transformers_with_equal_logits(converted, tmp_path):
    family, _, theirs, run = converted
    assert main(["convert", "--to-hf", str(run.path), "--out", str(tmp_path / "back")]) == 0
    hf = json.loads((tmp_path / "back" / "config.json").read_text())
    assert hf["model_type"] == family and hf["architectures"] == [type(theirs).__name__]
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert type(back) is type(theirs)
    assert_same_logits(run.load_model(), back)
    theirs_state, back_state = theirs.state_dict(), back.state_dict()
    assert sorted(theirs_state) == sorted(back_state)
    for name, tensor in theirs_state.items():
        torch.testing.assert_close(back_state[name], tensor, rtol=0, atol=0, msg=name)


def test_tokenizer_ids_and_chat_template_round_trip(converted, tmp_path):
    _, directory, _, run = converted
    ours, theirs = run.load_tokenizer(), transformers.AutoTokenizer.from_pretrained(directory)
    for text in SAMPLES:
        assert ours.encode(text) == theirs(text)["input_ids"], text
    assert ours.bos_id == theirs.bos_token_id and ours.eos_id == theirs.eos_token_id
    assert (run.tokenizer_dir / "chat_template.jinja").read_text() == TEMPLATE
    assert main(["convert", "--to-hf", str(run.path), "--out", str(tmp_path / "back")]) == 0
    back = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert back.chat_template == TEMPLATE
    chat = [{"role": "user", "content": "hi"}]
    assert back.apply_chat_template(chat, tokenize=False) == theirs.apply_chat_template(chat, tokenize=False)
    for text in SAMPLES:
        assert back(text)["input_ids"] == theirs(text)["input_ids"], text


def test_chat_template_from_tokenizer_config_and_eos_from_generation_config(tmp_path, hf_tokenizer, capsys):
    """Older save_pretrained: the template inside tokenizer_config.json; no eos named there, the
    generation config's (a list, as Llama 3 Instruct's) gives it."""
    directory = tmp_path / "hf"
    random_hf("llama", len(hf_tokenizer)).save_pretrained(directory)
    hf_tokenizer.save_pretrained(directory)
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("eos_token", None)
    config["chat_template"] = [
        {"name": "default", "template": TEMPLATE},
        {"name": "tool_use", "template": "x"},
    ]
    config_path.write_text(json.dumps(config))
    eos = hf_tokenizer.convert_tokens_to_ids(EOS)
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, 3]}))
    assert main(["convert", "--from-hf", str(directory), "--out", str(tmp_path / "run")]) == 0
    run = Run.open(tmp_path / "run")
    assert (run.tokenizer_dir / "chat_template.jinja").read_text() == TEMPLATE
    assert run.load_tokenizer().eos_id == eos


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gemma"}, "'gemma', not 'gpt2'"),
        ({"head_dim": 32}, "head_dim = 32"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type 'yarn'"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "'dynamic'"),
        ({"hidden_act": "gelu"}, "hidden_act = 'gelu'"),
        ({"attention_bias": True, "mlp_bias": False}, "attention_bias and mlp_bias"),
    ],
    ids=["model-type", "head-dim", "yarn", "dynamic", "activation", "mixed-bias"],
)
def test_refuses_what_lmforge_cannot_compute(change, message, tmp_path, capsys):
    directory = tmp_path / "hf"
    random_hf("llama", 300).save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config.pop("rope_parameters", None)
    config.pop("rope_scaling", None)
    config.update(change)
    (directory / "config.json").write_text(json.dumps(config))
    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["convert", "--from-hf", str(directory), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_qwen2_per_layer_sliding_window_is_refused(tmp_path, capsys):
    directory = tmp_path / "hf"
    random_hf("qwen2", 300).save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(use_sliding_window=True, sliding_window=8, max_window_layers=1)
    (directory / "config.json").write_text(json.dumps(config))
    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["convert", "--from-hf", str(directory), "--out", str(tmp_path / "run")]) == 2
    assert "use_sliding_window" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_older_checkpoint_names_and_legacy_rope_fields_convert(tmp_path):
    """4.x's config (rope_theta + rope_scaling, no rope_parameters) and a rotary inv_freq buffer
    in the weights, as older Llama checkpoints carry."""
    from safetensors.torch import load_file, save_file

    theirs = random_hf("llama", 300)
    directory = tmp_path / "hf"
    theirs.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    rope = config.pop("rope_parameters", None) or config.pop("rope_scaling")
    config["rope_theta"] = rope.pop("rope_theta", 10000.0)
    config["rope_scaling"] = rope
    (directory / "config.json").write_text(json.dumps(config))
    tensors = load_file(directory / "model.safetensors")
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    assert main(["convert", "--from-hf", str(directory), "--out", str(tmp_path / "run")]) == 0
    assert_same_logits(Run.open(tmp_path / "run").load_model(), theirs)


def test_missing_projection_is_named(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "hf"
    random_hf("mistral", 300).save_pretrained(directory)
    tensors = load_file(directory / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    assert main(["convert", "--from-hf", str(directory), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "h.1.attn.c_attn.weight" in err and "model.layers.1.self_attn.q_proj.weight" in err
    shutil.rmtree(directory)


def test_sentencepiece_style_bpe_tokenizer_converts_both_ways(tmp_path):
    """Llama 2's and Mistral's kind: a BPE over "▁"-marked words (Metaspace), not byte-level, with
    <s> added by its post-processor; ids equal transformers' after import and after export."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    backend = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    backend.train_from_iterator([TEXT], trainer)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    directory = tmp_path / "hf"
    random_hf("mistral", len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    assert main(["convert", "--from-hf", str(directory), "--out", str(tmp_path / "run")]) == 0
    ours = Run.open(tmp_path / "run").load_tokenizer()
    samples = [*SAMPLES, "First Citizen: speak, speak"]
    for text in samples:
        assert ours.encode(text) == tokenizer(text)["input_ids"], text
    assert (ours.bos_id, ours.eos_id) == (1, 2)
    assert main(["convert", "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "back")]) == 0
    back = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert not (tmp_path / "back" / "merges.txt").exists()  # not dressed up as GPT-2's byte-level files
    for text in samples:
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"], text
    ids = ours.encode("First Citizen: speak, speak")
    assert ours.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True)
