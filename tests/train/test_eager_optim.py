"""EagerAdamW against torch.optim.AdamW(fused=True), and a training step's path without torch._dynamo."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from lmforge.train.eager_optim import EagerAdamW


def _model_and_batches(seed: int = 0) -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3))
    return model, [torch.randn(5, 6) for _ in range(6)]


def _groups(model: nn.Module) -> list[dict]:
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.dim() == 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _train(
    kind, model: nn.Module, batches: list[torch.Tensor], optimizer=None, first_step: int = 0, **settings
):
    optimizer = optimizer or kind(_groups(model), lr=3e-3, betas=(0.9, 0.95), **settings)
    for i, x in enumerate(batches):
        for group in optimizer.param_groups:  # the trainer's schedule changes lr between steps
            group["lr"] = 3e-3 * (1 - (first_step + i) / 20)
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


@pytest.mark.parametrize("settings", [{"fused": True}, {"fused": True, "amsgrad": True}, {"foreach": True}])
def test_every_step_equals_torchs_adamw(settings):
    """The fast path calls torch's own fused kernel: equal to the last bit. amsgrad and a
    non-fused group take torch's own step."""
    ours, batches = _model_and_batches()
    theirs, _ = _model_and_batches()
    _train(EagerAdamW, ours, batches, **settings)
    _train(torch.optim.AdamW, theirs, batches, **settings)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_state_dicts_pass_between_the_two_both_ways():
    """A run resumes across EagerAdamW and torch.optim.AdamW: the state is torch's own."""
    reference, batches = _model_and_batches()
    _train(torch.optim.AdamW, reference, batches + batches, fused=True)
    for first, second in ((EagerAdamW, torch.optim.AdamW), (torch.optim.AdamW, EagerAdamW)):
        model, _ = _model_and_batches()
        saved = _train(first, model, batches, fused=True).state_dict()
        resumed = second(_groups(model), lr=3e-3, betas=(0.9, 0.95), fused=True)
        resumed.load_state_dict(saved)
        _train(second, model, batches, optimizer=resumed, first_step=len(batches))
        for a, b in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.equal(a, b)


def test_a_training_step_never_imports_the_compiler():
    """torch.optim imports torch._dynamo (1.3-1.9 s) on its first step or zero_grad; lmforge's
    optimizers, gradient clipping and checkpoint state do not, in a fresh process."""
    script = textwrap.dedent(
        """
        import sys, torch
        from lmforge.models.registry import build_model, preset_config
        from lmforge.train import distributed
        from lmforge.train.optim import build_optimizer
        model = build_model(*preset_config("gpt-nano", vocab_size=65))
        for name in ("muon", "adamw"):
            optimizer = build_optimizer(model, name=name, lr=1e-3)
            x = torch.randint(0, 65, (2, 16))
            model(x, labels=x).loss.backward()
            distributed.clip_grad_norm(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            optimizer.load_state_dict(optimizer.state_dict())
        print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "sympy"))))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
