"""LoRA (Hu et al. 2021) through Hugging Face ``peft``: train a low-rank update, keep the base frozen.

    W x  ->  W x + (alpha / r) * B A x        A (r, in), B (out, r), B = 0 at the start

so at initialisation the adapted model computes exactly what the base model does, and a step
trains r * (in + out) numbers per targeted linear instead of in * out.

    model = apply_lora(model, rank=8)            # a peft.PeftModel around the lmforge model
    trainable, total = trainable_parameters(model)
    ... train ...
    plain = merge_lora(model)                    # W <- W + (alpha / r) B A: the lmforge model again
    run.save_weights(plain)                      # a plain checkpoint: run.py loads it, convert exports it

peft fits these models as they are: it wraps any ``nn.Module`` by the names of its ``nn.Linear``
children, and GPT and BERT share ``layers.Block`` (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
``mlp.c_proj``), so one list of target names serves both families. Left out on purpose: the output
layer (tied to the token table), the masked-LM transform and the pooler. A classification head
(``classifier``, new and randomly initialised) is trained in full.

The returned ``PeftModel`` forwards ``model(...)`` and every attribute it lacks (``encode``,
``classify``, ``config``...) to the lmforge model, so training code takes it as it is; only the
state dict differs (``base_model.model.`` prefixes, ``lora_A``/``lora_B`` entries), hence
``merge_lora`` before saving.

oneDNN linears (``train/onednn_linear.py``) compose in either order: ``OneDNNLinear`` is an
``nn.Linear`` subclass, so peft wraps it as the base layer, and ``use_onednn_linears`` after LoRA
switches the plain ``nn.Linear`` base layers and the ``lora_A``/``lora_B`` linears (same
parameters, same function). Apply LoRA first, then the training transforms, as
``train/transforms.py`` orders wrappers: the optimizer must see the final parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lmforge.bounds import Text
from lmforge.errors import LMForgeError, UserInputError
from lmforge.train.config import check_bounds, setting

# A model names its own default targets (``lora_targets``: the linears of layers.Block, by the
# names peft matches, a suffix of the module's path), so nothing here asks which family it is.
HEADS = ("classifier", "score")  # new task heads: trained in full, not adapted
MAX_RANK = 4096


@dataclass
class LoRASettings:
    """LoRA (low-rank adapters; the base model stays frozen)"""

    lora_rank: int | None = setting(
        None,
        "train rank-R LoRA adapters instead of every weight (none: full fine-tuning)",
        positive=True,
        at_most=MAX_RANK,
    )
    lora_alpha: float | None = setting(
        None, "LoRA scale numerator: updates are scaled by alpha / rank (none: alpha = rank)", positive=True
    )
    lora_dropout: float = setting(0.0, "dropout on the LoRA branch's input", non_negative=True, at_most=0.99)
    lora_targets: list[str] | None = setting(
        None,
        "names of the linear layers to adapt (none: attention and MLP linears: c_attn c_proj c_fc)",
        rule=Text(what="a linear layer's name, e.g. c_attn"),
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.lora_rank is None and (self.lora_alpha is not None or self.lora_targets is not None):
            given = "--lora-alpha" if self.lora_alpha is not None else "--lora-targets"
            raise UserInputError(f"{given} needs --lora-rank R (LoRA is off without a rank)")

    @property
    def enabled(self) -> bool:
        return self.lora_rank is not None

    def apply(self, model: nn.Module) -> nn.Module:
        """``model`` with adapters when a rank is given, else ``model`` itself (full fine-tuning)."""
        if self.lora_rank is None:
            return model
        return apply_lora(model, self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)


def _peft():
    try:
        import peft
    except ImportError:
        raise LMForgeError("LoRA needs peft: pip install 'lmforge[lora]'") from None
    return peft


def _linear_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with rank-``rank`` adapters on ``targets``; every base weight frozen except
    a ``classifier`` head. ``alpha`` defaults to ``rank`` (scale 1). Returns a ``peft.PeftModel``."""
    peft = _peft()
    if rank < 1:
        raise UserInputError(f"--lora-rank must be positive; got {rank}")
    if targets is None:
        targets = list(getattr(model, "lora_targets", ()))
        if not targets:
            raise UserInputError(
                f"LoRA has no default targets for a {type(model).__name__} model; name them "
                f"with --lora-targets (its linear layers: {', '.join(_linear_names(model))})"
            )
    linears = _linear_names(model)
    unknown = [t for t in targets if t not in linears]
    if unknown:
        raise UserInputError(
            f"--lora-targets {' '.join(unknown)}: no linear layer of this model has that name; "
            f"choose from {', '.join(linears)}"
        )
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=float(rank if alpha is None else alpha),
        lora_dropout=dropout,
        target_modules=list(targets),
        bias="none",
    )
    wrapped = peft.get_peft_model(model, config)
    for head in HEADS:  # a new head learns from scratch: no pretrained weight to keep frozen
        module = getattr(model, head, None)
        if isinstance(module, nn.Module):
            module.requires_grad_(True)
    return wrapped


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters that train, all parameters), each tensor counted once (tied weights too)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters (a ``peft.PeftModel``)."""
    try:
        import peft
    except ImportError:
        return False
    return isinstance(model, peft.PeftModel)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain lmforge model with ``W + (alpha / r) B A`` folded into each adapted weight (peft's
    ``merge_and_unload``): saves as an ordinary checkpoint. A model without adapters is returned as is."""
    if not is_lora(model):
        return model
    plain = model.merge_and_unload()
    plain.requires_grad_(True)  # a plain model again: nothing frozen for whoever trains it next
    return plain
