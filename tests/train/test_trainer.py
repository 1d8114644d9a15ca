"""The trainer against hand-computed truths: accumulation, exact resume, schedules, failures."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from torch import nn

from lmforge.models.gpt import GPT, GPTConfig, ModelOutput
from lmforge.train.optim import CosineSchedule, parameter_groups
from lmforge.train.trainer import TrainConfig, Trainer, TrainingDiverged


class WindowSource:
    """Random (x, y) windows from a fixed token tensor, driven by its own generator."""

    def __init__(self, tokens: torch.Tensor, batch_size: int, block_size: int, seed: int = 0) -> None:
        self.tokens, self.batch_size, self.block_size = tokens, batch_size, block_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self):
        starts = torch.randint(
            0, len(self.tokens) - self.block_size - 1, (self.batch_size,), generator=self.generator
        )
        x = torch.stack([self.tokens[s : s + self.block_size] for s in starts])
        y = torch.stack([self.tokens[s + 1 : s + 1 + self.block_size] for s in starts])
        return {"input_ids": x, "labels": y}

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def corpus() -> torch.Tensor:
    text = "the quick brown fox jumps over the lazy dog. " * 40
    return torch.tensor([ord(c) - 32 for c in text])  # ids 0..94


def small_gpt(dropout: float = 0.0, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=95, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=dropout))


def config(**overrides) -> TrainConfig:
    # fp32: these tests compare exact numbers; "auto" picks bf16 on CPUs that have it
    base = dict(
        max_steps=20,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=5,
        seed=1,
        device="cpu",
        precision="fp32",
    )
    base.update(overrides)
    return TrainConfig(**base)


def test_schedule_warmup_and_cosine_hand_computed():
    schedule = CosineSchedule(max_lr=1.0, min_lr=0.1, warmup_steps=4)
    assert [schedule.lr(s, 0.0) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert schedule.lr(4, 0.0) == pytest.approx(1.0)
    assert schedule.lr(10, 0.5) == pytest.approx(0.55)  # halfway down the cosine
    assert schedule.lr(10, 1.0) == pytest.approx(0.1)
    assert schedule.lr(10, 1.7) == pytest.approx(0.1)


def test_weight_decay_only_on_matrices():
    model = small_gpt()
    decay, no_decay = parameter_groups(model, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    counted = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert counted == model.num_parameters()  # the tied head is counted once


class FixedBatches:
    def __init__(self, batches):
        self.batches, self.index = batches, 0

    def next_batch(self):
        batch = self.batches[self.index]
        self.index += 1
        return batch

    def state_dict(self):
        return {"index": self.index}

    def load_state_dict(self, state):
        self.index = state["index"]


def padded(rows: list[list[int]], width: int) -> dict[str, torch.Tensor]:
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, row in enumerate(rows):
        ids[i, : len(row) - 1] = torch.tensor(row[:-1])
        labels[i, : len(row) - 1] = torch.tensor(row[1:])
    return {"input_ids": ids, "labels": labels}


def sgd_update(micro_batches) -> torch.Tensor:
    """Parameter change after one plain SGD step (lr 1, no decay, no clip, no momentum) = -gradient."""
    model = small_gpt(seed=3)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = config(
        max_steps=1,
        optimizer="sgd",
        lr=1.0,
        warmup_steps=0,
        weight_decay=0.0,
        grad_clip=0.0,
        grad_accum=len(micro_batches),
    )
    trainer = Trainer(model, cfg, FixedBatches(micro_batches), progress=False)
    trainer.optimizer.param_groups[0]["momentum"] = trainer.optimizer.param_groups[1]["momentum"] = 0.0
    trainer.train_step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


def test_accumulated_padded_micro_batches_equal_one_big_batch():
    gen = torch.Generator().manual_seed(5)
    rows = [torch.randint(0, 95, (n,), generator=gen).tolist() for n in (17, 4, 9, 12)]
    one_batch = sgd_update([padded(rows, 16)])
    accumulated = sgd_update([padded([row], len(row) - 1) for row in rows])
    torch.testing.assert_close(accumulated, one_batch, rtol=1e-4, atol=1e-6)
    # a mean of per-micro-batch means weights the 3-token row like the 16-token one: different
    mean_of_means = torch.zeros_like(one_batch)
    for row in rows:
        mean_of_means += sgd_update([padded([row], len(row) - 1)]) / len(rows)
    assert (mean_of_means - one_batch).abs().max() > 1e-4


def run_training(tmp_path, name, steps_before_stop=None, resume_state=None, dropout=0.1):
    model = small_gpt(dropout=dropout)
    saved = {}
    losses = []

    def save(tag, model, state):
        saved[tag] = ({k: v.clone() for k, v in model.state_dict().items()}, state)

    def on_step(step, loss):
        losses.append(loss)
        if steps_before_stop is not None and step == steps_before_stop:
            trainer.request_stop()

    source = WindowSource(corpus(), batch_size=4, block_size=16, seed=7)
    evaluate = lambda m: m(**WindowSource(corpus(), 4, 16, seed=99).next_batch()).loss.item()  # noqa: E731
    trainer = Trainer(model, config(), source, evaluate=evaluate, save=save, on_step=on_step, progress=False)
    if resume_state is not None:
        weights, state = resume_state
        model.load_state_dict(weights)
        trainer.load_state_dict(state)
    result = trainer.fit()
    return losses, saved, result


def test_resume_continues_exactly(tmp_path):
    straight, _, _ = run_training(tmp_path, "straight")
    first, saved, result = run_training(tmp_path, "first", steps_before_stop=10)
    assert result.interrupted and result.steps == 10
    weights, state = saved["last"]
    # the state survives a round trip through torch.save / weights_only loading
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    second, _, _ = run_training(tmp_path, "second", resume_state=(weights, state))
    assert len(straight) == 20 and len(first) == 10 and len(second) == 10
    assert first + second == straight  # bit-for-bit: same data order, dropout RNG, optimizer, schedule


def test_sigint_saves_and_stops():
    model = small_gpt()
    saved = []
    handler_before = signal.getsignal(signal.SIGINT)  # default, or SIG_IGN in a background job

    def on_step(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(
        model,
        config(),
        WindowSource(corpus(), 4, 16),
        save=lambda t, m, s: saved.append((t, s)),
        on_step=on_step,
        progress=False,
    )
    result = trainer.fit()
    assert result.interrupted and result.steps == 3
    assert saved[-1][0] == "last" and saved[-1][1]["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler_before  # the trainer's handler is gone


class ExplodesAtStep(nn.Module):
    def __init__(self, bad_step: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 2))
        self.calls, self.bad_step = 0, bad_step

    def forward(self, input_ids, labels, reduction="mean"):
        self.calls += 1
        loss = (self.weight.sum() - 3.0) ** 2 * labels.numel()
        if self.calls >= self.bad_step:
            loss = loss * float("nan")
        return ModelOutput(logits=torch.zeros(1), loss=loss)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint():
    saved = []
    trainer = Trainer(
        ExplodesAtStep(bad_step=8),
        config(eval_every=3),
        WindowSource(corpus(), 2, 4),
        evaluate=lambda m: 1.0,
        save=lambda t, m, s: saved.append((t, s and s["step"])),
        progress=False,
    )
    with pytest.raises(TrainingDiverged, match="step 8"):
        trainer.fit()
    assert saved[-1] == ("last", 6)  # nothing written after the NaN


def test_tiny_model_overfits_tiny_corpus():
    source = WindowSource(corpus(), batch_size=8, block_size=16)
    losses = []
    trainer = Trainer(
        small_gpt(),
        config(max_steps=150, lr=1e-2, warmup_steps=10, eval_every=1000),
        source,
        on_step=lambda step, loss: losses.append(loss),
        progress=False,
    )
    result = trainer.fit()
    # initialised with std 0.02, the model starts as a near-uniform guess over 95 ids: loss log(95)
    assert losses[0] == pytest.approx(math.log(95), abs=0.1)
    # a 45-character sentence repeated: after a few words every next character is determined
    assert result.last_train_loss < 0.3, result.last_train_loss


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    from lmforge import hardware
    from lmforge.train import trainer as trainer_module

    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert trainer_module.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert trainer_module.resolve_precision("auto", cpu) == "bf16"
    assert trainer_module.resolve_precision("fp32", cpu) == "fp32"
    assert Trainer(small_gpt(), config(precision="auto"), WindowSource(corpus(), 4, 16)).precision == "bf16"


def _scripted_evaluations(figures: list[dict[str, float]]):
    """An evaluate that returns the next scripted figures at each call."""
    calls = iter(figures)
    return lambda model: next(calls)


# a DPO-like run: held-out loss lowest at step 0 (the reference) while accuracy climbs
SCRIPT = [
    {"loss": 0.6931, "accuracy": 0.0},
    {"loss": 0.6950, "accuracy": 0.6},
    {"loss": 0.6900, "accuracy": 0.6},
    {"loss": 0.7100, "accuracy": 0.8},
    {"loss": 0.6800, "accuracy": 0.7},
]


def _best_steps(best_by, stop_after: int | None = None, resume=None) -> tuple[list[int], Trainer]:
    saved: list[int] = []
    trainer = Trainer(
        small_gpt(),
        config(max_steps=8, eval_every=2),
        WindowSource(corpus(), 2, 16),
        evaluate=_scripted_evaluations(SCRIPT if resume is None else SCRIPT[3:]),
        save=lambda tag, model, state: saved.append(trainer.step) if tag == "best" else None,
        on_step=(lambda step, loss: trainer.request_stop() if step == stop_after else None),
        progress=False,
        best_by=best_by,
    )
    if resume is not None:
        trainer.load_state_dict(resume)
    trainer.fit()
    return saved, trainer


def test_best_is_the_lowest_loss_by_default_and_the_best_by_key_otherwise():
    by_loss, trainer = _best_steps(None)
    assert by_loss == [0, 4, 8] and trainer.best_val_loss == 0.68  # 0.6931, 0.69, then 0.68
    by_accuracy, trainer = _best_steps(lambda f: (-f["accuracy"], f["loss"]))
    # step 0 (the first), step 2 (0.6 beats 0.0), step 4 (same accuracy, lower loss), step 6 (0.8); step 8's 0.7 loses
    assert by_accuracy == [0, 2, 4, 6] and trainer.best_val_loss == 0.71
    assert trainer.best_key == (-0.8, 0.71)


def test_the_best_key_survives_a_resume():
    key = lambda f: (-f["accuracy"], f["loss"])  # noqa: E731
    before, trainer = _best_steps(key, stop_after=5)  # evaluations at 0, 2, 4; stop at 5
    assert before == [0, 2, 4] and trainer.best_key == (-0.6, 0.69)
    state = trainer.state_dict()
    after, trainer = _best_steps(key, resume=state)  # evaluations at 6 (0.8) and 8 (0.7)
    assert after == [6] and trainer.best_key == (-0.8, 0.71)
    # a state from before best_by existed ranks by its loss alone
    del state["best_key"]
    _, trainer = _best_steps(None, resume=state | {"best_val_loss": 0.69})
    assert trainer.best_key == (0.68,)


def test_batch_tokens_counts_real_tokens_where_the_batch_marks_them():
    from lmforge.train.trainer import batch_tokens

    windows = {
        "input_ids": torch.zeros(4, 8, dtype=torch.long),
        "labels": torch.zeros(4, 8, dtype=torch.long),
    }
    assert batch_tokens(windows) == 32  # no padding to leave out
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    classify = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "attention_mask": mask,
        "labels": torch.tensor([0, 1]),
    }
    assert batch_tokens(classify) == 4
    labels = torch.tensor([[7, 8, -100], [9, -100, -100]])
    seq2seq = {**classify, "decoder_input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": labels}
    assert batch_tokens(seq2seq) == 4 + 3
    packed = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "attention_mask": torch.ones(2, 1, 4, 4, dtype=torch.bool),
    }
    assert batch_tokens(packed) == 8  # a document mask says nothing of padding: every position
