"""One training loop for every model family.

The trainer knows a model only through the model contract: ``model(**batch, reduction="sum")``
returns an object whose ``.loss`` is the summed cross-entropy over labels != -100. Batches come
from a ``BatchSource`` (anything with ``next_batch()``, ``state_dict()`` and
``load_state_dict()``), evaluation from a callable, and checkpoints go out through a ``save``
callable. So causal LM, masked LM, seq2seq and fine-tuning objectives all reuse this loop.

Loss normalisation: an optimizer step's gradient is that of the mean loss over *all* target
tokens of its micro-batches, sum(loss) / sum(targets), not a mean of per-micro-batch means;
so 4 accumulated micro-batches with different amounts of padding give exactly the gradient of
one batch holding all four. Data-parallel ranks will add their counts the same way.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.hardware import cpu_has_native_bf16, resolve_device, resolve_precision  # noqa: F401 (old home)
from lmforge.train.onednn_linear import onednn_linears_pay_off, use_onednn_linears
from lmforge.train.optim import CosineSchedule, build_optimizer, set_lr


class TrainingDiverged(LMForgeError):
    """The loss became NaN or infinite."""


class BatchSource(Protocol):
    def next_batch(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainConfig:
    max_steps: int | None = None  # stop after this many optimizer steps ...
    max_time: float | None = None  # ... or after this many seconds, whichever comes first
    batch_size: int = 12
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    optimizer: Literal["adamw", "sgd"] = "adamw"
    eval_every: int = 250
    log_every: int = 10
    seed: int = 1337
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_time is None:
            raise ValueError("give a budget: max_steps, max_time, or both")
        if self.min_lr is None:
            self.min_lr = self.lr / 10


@dataclass
class TrainResult:
    steps: int
    tokens: int
    elapsed_s: float
    last_train_loss: float | None
    first_val_loss: float | None
    last_val_loss: float | None
    best_val_loss: float | None
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_batches: BatchSource,
        evaluate: Callable[[nn.Module], float] | None = None,
        save: Callable[[str, nn.Module, dict | None], None] | None = None,
        log: Callable[[dict], None] | None = None,
        on_eval: Callable[[], None] | None = None,
        on_step: Callable[[int, float], None] | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.train_batches = train_batches
        self.evaluate_fn = evaluate
        self.save = save or (lambda tag, model, state: None)
        self.log = log or (lambda record: None)
        self.on_eval = on_eval or (lambda: None)
        self.on_step = on_step or (lambda step, loss: None)
        self.progress = progress
        self.optimizer = build_optimizer(
            model,
            name=config.optimizer,
            lr=config.lr,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
            device_type=self.device.type,
        )
        self.schedule = CosineSchedule(config.lr, config.min_lr, config.warmup_steps)
        self.precision = resolve_precision(config.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if self.precision == "fp16" and self.device.type != "cuda":
            raise LMForgeError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
        cpu_fp32 = self.device.type == "cpu" and self.precision == "fp32" and not config.compile
        if cpu_fp32 and onednn_linears_pay_off(self.device, model):  # raced against MKL once per CPU
            use_onednn_linears(model)
        self.forward_model = torch.compile(model) if config.compile else model
        self.step = 0
        self.tokens = 0
        self.elapsed_before = 0.0
        self.first_val_loss: float | None = None
        self.best_val_loss: float | None = None
        self.last_val_loss: float | None = None
        self._stop_requested = False
        self._start: float | None = None
        torch.manual_seed(config.seed)

    # --- state for exact resume -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed_s": self._elapsed(),
            "best_val_loss": self.best_val_loss,
            "first_val_loss": self.first_val_loss,
            "last_val_loss": self.last_val_loss,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.train_batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "train_config": asdict(self.config),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.tokens = state["tokens"]
        self.elapsed_before = state["elapsed_s"]
        self.best_val_loss = state["best_val_loss"]
        self.first_val_loss = state["first_val_loss"]
        self.last_val_loss = state["last_val_loss"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.train_batches.load_state_dict(state["data"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def request_stop(self) -> None:
        """Finish the current optimizer step, save, and return (what Ctrl-C does)."""
        self._stop_requested = True

    # --- the loop --------------------------------------------------------------------------
    def _elapsed(self) -> float:
        """Training seconds so far, earlier runs of a resumed training included."""
        since_start = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.elapsed_before + since_start

    def _progress(self) -> float:
        """Fraction of the decay budget spent: the larger of the step and the time fractions.

        In steps the cosine spans the steps after warm-up (as nanoGPT's lr_decay_iters does).
        """
        fractions = []
        if self.config.max_steps:
            warmup = min(self.config.warmup_steps, self.config.max_steps - 1)
            fractions.append((self.step - warmup) / (self.config.max_steps - warmup))
        if self.config.max_time:
            fractions.append((self._elapsed()) / self.config.max_time)
        return max(fractions)

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _move(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) for k, v in batch.items()}

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (mean loss, target tokens)."""
        micro_batches = [self._move(self.train_batches.next_batch()) for _ in range(self.config.grad_accum)]
        targets = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
        if targets == 0:
            raise LMForgeError("a training step had no target tokens (every label is -100); check the data")
        loss_sum = torch.zeros((), device=self.device)
        for batch in micro_batches:
            with self._autocast():
                loss = self.forward_model(**batch, reduction="sum").loss / targets
            self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum.item(), sum(int(b["input_ids"].numel()) for b in micro_batches)

    def _run_eval(self) -> None:
        if self.evaluate_fn is None:
            return
        self.model.eval()
        with torch.no_grad(), self._autocast():
            val_loss = float(self.evaluate_fn(self.model))
        self.model.train()
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"validation loss is {val_loss} at step {self.step}; lower --lr")
        if self.first_val_loss is None:
            self.first_val_loss = val_loss
        self.last_val_loss = val_loss
        record = {
            "step": self.step,
            "val_loss": round(val_loss, 6),
            "val_perplexity": round(math.exp(min(val_loss, 700.0)), 4),
            "elapsed_s": round(self._elapsed(), 3),
        }
        self.log(record)
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.save("best", self.model, None)
        self.on_eval()

    def _budget_spent(self) -> bool:
        if self.config.max_steps is not None and self.step >= self.config.max_steps:
            return True
        return self.config.max_time is not None and self._elapsed() >= self.config.max_time

    def fit(self) -> TrainResult:
        from tqdm.auto import tqdm

        config = self.config
        self.model.train()
        previous_handler = signal.getsignal(signal.SIGINT)
        with contextlib.suppress(ValueError):  # not the main thread: no handler, no Ctrl-C saving
            signal.signal(signal.SIGINT, lambda signum, frame: self.request_stop())
        by_time = config.max_steps is None
        bar = tqdm(
            total=int(config.max_time) if by_time else config.max_steps,
            initial=int(self.elapsed_before) if by_time else self.step,
            unit="s" if by_time else "step",
            disable=not self.progress,
            dynamic_ncols=True,
            leave=True,
        )
        self._start = time.perf_counter()
        if self.step == 0:
            self._run_eval()
        last_loss = None
        window_tokens, window_start = 0, time.perf_counter()
        try:
            while not self._budget_spent() and not self._stop_requested:
                lr = self.schedule.lr(self.step, self._progress())
                set_lr(self.optimizer, lr)
                step_start = time.perf_counter()
                loss, tokens = self.train_step()
                step_time = time.perf_counter() - step_start
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"training loss became {loss} at step {self.step + 1}; the last good checkpoint is kept. "
                        "Lower --lr, raise --warmup-steps or use --precision fp32."
                    )
                self.step += 1
                self.tokens += tokens
                window_tokens += tokens
                last_loss = loss
                self.log(
                    {
                        "step": self.step,
                        "train_loss": round(loss, 6),
                        "lr": lr,
                        "tokens_per_s": round(tokens / step_time, 1),
                        "elapsed_s": round(self._elapsed(), 3),
                    }
                )
                self.on_step(self.step, loss)
                if self.step % config.log_every == 0 or self._budget_spent():
                    rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                    window_tokens, window_start = 0, time.perf_counter()
                    bar.set_postfix_str(f"step {self.step} loss {loss:.4f} lr {lr:.2e} {rate:,.0f} tok/s")
                bar.update((int(self._elapsed()) - bar.n) if by_time else 1)
                if self.step % config.eval_every == 0 and not self._budget_spent():
                    self._run_eval()
                    self.save("last", self.model, self.state_dict())
            if not self._stop_requested or self.last_val_loss is None:
                self._run_eval()
            self.save("last", self.model, self.state_dict())
        finally:
            bar.close()
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, previous_handler)
        return TrainResult(
            steps=self.step,
            tokens=self.tokens,
            elapsed_s=self._elapsed(),
            last_train_loss=last_loss,
            first_val_loss=self.first_val_loss,
            last_val_loss=self.last_val_loss,
            best_val_loss=self.best_val_loss,
            interrupted=self._stop_requested,
        )
