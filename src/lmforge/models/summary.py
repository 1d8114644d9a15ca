"""A model's module tree as rows: each module's shape, parameters and forward FLOPs per token.

    GPT                                   124,439,808   ...
      wte      Embedding(50257, 768)       38,597,376   0
      h        12 x Block                  85,054,464   ...
        0-11   Block (each of 12)           7,087,872   ...
          attn SelfAttention                2,362,368   ...
      lm_head  Linear(768 -> 50257), tied           0   77,194,752

Works from the modules alone (``models/flops.py`` for the FLOPs), so every family, built on the
meta device or not, gives its tree. A parameter shared by two modules (a tied head) counts once,
where it first appears; a run of identical blocks shows as one row, counted per block.
"""

from __future__ import annotations

from torch import nn

from lmforge.models.flops import own_flops_per_token


def shape_of(module: nn.Module) -> str:
    """A module's kind and size in a few characters."""
    kind = type(module).__name__
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features} -> {module.out_features})"
    if isinstance(module, nn.Embedding):
        return f"Embedding({module.num_embeddings}, {module.embedding_dim})"
    if isinstance(module, nn.LayerNorm):
        return f"LayerNorm({', '.join(map(str, module.normalized_shape))})"
    if isinstance(module, nn.RNNBase):
        layers = f", {module.num_layers} layers" if module.num_layers > 1 else ""
        return f"{kind}({module.input_size} -> {module.hidden_size}{layers})"
    return kind


def _identical(children: list[nn.Module]) -> bool:
    """A stack of blocks of one class with parameters of the same shapes (transformer layers)."""
    if len(children) < 2 or len({type(child) for child in children}) > 1:
        return False
    shapes = [[tuple(p.shape) for p in child.parameters()] for child in children]
    return all(shape == shapes[0] for shape in shapes)


def module_rows(model: nn.Module, context: int, depth: int) -> list[dict]:
    """Rows {name, depth, shape, parameters, flops_per_token} for the first ``depth`` levels."""
    seen: set[int] = set()
    own_parameters: dict[int, int] = {}
    tied: set[int] = set()
    for module in model.modules():
        count = 0
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                tied.add(id(module))
            else:
                seen.add(id(param))
                count += param.numel()
        own_parameters[id(module)] = count

    def totals(module: nn.Module) -> tuple[int, int]:
        parameters = sum(own_parameters.get(id(m), 0) for m in module.modules())
        flops = sum(own_flops_per_token(m, context) for m in module.modules())
        return parameters, flops

    rows: list[dict] = []

    def visit(module: nn.Module, name: str, path: str, level: int, shape: str) -> None:
        if level >= depth:
            return
        parameters, flops = totals(module)
        if level > 0 and parameters == 0 and flops == 0 and id(module) not in tied:
            return  # dropout, activations: nothing to count
        rows.append({"name": name, "path": path, "depth": level, "shape": shape, "parameters": parameters,
                     "flops_per_token": flops})  # fmt: skip
        children = list(module.named_children())
        if _identical([child for _, child in children]):
            first = children[0][1]
            stack = f"{children[0][0]}-{children[-1][0]}"
            rows[-1]["shape"] = f"{len(children)} x {shape_of(first)}"
            visit(first, stack, f"{path}.{stack}" if path else stack, level + 1, f"{shape_of(first)} (each)")
            return
        for child_name, child in children:
            child_shape = shape_of(child) + (", tied" if id(child) in tied else "")
            visit(child, child_name, f"{path}.{child_name}" if path else child_name, level + 1, child_shape)

    visit(model, type(model).__name__, "", 0, shape_of(model))
    return rows
