"""Run by torchrun from test_parallel.py: a tensor-parallel (and optionally FSDP) copy of a tiny
GPT or BERT against the same model unsplit, on identical input; each rank writes what it saw.

    torchrun --nproc-per-node 2 tp_worker.py OUT_DIR tp=2 gpt gelu
    torchrun --nproc-per-node 2 tp_worker.py OUT_DIR tp=2 gpt swiglu nano   # gpt-nano's block

``nano`` adds what gpt-nano's blocks have beyond GPT-2's: rotary positions, RMSNorm and the
query/key norm, whose one gain is shared by the heads that the ranks split between them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(out: Path, spec: str, family: str, mlp: str, block: str = "plain") -> None:
    from lmforge.models.registry import build_model
    from lmforge.parallel.launch import parallel_transforms, parse_parallel, setup, teardown
    from lmforge.parallel.tensor import full_tensor
    from lmforge.train import distributed
    from lmforge.train.transforms import apply_transforms

    parallel = parse_parallel(spec)
    mesh = setup(parallel, torch.device("cpu"), timeout_s=60)
    config = dict(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
    if family == "gpt":
        config["mlp"] = mlp
    if block == "nano":
        config.update(pos_encoding="rope", norm="rmsnorm", qk_norm=True)
    torch.manual_seed(0)
    reference = build_model(family, config)
    torch.manual_seed(0)
    model = apply_transforms(
        build_model(family, config), parallel_transforms(parallel, mesh, precision="fp32")
    )
    ids = torch.randint(0, 61, (4, 16), generator=torch.Generator().manual_seed(1))
    logits, expected = model(ids).logits, reference(ids).logits
    (logits.double() ** 2).mean().backward()
    (expected.double() ** 2).mean().backward()
    worst_grad, names = 0.0, []
    for (name, param), (_, plain) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert (param.grad is None) == (plain.grad is None), name
        if plain.grad is None:  # e.g. BERT's pooler, which the logits do not read
            continue
        difference = (full_tensor(param.grad) - plain.grad).abs().max().item()
        worst_grad = max(worst_grad, difference)
        names.append([name, type(param).__name__])
    norm = distributed.clip_grad_norm(model.parameters(), 1e9).item()
    result = {
        "logits": (logits - expected).abs().max().item(),
        "grads": worst_grad,
        "norm": norm,
        "reference_norm": torch.nn.utils.clip_grad_norm_(reference.parameters(), 1e9).item(),
        "parameters": names,
    }
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps(result))
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
