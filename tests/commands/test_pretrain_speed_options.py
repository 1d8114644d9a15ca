"""`lmforge pretrain --activation-checkpointing` end to end: reported in the summary and saved with
the run, refused in one line for a model without Transformer blocks; fused AdamW reported and equal
to PyTorch's plain for-loop AdamW."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import UserInputError
from lmforge.train.optim import build_optimizer, describe_optimizer

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune.\n" * 60
SMALL = ["--n-layer", "2", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    corpus = root / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(root / "data")]) == 0
    return root / "data"


def test_checkpointing_is_applied_reported_and_saved(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(out), "--max-steps", "2", "--precision", "fp32"]
    capsys.readouterr()
    assert main([*args, *SMALL, "--activation-checkpointing", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["transforms"][0] == "activation-checkpointing"
    adamw = describe_optimizer(build_optimizer(torch.nn.Linear(2, 2), lr=1e-3))
    assert summary["optimizer"] == "muon + " + adamw  # gpt-nano's default (registry.PRESET_TRAINING)
    assert json.loads((out / "config.json").read_text())["train"]["activation_checkpointing"] is True
    assert summary["steps"] == 2


def test_a_model_without_blocks_is_refused_before_any_work(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(out), "--model", "lstm", "--max-steps", "2"]
    assert main([*args, "--activation-checkpointing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--activation-checkpointing" in err[0] and "LSTMLM model has none" in err[0]
    assert not out.exists()


def test_fused_adamw_is_chosen_on_a_cpu_and_equals_the_for_loop_reference():
    torch.manual_seed(0)
    fused_model, plain_model = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    plain_model.load_state_dict(fused_model.state_dict())
    start = fused_model.weight.detach().clone()
    fused = build_optimizer(fused_model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    assert describe_optimizer(fused) == "adamw (fused)"  # torch >= 2.4 has the fused CPU kernel
    groups = [
        {"params": [plain_model.weight], "weight_decay": 0.1},
        {"params": [plain_model.bias], "weight_decay": 0.0},
    ]
    plain = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), foreach=False, fused=False)
    assert describe_optimizer(plain) == "adamw (for-loop)"
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).pow(2).sum().backward()
            optimizer.step()
    for name, param in fused_model.named_parameters():
        torch.testing.assert_close(param, dict(plain_model.named_parameters())[name], rtol=0, atol=1e-6)
    assert (fused_model.weight - start).abs().min() > 1e-3  # three steps of lr 1e-2 moved every weight
    assert describe_optimizer(build_optimizer(fused_model, name="sgd", lr=0.1)) == "sgd (foreach)"


def test_finetune_takes_the_same_flag_and_reports_it(tmp_path, capsys):
    from tests.tiny_run import make_bert_run

    base = make_bert_run(tmp_path / "base")
    rows = "".join(
        json.dumps({"text": t, "label": t.split()[0]}) + "\n" for t in ["a b", "c d", "a c", "c b"] * 3
    )
    (tmp_path / "d.jsonl").write_text(rows, encoding="utf-8")
    data = str(tmp_path / "d.jsonl")
    args = ["finetune", "classify", "--checkpoint", str(base.path), "--train", data, "--val", data]
    capsys.readouterr()
    assert (
        main(
            [
                *args,
                "--out",
                str(tmp_path / "clf"),
                "--max-steps",
                "2",
                "--activation-checkpointing",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["transforms"][0] == "activation-checkpointing" and summary["optimizer"].startswith("adamw")


def test_the_memory_check_lets_through_a_step_only_checkpointing_makes_fit(monkeypatch):
    from lmforge.models.registry import build_model, preset_config
    from lmforge.recipe import check_memory
    from lmforge.resources import MEMORY_ENV, training_estimate
    from lmforge.train.config import TrainConfig

    family, config = preset_config("gpt2", vocab_size=256)
    with torch.device("meta"):
        sketch = build_model(family, config)
    sizes = dict(batch_size=8, block_size=1024, eval_batches=20)
    full, kept = (
        training_estimate(sketch, **sizes).total,
        training_estimate(sketch, **sizes, checkpointing=True).total,
    )
    assert kept < full / 2  # 12 layers: 8 x 12 numbers per token and width, against 12 + 8
    monkeypatch.setenv(MEMORY_ENV, str((full + kept) // 2))
    settings = dict(batch_size=8, eval_batches=20, max_steps=1, device="cpu", precision="fp32")
    with pytest.raises(UserInputError, match="needs about"):
        check_memory(sketch, TrainConfig(**settings))
    check_memory(sketch, TrainConfig(**settings, activation_checkpointing=True))


def test_gpt_nano_brings_its_speed_run_defaults_and_flags_go_over_them(data, tmp_path):
    from lmforge.models.registry import preset_training

    base = ["pretrain", "--data", str(data), "--max-steps", "1", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
            "--block-size", "16", "--precision", "fp32"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "defaults")]) == 0
    saved = json.loads((tmp_path / "defaults" / "config.json").read_text())
    assert saved["model"]["qk_norm"] is True
    train = saved["train"]
    chosen = (train["optimizer"], train["muon_lr"], train["batch_size"], train["lr"])
    assert chosen == ("muon", 0.03, 16, 6e-3)
    flags = ["--optimizer", "adamw", "--batch-size", "8", "--no-qk-norm"]
    assert main([*base, "--out", str(tmp_path / "mine"), *flags]) == 0
    saved = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert saved["model"]["qk_norm"] is False
    assert (saved["train"]["optimizer"], saved["train"]["muon_lr"], saved["train"]["batch_size"]) == (
        "adamw",
        0.03,
        8,
    )
    # another preset keeps the dataclass defaults; sharded parallelism takes the preset's Muon away
    assert preset_training("gpt-mini") == {}
    # (and the learning rate chosen for AdamW beside it: AdamW alone starts from its own default)
    for parallel in ("fsdp", "tp=2"):
        assert preset_training("gpt-nano", parallel) == {"batch_size": 16}
    assert preset_training("gpt-nano", "ddp")["optimizer"] == "muon"
