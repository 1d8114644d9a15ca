"""One training loop for every model family and objective.

The trainer knows a model only through an *objective*, ``objective(model, batch) -> (loss_sum,
n_targets)`` (``train/objectives.py``; the language-model loss by default), so causal LM, masked
LM, classification, SFT, reward and preference objectives all reuse this loop. Batches come from a
``BatchSource`` (``next_batch()``, ``state_dict()``, ``load_state_dict()``), evaluation from a
callable, and checkpoints go out through a ``save`` callable. The model arrives ready: oneDNN
linears, torch.compile, LoRA and data-parallel wrappers are applied by the recipe before the
trainer exists (``train/transforms.py``), never here.

Loss normalisation: an optimizer step's gradient is that of the mean loss over *all* target
tokens of its micro-batches, sum(loss) / sum(targets), not a mean of per-micro-batch means; so 4
accumulated micro-batches with different amounts of padding give exactly the gradient of one
batch holding all four. Under data parallelism the target count is summed over ranks too, and
the loss is scaled by the world size because DDP averages gradients: every rank then steps with
the gradient of sum(loss over all ranks) / sum(targets over all ranks), what one process would.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn

from lmforge.errors import LMForgeError
from lmforge.hardware import cpu_has_native_bf16, resolve_device, resolve_precision  # noqa: F401 (old home)
from lmforge.models.loss import IGNORE_INDEX, perplexity
from lmforge.train import distributed
from lmforge.train.config import TrainConfig
from lmforge.train.malloc import keep_freed_memory
from lmforge.train.objectives import Objective, language_model_loss
from lmforge.train.optim import build_optimizer, make_schedule, set_lr

__all__ = ["BatchSource", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged", "resolve_device"]


class TrainingDiverged(LMForgeError):
    """The loss became NaN or infinite."""


class BatchSource(Protocol):
    def next_batch(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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


def batch_tokens(batch: dict[str, Any]) -> int:
    """The tokens a batch reads: its ``*input_ids`` less their padding where the batch says
    which positions are real (a 2-D ``attention_mask`` for ``input_ids``, ``labels`` for a
    seq2seq decoder's ``decoder_input_ids``); every position otherwise (windows, packed rows)."""
    total = 0
    for key, ids in batch.items():
        if not key.endswith("input_ids"):
            continue
        mask = batch.get("attention_mask") if key == "input_ids" else None
        if key == "decoder_input_ids" and "labels" in batch:
            mask = batch["labels"] != IGNORE_INDEX
        if isinstance(mask, torch.Tensor) and mask.shape == ids.shape:
            total += int(mask.sum())
        else:
            total += ids.numel()
    return total


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_batches: BatchSource,
        evaluate: Callable[[nn.Module], float | dict[str, float]] | None = None,
        save: Callable[[str, nn.Module, dict | None], None] | None = None,
        log: Callable[[dict], None] | None = None,
        on_eval: Callable[[], None] | None = None,
        on_step: Callable[[int, float], None] | None = None,
        progress: bool = True,
        objective: Objective = language_model_loss,
        best_by: Callable[[dict[str, float]], tuple[float, ...]] | None = None,
    ) -> None:
        """``model`` is used as given (transforms already applied); ``save(tag, model, state)``
        receives "best" (weights only) or "last" (weights and the training state).

        best_by: the key that ranks evaluations for best/ (lower wins), given the evaluation's
            figures ({"loss": ..., "accuracy": ...}); by default the held-out loss. DPO ranks by
            preference accuracy: its loss is lowest at step 0, where the policy is the reference.
        """
        self.config = config
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # a step's tensors reuse the last step's pages (train/malloc.py)
        self.model = model.to(self.device)
        self.train_batches = train_batches
        self.objective = objective
        self.best_by = best_by or (lambda figures: (figures["loss"],))
        self.evaluate_fn = evaluate
        self.save = save or (lambda tag, model, state: None)
        self.log = log or (lambda record: None)
        self.on_eval = on_eval or (lambda: None)
        self.on_step = on_step or (lambda step, loss: None)
        self.progress = progress and distributed.is_main_process()
        self.optimizer = build_optimizer(
            model,
            name=config.optimizer,
            lr=config.lr,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
            device_type=self.device.type,
            muon_lr=config.muon_lr,
            muon_weight_decay=config.muon_weight_decay,
        )
        self.schedule = make_schedule(
            config.schedule, config.lr, config.min_lr, config.warmup_steps, config.decay_fraction
        )
        self.precision = resolve_precision(config.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if self.precision == "fp16" and self.device.type != "cuda":
            raise LMForgeError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
        self.step = 0
        self.tokens = 0
        self.elapsed_before = 0.0
        self.first_val_loss: float | None = None
        self.best_val_loss: float | None = None
        self.best_key: tuple[float, ...] | None = None  # best_by of the evaluation saved as best/
        self.last_val_loss: float | None = None
        self._stop_requested = False
        self._evaluated_step: int | None = None  # the step of the last evaluation, if this process ran one
        self._start: float | None = None
        torch.manual_seed(config.seed)

    # --- state for exact resume -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "elapsed_s": self._elapsed(),
            "best_val_loss": self.best_val_loss,
            "best_key": self.best_key,
            "first_val_loss": self.first_val_loss,
            "last_val_loss": self.last_val_loss,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.train_batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "train_config": asdict(self.config),
        }
        if hasattr(self.objective, "state_dict"):  # e.g. the recurrent state carried between windows
            state.update(self.objective.state_dict())
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.tokens = state["tokens"]
        self.elapsed_before = state["elapsed_s"]
        self.best_val_loss = state["best_val_loss"]
        # states written before best_by existed ranked by the loss alone
        key = state.get("best_key", None if self.best_val_loss is None else (self.best_val_loss,))
        self.best_key = None if key is None else tuple(key)
        self.first_val_loss = state["first_val_loss"]
        self.last_val_loss = state["last_val_loss"]
        if state["optimizer"] is not None:  # None: sharded, loaded by the recipe (parallel/checkpoint.py)
            peaks = [group["base_lr"] for group in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            for group, peak in zip(self.optimizer.param_groups, peaks):  # this run's --lr, not the saved one
                group["base_lr"] = peak
        self.scaler.load_state_dict(state["scaler"])
        self.train_batches.load_state_dict(state["data"])
        if hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(state, self.device)
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

    def _sync_gradients(self, micro_batch: int):
        """DDP all-reduces gradients on every backward; during accumulation only the last needs it."""
        last = micro_batch == self.config.grad_accum - 1
        if last or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (mean loss, tokens read).

        Each micro-batch's backward runs at once (only one graph in memory) with a provisional
        divisor; when the step's target count over all micro-batches (and ranks) is known, the
        gradients are rescaled to d/dθ of sum(loss) / sum(targets), which is linear in the divisor.
        """
        provisional, local_targets, tokens = None, 0, 0
        loss_total = torch.zeros((), device=self.device)
        for index in range(self.config.grad_accum):
            batch = self.train_batches.next_batch()
            tokens += batch_tokens(batch)  # before the move: counting a mask on a GPU would sync
            batch = self._move(batch)
            with self._sync_gradients(index):
                with self._autocast():
                    loss_sum, targets = self.objective(self.model, batch)
                if provisional is None:
                    provisional = max(targets, 1) * self.config.grad_accum
                self.scaler.scale(loss_sum / provisional).backward()
            loss_total += loss_sum.detach().float()
            local_targets += targets
        targets = distributed.sum_over_ranks(local_targets, self.device)
        if targets == 0:
            raise LMForgeError(
                "a training step had no target tokens (every label is ignored); check the data"
            )
        # DDP and FSDP averaged the gradients over the data-parallel ranks; this makes them those
        # of the global token mean
        factor = provisional * distributed.data_parallel_size() / targets
        if factor != 1.0:  # one micro-batch on one rank: the provisional divisor was the true one
            with torch.no_grad():
                for param in self.model.parameters():
                    if param.grad is not None:
                        param.grad.mul_(factor)
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            # the norm over all parameters: DDP's gradients are already equal on every rank, and
            # FSDP's and tensor parallelism's sharded (DTensor) gradients reduce theirs across meshes
            distributed.clip_grad_norm(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        mean_loss = distributed.sum_over_ranks(loss_total.item(), self.device) / targets
        return mean_loss, tokens * distributed.data_parallel_size()  # every rank reads as many

    def _run_eval(self) -> None:
        if self.evaluate_fn is None:
            return
        self.model.eval()
        with torch.no_grad(), self._autocast():
            result = self.evaluate_fn(self.model)
        self.model.train()
        # a float, or {"loss": ..., other figures logged beside it as val_<name>} (masked-LM accuracy)
        extra = (
            {f"val_{k}": round(float(v), 6) for k, v in result.items() if k != "loss"}
            if isinstance(result, dict)
            else {}
        )
        val_loss = float(result["loss"] if isinstance(result, dict) else result)
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"validation loss is {val_loss} at step {self.step}; lower --lr")
        if self.first_val_loss is None:
            self.first_val_loss = val_loss
        self.last_val_loss = val_loss
        self._evaluated_step = self.step
        record = {
            "step": self.step,
            "val_loss": round(val_loss, 6),
            "val_perplexity": round(perplexity(val_loss), 4),
            **extra,
            "elapsed_s": round(self._elapsed(), 3),
        }
        self.log(record)
        figures = {**(result if isinstance(result, dict) else {}), "loss": val_loss}
        key = tuple(float(k) for k in self.best_by(figures))
        if self.best_key is None or key < self.best_key:
            self.best_key = key
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
                set_lr(self.optimizer, lr, self.config.lr)
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
                        "tokens_per_s": round(tokens / max(step_time, 1e-9), 1),
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
            evaluated_here = self._evaluated_step == self.step  # a budget ending at an evaluation
            if (not self._stop_requested or self.last_val_loss is None) and not evaluated_here:
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
