"""LoRA through peft (finetune/lora.py): the trainable count by hand, a frozen base, B = 0 at the
start, merged logits equal to unmerged ones, a merged model saved and reloaded as a plain run."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from lmforge.errors import LMForgeError, UserInputError
from lmforge.finetune.lora import LoRASettings, apply_lora, merge_lora, trainable_parameters
from lmforge.models.bert import BERT, BERTConfig
from lmforge.models.gpt import GPT, GPTConfig
from lmforge.run import Run

pytest.importorskip("peft")

C, H, L, VOCAB, T = 16, 64, 2, 50, 12  # width, MLP hidden (4 C), layers, vocabulary, length


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=L, n_head=2, n_embd=C, dropout=0.0))


def bert(num_labels: int = 0) -> BERT:
    torch.manual_seed(0)
    config = BERTConfig(
        vocab_size=VOCAB, block_size=T, n_layer=L, n_head=2, n_embd=C, dropout=0.0, num_labels=num_labels
    )
    return BERT(config)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, T), generator=generator)
    mask = torch.ones(3, T, dtype=torch.long)
    mask[0, 8:] = 0  # some padding
    return ids, mask


def logits(model, family: str) -> torch.Tensor:
    ids, mask = batch()
    with torch.no_grad():
        return model(ids).logits if family == "gpt" else model(ids, attention_mask=mask).logits


def perturb_adapters(model) -> None:
    """Noise on every lora_B (zero at init), so merging has something to fold in."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def lora_count(rank: int) -> int:
    """Per layer: c_attn C->3C, attn.c_proj C->C, mlp.c_fc C->H, mlp.c_proj H->C; r * (in + out) each."""
    return L * rank * ((C + 3 * C) + (C + C) + (C + H) + (H + C))


@pytest.mark.parametrize("make", [gpt, bert])
@pytest.mark.parametrize("rank", [1, 4])
def test_trainable_count_is_rank_times_in_plus_out(make, rank):
    model = make()
    assert model.h[0].mlp.c_fc.out_features == H
    total_before = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    wrapped = apply_lora(model, rank)
    trainable, total = trainable_parameters(wrapped)
    assert trainable == lora_count(rank)
    assert total == total_before + lora_count(rank)


def test_classifier_head_trains_in_full():
    wrapped = apply_lora(bert(num_labels=3), rank=2)
    trainable, _ = trainable_parameters(wrapped)
    assert trainable == lora_count(2) + C * 3 + 3  # plus the head's weight and bias
    assert not wrapped.base_model.model.pooler.weight.requires_grad


@pytest.mark.parametrize("make,family", [(gpt, "gpt"), (bert, "bert")])
def test_at_init_lora_gives_the_base_logits(make, family):
    model = make().eval()
    base = copy.deepcopy(model)
    wrapped = apply_lora(model, rank=4, alpha=16.0).eval()
    assert torch.equal(logits(wrapped, family), logits(base, family))


