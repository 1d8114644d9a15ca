"""Faster CPU decoding: hand every linear layer's weight to oneDNN once, in its own blocked layout.

    model = run.load_model()
    pack_linear_layers(model)     # on a CPU: each nn.Linear -> PackedLinear (inference only)
    generate(model, prompts, config)

Decoding one token at a time multiplies a few rows by every weight matrix: the work is reading
the weights (about 500 MB per token for GPT-2 124M in fp32), not arithmetic. PyTorch's CPU
``F.linear`` goes to MKL, whose matrix-vector product runs on one core at about 18 GB/s on the
AMD EPYC this project is measured on; oneDNN's linear on a weight it has reordered beforehand
reads 43-50 GB/s on the same machine, fp32 or bf16, for 1 to 8 rows
(``benchmarks/generate_throughput.py``). Training is untouched: packed layers have no gradient.

The weights are copied into the packed layout, so tied matrices (GPT's token embedding and
output head) keep working: the embedding stays a plain tensor, the head gets its own packed copy.
``pack_linear_layers`` does nothing where oneDNN is absent or the model is not on the CPU, nor
for a bf16 model where oneDNN has no bf16 linear (CPUs without AVX-512 or AVX-NE-CONVERT, e.g. Zen 3:
``lmforge.hardware.onednn_bf16_works``): the bf16 weights then stay in plain ``F.linear`` layers.
``packing_pays_off(model, rows_hint)`` races packed against plain layers on the model's own
weights once per CPU (cached); ``lmforge generate`` packs only where packing wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.hardware import measured_choice, onednn_bf16_works


def packing_available(model: nn.Module) -> bool:
    """oneDNN packing works for CPU fp32 models on a PyTorch built with it (the CPU wheels are),
    and for bf16 ones where this CPU has oneDNN's bf16 linear (tried once, not assumed)."""
    parameter = next(model.parameters(), None)
    return (
        parameter is not None
        and parameter.device.type == "cpu"
        and parameter.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and (parameter.dtype == torch.float32 or onednn_bf16_works())
    )


def packing_pays_off(model: nn.Module, rows_hint: int = 1) -> bool:
    """Whether packed layers decode faster than plain ``F.linear`` on this CPU: a race over the
    model's own linear weights at ``rows_hint`` rows, cached per CPU, shapes and dtype."""
    if not packing_available(model):
        return False
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return False
    dtype = linears[0].weight.dtype
    with torch.inference_mode():
        cases = [(torch.ones(rows_hint, m.in_features, dtype=dtype), m.weight, m.bias) for m in linears]
        packed = [PackedLinear(m, rows_hint) for m in linears]

        def run_packed() -> None:
            for (x, _, _), layer in zip(cases, packed):
                layer(x)

        def run_plain() -> None:
            for x, weight, bias in cases:
                F.linear(x, weight, bias)

        shapes = sorted({(m.in_features, m.out_features) for m in linears})
        name = f"oneDNN packed vs plain {dtype} linears, {rows_hint} rows, {len(linears)} layers {shapes}"
        return measured_choice(name, run_packed, run_plain)


class PackedLinear(nn.Module):
    """``y = x W^T + b`` for inference, W held in oneDNN's layout for ``rows_hint`` rows at a time."""

    def __init__(self, linear: nn.Linear, rows_hint: int = 1) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint))
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (N, in): oneDNN takes a matrix
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


def pack_linear_layers(model: nn.Module, rows_hint: int = 1) -> int:
    """Replace every ``nn.Linear`` of an inference model by a ``PackedLinear``; returns how many.

    ``rows_hint`` is the number of rows a decoding step multiplies (the batch size); any number
    still works, the hint only picks oneDNN's blocking.
    """
    if not packing_available(model):
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, PackedLinear(child, rows_hint))
                replaced += 1
    return replaced
