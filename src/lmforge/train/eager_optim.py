"""torch.optim's AdamW and Muon, stepped without importing torch._dynamo.

``torch.optim.Optimizer`` imports the compiler front end, ``torch._dynamo``, the first time any of
``add_param_group``, ``zero_grad``, ``state_dict`` or ``load_state_dict`` runs (each is wrapped in
``torch._disable_dynamo``, which imports lazily) and in every ``step`` of torch's own optimizers
(``_use_grad_for_differentiable``). An eager run never compiles, yet pays that import at the start
of training: 1.3-1.9 s on a 2-core Xeon with torch 2.13, 7% of a 23-second speed-run
(``benchmarks/shakespeare_char.py --race``, where every second of start-up is a second less of
training).

The mixin calls torch's own methods without the wrapper (``functools.wraps`` keeps the original as
``__wrapped__``; a torch without it gets the wrapped method, slower to start and as correct), and
``EagerAdamW.step`` calls the fused AdamW kernel that ``torch.optim.AdamW(fused=True)`` calls, with
the same state (``step``, ``exp_avg``, ``exp_avg_sq``) and ``state_dict``: a run resumes across
the two. Whatever the fast path does not cover (a gradient scaler's unscaling, amsgrad, maximize,
a non-fused group, a tensor learning rate) goes to torch's own ``step``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor


def _bare(method):
    """torch's method without its ``_disable_dynamo`` wrapper, or the method itself."""
    return getattr(method, "__wrapped__", method)


class EagerOptimizerMixin:
    """``torch.optim.Optimizer``'s bookkeeping methods, called past their dynamo wrappers."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _bare(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _bare(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _bare(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _bare(torch.optim.Optimizer.load_state_dict)(self, state_dict)


class EagerAdamW(EagerOptimizerMixin, torch.optim.AdamW):
    """``torch.optim.AdamW(fused=True)``, stepped by the same kernel without torch's wrappers."""

    def _fast_path(self) -> bool:
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return False
        return all(
            group["fused"]
            and not (group["amsgrad"] or group["maximize"] or group["differentiable"] or group["capturable"])
            and not isinstance(group["lr"], Tensor)
            for group in self.param_groups
        )

    def step(self, closure=None):
        if not self._fast_path():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
                self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps)
                beta1, beta2 = group["betas"]
                by_kind: dict[tuple, list[int]] = defaultdict(list)  # one kernel call per device and dtype
                for i, param in enumerate(params):
                    by_kind[(param.device, param.dtype)].append(i)
                for members in by_kind.values():
                    kind_steps = [steps[i] for i in members]
                    torch._foreach_add_(kind_steps, 1)
                    torch._fused_adamw_(
                        [params[i] for i in members],
                        [grads[i] for i in members],
                        [exp_avgs[i] for i in members],
                        [exp_avg_sqs[i] for i in members],
                        [],
                        kind_steps,
                        amsgrad=False,
                        lr=float(group["lr"]),
                        beta1=float(beta1),
                        beta2=float(beta2),
                        weight_decay=group["weight_decay"],
                        eps=group["eps"],
                        maximize=False,
                        grad_scale=None,
                        found_inf=None,
                    )
        return loss