@pytest.mark.parametrize("make,family", [(gpt, "gpt"), (bert, "bert")])
def test_a_step_changes_adapters_not_the_base(make, family):
    model = make()
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    wrapped = apply_lora(model, rank=4)
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = batch()
    labels = ids.clone() if family == "bert" else ids.roll(-1, dims=1)
    out = wrapped(ids, labels=labels) if family == "gpt" else wrapped(ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        original = name.replace(".base_layer", "")
        assert torch.equal(param, base[original]), name
    moved = [n for n, p in wrapped.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert len(moved) == 4 * L  # every adapted linear's B left zero


@pytest.mark.parametrize("make,family", [(gpt, "gpt"), (bert, "bert")])
def test_merged_model_gives_the_unmerged_logits(make, family):
    wrapped = apply_lora(make(), rank=4, alpha=8.0).eval()
    perturb_adapters(wrapped)
    expected = logits(wrapped, family)
    assert not torch.allclose(expected, logits(make().eval(), family), atol=1e-3)  # the adapters matter
    merged = merge_lora(wrapped)
    assert type(merged) is (GPT if family == "gpt" else BERT)
    assert not any("lora" in name for name in merged.state_dict())
    torch.testing.assert_close(logits(merged, family), expected, atol=1e-5, rtol=0)


def test_merged_bert_classifier_saves_as_a_plain_run(tmp_path):
    model = bert(num_labels=3)
    wrapped = apply_lora(model, rank=2).eval()
    perturb_adapters(wrapped)
    with torch.no_grad():
        wrapped.base_model.model.classifier.weight.add_(1.0)  # a trained head
    ids, mask = batch()
    with torch.no_grad():
        expected = wrapped.classify(wrapped.encode(ids, mask)[0])
    merged = merge_lora(wrapped)
    run = Run.create(tmp_path / "run")
    run.write_config({"family": "bert", "model": merged.config.to_dict()})
    run.save_weights(merged)
    loaded = Run.open(tmp_path / "run").load_model()
    with torch.no_grad():
        got = loaded.classify(loaded.encode(ids, mask)[0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    for name, tensor in merged.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_merged_gpt_saves_as_a_plain_run(tmp_path):
    wrapped = apply_lora(gpt(), rank=3).eval()
    perturb_adapters(wrapped)
    expected = logits(wrapped, "gpt")
    merged = merge_lora(wrapped)
    run = Run.create(tmp_path / "run")
    run.write_config({"family": "gpt", "model": merged.config.to_dict()})
    run.save_weights(merged)
    torch.testing.assert_close(
        logits(Run.open(tmp_path / "run").load_model(), "gpt"), expected, atol=1e-5, rtol=0
    )


def test_onednn_linears_compose_with_lora():
    from lmforge.train.onednn_linear import OneDNNLinear, onednn_available, use_onednn_linears

    if not onednn_available():
        pytest.skip("no oneDNN in this torch")
    wrapped = apply_lora(gpt(), rank=4).eval()
    perturb_adapters(wrapped)
    expected = logits(wrapped, "gpt")
    assert use_onednn_linears(wrapped) == 4 * L * 3 + 1  # base, lora_A, lora_B of each; lm_head
    assert isinstance(wrapped.base_model.model.h[0].attn.c_attn.lora_A["default"], OneDNNLinear)
    torch.testing.assert_close(logits(wrapped, "gpt"), expected, atol=1e-5, rtol=1e-5)
    merged = merge_lora(wrapped)  # the oneDNN base layers fold in like plain ones
    torch.testing.assert_close(logits(merged, "gpt"), expected, atol=1e-5, rtol=1e-5)


def test_unknown_target_names_the_linears():
    with pytest.raises(UserInputError, match=r"--lora-targets q_proj: .*choose from c_attn, c_fc, c_proj"):
        apply_lora(gpt(), rank=2, targets=["q_proj"])


def test_settings_rules():
    with pytest.raises(UserInputError, match="--lora-rank must be positive; got 0"):
        LoRASettings(lora_rank=0)
    with pytest.raises(UserInputError, match="--lora-dropout must be at most"):
        LoRASettings(lora_rank=2, lora_dropout=1.5)
    with pytest.raises(UserInputError, match="--lora-alpha needs --lora-rank"):
        LoRASettings(lora_alpha=4.0)
    model = gpt()
    assert LoRASettings().apply(model) is model  # no rank: full fine-tuning
    wrapped = LoRASettings(lora_rank=2, lora_targets=["c_attn"]).apply(model)
    assert trainable_parameters(wrapped)[0] == L * 2 * (C + 3 * C)


def test_missing_peft_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(LMForgeError, match=r"LoRA needs peft: pip install 'lmforge\[lora\]'"):
        apply_lora(gpt(), rank=2)
    model = gpt()
    assert merge_lora(model) is model  # nothing to merge without peft
