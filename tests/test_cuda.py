"""The models, optimizers, compiled training and the CLI on a CUDA GPU, checked against float64 on
the CPU and against properties (cached decoding equals recomputation, padding changes nothing).

CI has no GPU, so every test here skips there; run them where one is lent:

    python -m pytest tests/test_cuda.py -q

``LMFORGE_TEST_CUDA_AS=cpu`` runs the same checks on the CPU, to try this file's own logic on a
machine without a GPU (the tolerances are the GPU's).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os

import pytest
import torch

from lmforge.cli import main
from lmforge.models.registry import build_model, preset_config

DEVICE = os.environ.get("LMFORGE_TEST_CUDA_AS", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"
)
VOCAB = 97
FAMILIES = ["gpt-nano", "llama-nano", "bert-nano", "seq2seq-nano", "lstm", "gru", "rnn", "window", "rnn-attn"]
TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered as the rightful property of some one or other "
    "of their daughters. "
) * 40


@pytest.fixture(autouse=True)
def exact_float32():
    """fp32 products in full precision (no TF32), so fp32 is compared with fp32's tolerance."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    assert torch.isfinite(out).all()
    return ((out - ref).norm() / ref.norm()).item()


def small_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    family, config = preset_config(name)
    return build_model(family, {**config, "vocab_size": VOCAB}).eval()


def batch(model: torch.nn.Module, device: str) -> dict[str, torch.Tensor]:
    """Inputs for one forward pass of ``model``'s kind, padding in the second row where it has any."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, 24), generator=g)
    if model.lm_kind == "causal":
        inputs = {"input_ids": ids, "labels": ids}
    elif model.lm_kind == "masked":
        mask = torch.ones_like(ids)
        mask[1, 17:] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
    else:
        mask = torch.ones_like(ids)
        mask[1, 15:] = 0
        target = torch.randint(1, VOCAB, (2, 12), generator=g)
        inputs = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": target, "labels": target}
    return {k: v.to(device) for k, v in inputs.items()}


def float64_logits(model: torch.nn.Module) -> torch.Tensor:
    """The independent truth: a float64 copy of ``model`` on the CPU, on the same batch."""
    with torch.no_grad():
        return copy.deepcopy(model).double()(**batch(model, "cpu")).logits


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_in_float32_equals_float64_on_the_cpu(name):
    model = small_model(name)
    expected = float64_logits(model)
    with torch.no_grad():
        out = model.to(DEVICE)(**batch(model, DEVICE))
    assert out.logits.device.type == torch.device(DEVICE).type
    assert relative_error(out.logits, expected) < 1e-5
    assert out.loss is None or torch.isfinite(out.loss)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_under_bf16_autocast_stays_within_bf16_error(name):
    model = small_model(name)
    expected = float64_logits(model)
    with torch.no_grad():
        model.to(DEVICE)
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            out = model(**batch(model, DEVICE)).logits
    assert 1e-5 < relative_error(out, expected) < 3e-2  # bf16 operands: between 1e-3 and 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_changes_no_real_token_in_the_encoder(dtype):
    """BERT's padded row equals the same row run alone, unpadded: padding gets no attention, in fp32
    (SDPA's math/efficient kernels) and bf16 (where the flash kernel can take it)."""
    model = small_model("bert-nano").to(DEVICE)
    inputs = batch(model, DEVICE)
    with (
        torch.no_grad(),
        torch.autocast(torch.device(DEVICE).type, dtype=dtype, enabled=dtype != torch.float32),
    ):
        padded = model(**inputs).logits[1, :17]
        ids = inputs["input_ids"][1:, :17]
        alone = model(ids, attention_mask=torch.ones_like(ids)).logits[0]
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert relative_error(padded, alone) < tolerance


@pytest.mark.parametrize("name", ["gpt-nano", "llama-nano"])
def test_cached_decoding_equals_recomputation(name):
    from lmforge.generate.step import GPTStepModel

    model = small_model(name).to(DEVICE)
    step_model = GPTStepModel(model)
    ids = torch.randint(0, VOCAB, (2, 30), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    with torch.inference_mode():
        logits, state = step_model.start(ids[:, :6], None, max_new_tokens=24)
        for t in range(6, 30):
            full = model(ids[:, :t]).logits[:, -1]
            torch.testing.assert_close(logits, full, rtol=0, atol=1e-4)
            logits, state = step_model.step(ids[:, t], state)


def test_compiled_training_step_equals_eager():
    from lmforge.train.transforms import compiled

    eager = small_model("gpt-nano").train().to(DEVICE)
    twin = copy.deepcopy(eager)
    inputs = batch(eager, DEVICE)
    eager(**inputs).loss.backward()
    compiled(twin)(**inputs).loss.backward()
    for (name, a), b in zip(eager.named_parameters(), twin.parameters(), strict=True):
        assert relative_error(b.grad, a.grad) < 1e-4, name


def test_eager_adamw_equals_torch_fused_adamw_to_the_bit():
    from lmforge.train.eager_optim import EagerAdamW

    torch.manual_seed(0)
    ours = [
        torch.randn(64, 32, device=DEVICE, requires_grad=True),
        torch.randn(32, device=DEVICE, requires_grad=True),
    ]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = EagerAdamW(ours, lr=1e-2, weight_decay=0.1, fused=True)
    b = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, fused=True)
    for step in range(4):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
        for p, q in zip(ours, theirs, strict=True):
            assert torch.equal(p, q), step


def test_muon_update_is_orthogonalised():
    """Muon's update of a matrix has its singular values near 1 on the GPU too (bf16 Newton-Schulz
    where the device computes bf16 natively)."""
    from lmforge.train.muon import BatchedMuon

    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(64, 128, device=DEVICE))
    optimizer = BatchedMuon(
        [weight], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False, adjust_lr_fn=None
    )
    weight.grad = torch.randn(64, 128, device=DEVICE)
    optimizer.step()
    singular = torch.linalg.svdvals(-weight.detach().double().cpu())
    assert singular.min() > 0.5 and singular.max() < 1.3


def _cli(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pretrain_compiled_on_the_gpu_then_generate_there_and_on_the_cpu(tmp_path, precision):
    corpus = tmp_path / "austen.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    _cli(["prepare", "--data", str(corpus), "--tokenizer", "char", "--out", str(tmp_path / "data")])
    run = tmp_path / "run"
    summary = _cli(["pretrain", "--data", str(tmp_path / "data"), "--out", str(run), "--model", "gpt-nano",
                    "--device", DEVICE, "--precision", precision, "--compile", "--max-steps", "60",
                    "--eval-every", "30", "--no-progress", "--json"])  # fmt: skip
    summary = json.loads(summary.strip().splitlines()[-1])
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r["val_loss"] for r in losses if "val_loss" in r]
    assert evaluations[-1] < evaluations[0] - 0.5, evaluations
    for device, dtype in [(DEVICE, precision), ("cpu", "fp32")]:
        text = _cli(["generate", "--checkpoint", str(run), "--prompt", "It is a truth", "--max-new-tokens", "20",
                     "--strategy", "greedy", "--device", device, "--dtype", dtype])  # fmt: skip
        assert text.startswith("It is a truth") and len(text) > len("It is a truth")
