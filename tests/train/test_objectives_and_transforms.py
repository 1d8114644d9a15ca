"""The trainer with injected objectives, transforms applied from outside, data-parallel hooks at
world size 1, and the wall-clock budget, each against a hand-computed or reference truth."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.train import trainer as trainer_module
from lmforge.train.config import TrainConfig
from lmforge.train.trainer import Trainer
from lmforge.train.transforms import apply_transforms, compiled, onednn_linears, tied_parameters


def config(**overrides) -> TrainConfig:
    base = dict(max_steps=1, batch_size=4, lr=3e-3, warmup_steps=0, eval_every=1000, seed=1, device="cpu")
    return TrainConfig(**{"precision": "fp32", **base, **overrides})


class PointSource:
    """Noise-free points of y = 2x - 1, with a per-point weight column (4 of every 8 count)."""

    def __init__(self) -> None:
        self.calls = 0

    def next_batch(self):
        self.calls += 1
        x = torch.linspace(-1, 1, 8)[:, None]
        return {"x": x, "y": 2 * x - 1, "weight": (torch.arange(8) % 2 == 0).float()[:, None]}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def weighted_squared_error(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """An objective the trainer has never heard of: squared error summed over the points that count."""
    error = (model(batch["x"]) - batch["y"]) ** 2 * batch["weight"]
    return error.sum(), int(batch["weight"].sum())


def test_a_model_with_an_objective_defined_here_trains_through_the_unchanged_trainer():
    torch.manual_seed(0)
    line = nn.Linear(1, 1)
    cfg = config(max_steps=300, lr=0.1, weight_decay=0.0, grad_clip=0.0, optimizer="sgd")
    result = Trainer(line, cfg, PointSource(), objective=weighted_squared_error, progress=False).fit()
    # least squares on noise-free points of y = 2x - 1 has exactly that solution
    assert line.weight.item() == pytest.approx(2.0, abs=1e-3)
    assert line.bias.item() == pytest.approx(-1.0, abs=1e-3)
    assert result.last_train_loss < 1e-6


def test_one_step_of_an_injected_objective_is_its_hand_computed_gradient():
    line = nn.Linear(1, 1)
    with torch.no_grad():
        line.weight.fill_(0.5), line.bias.fill_(0.0)
    cfg = config(lr=1.0, weight_decay=0.0, grad_clip=0.0, optimizer="sgd", grad_accum=2)
    trainer = Trainer(line, cfg, PointSource(), objective=weighted_squared_error, progress=False)
    for group in trainer.optimizer.param_groups:
        group["momentum"] = 0.0
    trainer.train_step()
    # d/dw of mean over the 8 counted points (two micro-batches of 4) of (w x + b - y)^2
    x = torch.linspace(-1, 1, 8)[::2]
    residual = 0.5 * x - (2 * x - 1)
    grad_w, grad_b = (2 * residual * x).mean().item(), (2 * residual).mean().item()
    assert line.weight.item() == pytest.approx(0.5 - grad_w, abs=1e-6)
    assert line.bias.item() == pytest.approx(0.0 - grad_b, abs=1e-6)


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16))


class Windows:
    def __init__(self, seed: int = 3) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self):
        ids = torch.randint(0, 50, (2, 9), generator=self.generator)
        labels = ids[:, 1:].clone()
        labels[0, :3] = -100  # uneven targets across micro-batches
        return {"input_ids": ids[:, :-1], "labels": labels}

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def sgd_step(model: nn.Module) -> torch.Tensor:
    plain = [p.detach().clone() for p in tiny_gpt().parameters()]
    cfg = config(lr=1.0, weight_decay=0.0, grad_clip=0.5, optimizer="sgd", grad_accum=3)
    trainer = Trainer(model, cfg, Windows(), progress=False)
    for group in trainer.optimizer.param_groups:
        group["momentum"] = 0.0
    trainer.train_step()
    return torch.cat([(p.detach() - q).flatten() for p, q in zip(tiny_gpt_parameters(model), plain)])


def tiny_gpt_parameters(model: nn.Module):
    return (model.module if hasattr(model, "module") else model).parameters()


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_at_world_size_one_equals_plain_training_and_uses_every_hook(process_group, monkeypatch):
    plain = sgd_step(tiny_gpt())
    reduced, no_sync_entries = [], []
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(tensor, *args, **kwargs):
        reduced.append(tensor.item())
        return real_all_reduce(tensor, *args, **kwargs)

    monkeypatch.setattr(dist, "all_reduce", counting_all_reduce)
    ddp = nn.parallel.DistributedDataParallel(tiny_gpt())
    real_no_sync = ddp.no_sync

    def spying_no_sync():
        no_sync_entries.append(True)
        return real_no_sync()

    ddp.no_sync = spying_no_sync
    wrapped = sgd_step(ddp)
    torch.testing.assert_close(wrapped, plain, rtol=1e-5, atol=1e-7)
    assert len(no_sync_entries) == 2  # micro-batches 1 and 2 of 3 skip the gradient all-reduce
    assert reduced[0] == 3 * (16 - 3)  # the step's target count (3 ignored per micro-batch), over ranks
    assert plain.abs().max() > 0


def test_tied_weights_survive_the_onednn_transform_and_compile():
    model = tiny_gpt()
    ties = tied_parameters(model)
    assert ties == [("lm_head.weight", "wte.weight")]
    transformed = apply_transforms(model, [onednn_linears])
    assert tied_parameters(transformed) == ties and transformed.lm_head.weight is transformed.wte.weight
    wrapped = compiled(model)  # a wrapper: the parameters it trains are the model's own
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in model.parameters()}


def test_onednn_linears_fall_back_when_the_ops_are_missing(monkeypatch):
    from lmforge.train import onednn_linear

    model = tiny_gpt()
    ids = torch.randint(0, 50, (2, 8))
    expected = model(ids).logits
    apply_transforms(model, [onednn_linears])
    monkeypatch.setattr(onednn_linear, "onednn_available", lambda: False)
    torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-6)
    from lmforge.train.transforms import training_transforms

    names = [t.name for t in training_transforms(device=torch.device("cpu"), precision="fp32", compile=False)]
    assert "onednn-linears" not in names


class FakeClock:
    """perf_counter that advances 1 s per optimizer step (read by the trainer around each step)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_budget_stops_on_time_and_lays_the_cosine_over_it(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    lrs = []

    def on_step(step, loss):
        clock.now += 1.0  # each optimizer step "takes" one second

    cfg = config(max_steps=None, max_time=10.0, lr=1.0, min_lr=0.0, warmup_steps=0)
    trainer = Trainer(tiny_gpt(), cfg, Windows(), on_step=on_step, progress=False)
    trainer.log = lambda record: lrs.append(record["lr"]) if "lr" in record else None
    result = trainer.fit()
    assert result.steps == 10 and result.elapsed_s == pytest.approx(10.0)
    # step k starts after k seconds: lr = 0.5 (1 + cos(pi k / 10)), the cosine over the time budget
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(10)])


@pytest.mark.slow
def test_compile_on_a_cpu_trains_to_the_eager_loss():
    eager = Trainer(tiny_gpt(), config(max_steps=3), Windows(), progress=False).fit().last_train_loss
    model = tiny_gpt()
    result = Trainer(compiled(model), config(max_steps=3), Windows(), progress=False).fit()
    assert result.last_train_loss == pytest.approx(eager, rel=1e-4)
