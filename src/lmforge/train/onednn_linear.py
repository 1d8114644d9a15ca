"""fp32 linear layers on a CPU through oneDNN instead of MKL: same function, about 2x the speed on AMD.

    x (N, in) @ W^T (in, out) -> y (N, out)      forward: one oneDNN matmul
    backward: grad_x = grad_y @ W, grad_W = grad_y^T @ x, grad_b = sum of grad_y: two more

PyTorch sends fp32 ``F.linear`` on a CPU to MKL, which on AMD processors runs well below what
the cores can do: on the 2-core AMD EPYC (Zen 5) this project is measured on, MKL's fp32
matmuls reach about 200 GFLOP/s and oneDNN's (the library PyTorch already uses for bf16) 400-480
on the same shapes, forward and backward of a linear layer 1.8x faster
(``benchmarks/train_throughput.py``). Nothing else changes: parameters, state dict, optimizer
and results (equal to ``nn.Linear`` within float rounding, tested).

``use_onednn_linears(model)`` switches a model's ``nn.Linear`` modules in place, sharing their
parameters (so tied weights stay tied); the trainer does it for fp32 training on a CPU without
torch.compile where ``onednn_linears_pay_off(device, model)`` says so: a race of both libraries on
the model's own linear shapes, forward and backward, run once per CPU model and torch version
(``lmforge.hardware.measured_choice``), because the 2x above was measured on Zen 5 and does not
hold on every CPU: on a Zen 3 EPYC (AVX2) MKL is as fast or faster at training's row counts, and
the race keeps it. Under autocast (bf16) PyTorch already uses oneDNN, so nothing is switched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.hardware import measured_choice


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (N, K) @ b (M, K)^T -> (N, M) by oneDNN (b is the 'weight' of a linear layer)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        y = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_rows = grad_y.reshape(-1, grad_y.shape[-1])  # (N, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul_t(grad_rows, weight.t()).view(x.shape)  # (N, out) @ (out, in)
        if ctx.needs_input_grad[1]:
            grad_weight = _matmul_t(grad_rows.t(), x.reshape(-1, x.shape[-1]).t())  # (out, N) @ (N, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


class OneDNNLinear(nn.Linear):
    """An ``nn.Linear`` whose fp32 CPU matmuls go to oneDNN; anything else takes ``F.linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        ):
            return _OneDNNLinearFunction.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def use_onednn_linears(model: nn.Module) -> int:
    """Switch every plain ``nn.Linear`` of ``model`` to ``OneDNNLinear`` in place; returns how many.

    The module keeps its parameters, buffers and hooks (only its class changes), so optimizers,
    state dicts and weight tying are unaffected.
    """
    if not onednn_available():
        return 0
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDNNLinear
            switched += 1
    return switched


def onednn_linears_pay_off(device: torch.device | str, model: nn.Module | None = None) -> bool:
    """Whether ``OneDNNLinear`` trains faster than ``nn.Linear`` (MKL) on this CPU, at ``model``'s
    linear shapes (default: a 512-wide MLP); measured once per CPU and cached."""
    if torch.device(device).type != "cpu" or not onednn_available():
        return False
    shapes = sorted(
        {
            (m.in_features, m.out_features)
            for m in (model.modules() if model is not None else ())
            if isinstance(m, nn.Linear)
        }
    ) or [(512, 2048), (2048, 512)]
    generator = torch.Generator().manual_seed(0)
    cases = []
    for fan_in, fan_out in shapes:
        # rows as training has them (a batch of windows is hundreds to thousands of tokens): with a
        # few dozen rows the race measured call overhead and picked oneDNN where MKL trains faster
        rows = max(256, min(2048, 2**27 // (fan_in * fan_out)))
        x = torch.randn(rows, fan_in, generator=generator).requires_grad_()
        weight = (torch.randn(fan_out, fan_in, generator=generator) / fan_in**0.5).requires_grad_()
        cases.append((x, weight, torch.zeros(fan_out, requires_grad=True)))

    def run(linear) -> None:
        for x, weight, bias in cases:
            linear(x, weight, bias).sum().backward()

    with torch.inference_mode(False), torch.enable_grad():
        return measured_choice(
            f"oneDNN vs MKL fp32 linears, training rows, {shapes}",
            lambda: run(_OneDNNLinearFunction.apply),
            lambda: run(F.linear),
            margin=0.95,  # a switch must pay: a tie keeps MKL, PyTorch's own path
        )
