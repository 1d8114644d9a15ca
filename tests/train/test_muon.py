"""``--optimizer muon``: which parameters Muon takes, that its update is orthogonalised (checked by
SVD), that the schedule scales each group from its own peak, and that a resumed run continues
exactly."""

from __future__ import annotations

import io

import pytest
import torch

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.registry import preset_config
from lmforge.train.optim import MuonWithAdamW, build_optimizer, describe_optimizer, set_lr
from lmforge.train.trainer import TrainConfig, Trainer

HIDDEN = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    settings = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**settings, **overrides}))


def groups_by_name(model: torch.nn.Module, optimizer: MuonWithAdamW) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    return muon, adamw


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # GPT-2 style: tied head, learned positions, biases and LayerNorm gains
        {"tie_embeddings": False},
        "llama-nano",  # rotary, RMSNorm, SwiGLU, grouped-query attention, no biases
    ],
)
def test_every_parameter_lands_in_its_intended_group(overrides):
    if overrides == "llama-nano":
        _, config = preset_config("llama-nano", n_embd=32, n_layer=2, block_size=16)
        model = GPT(GPTConfig(vocab_size=40, **config))
    else:
        model = tiny_gpt(**overrides)
    optimizer = build_optimizer(model, name="muon", lr=1e-3)
    muon, adamw = groups_by_name(model, optimizer)
    all_names = {n for n, _ in model.named_parameters()}  # a tied head is named once (wte.weight)
    assert muon | adamw == all_names and not muon & adamw
    assert muon == {n for n in all_names if n.endswith(HIDDEN)}
    assert "wte.weight" in adamw
    if overrides == {"tie_embeddings": False}:
        assert "lm_head.weight" in adamw
    assert all(p.dim() == 2 for g in optimizer.muon.param_groups for p in g["params"])


def test_fused_adamw_part_is_kept_and_described():
    optimizer = build_optimizer(tiny_gpt(), name="muon", lr=1e-3)
    plain = build_optimizer(tiny_gpt(), name="adamw", lr=1e-3)
    assert optimizer.adamw.defaults.get("fused") == plain.defaults.get("fused")
    assert optimizer.adamw.defaults.get("foreach") == plain.defaults.get("foreach")
    assert describe_optimizer(optimizer) == "muon + " + describe_optimizer(plain)


def test_one_muon_update_is_orthogonalised():
    """A single step's change of a hidden matrix is lr * sqrt(max(1, rows/cols)) * O, where O is
    the Newton-Schulz approximation of U V^T (the polar factor of the gradient g = U S V^T): its
    singular values are near 1 although the gradient's span a factor 100, and it points where
    U V^T does (computed here by SVD)."""
    model = tiny_gpt()
    lr = 0.01
    optimizer = build_optimizer(model, name="muon", lr=1e-3, muon_lr=lr, muon_weight_decay=0.0)
    weight = model.h[0].attn.c_attn.weight  # (96, 32): Muon scales a tall matrix's step by sqrt(3)
    generator = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(96, 32, generator=generator))
    v, _ = torch.linalg.qr(torch.randn(32, 32, generator=generator))
    weight.grad = u @ torch.diag(torch.logspace(0, -2, 32)) @ v.T  # condition number 100
    before = weight.detach().clone()
    optimizer.step()
    update = (before - weight.detach()) / (lr * (weight.shape[0] / weight.shape[1]) ** 0.5)

    singular = torch.linalg.svdvals(update)
    assert singular.min() > 0.5 and singular.max() < 1.3  # Keller's quintic lands in about [0.7, 1.2]
    polar = u @ v.T
    cosine = (update * polar).sum() / (update.norm() * polar.norm())
    assert cosine > 0.95
    plain = torch.linalg.svdvals(weight.grad)
    assert plain.max() / plain.min() > 50  # what an unorthogonalised step (SGD) would have spread


def test_schedule_scales_each_group_from_its_own_peak():
    optimizer = build_optimizer(tiny_gpt(), name="muon", lr=3e-3, muon_lr=0.02)
    set_lr(optimizer, 1.5e-3, max_lr=3e-3)  # half of the peak
    assert [g["lr"] for g in optimizer.muon.param_groups] == pytest.approx([0.01])
    assert [g["lr"] for g in optimizer.adamw.param_groups] == [1.5e-3, 1.5e-3]
    assert len(optimizer.param_groups) == 3


def windows(seed: int):
    generator = torch.Generator().manual_seed(seed)
    text = torch.tensor([ord(c) % 40 for c in "muon orthogonalises the momentum of a matrix. " * 8])

    class Source:
        def next_batch(self):
            starts = torch.randint(0, len(text) - 17, (4,), generator=generator)
            x = torch.stack([text[s : s + 16] for s in starts])
            y = torch.stack([text[s + 1 : s + 17] for s in starts])
            return {"input_ids": x, "labels": y}

        def state_dict(self):
            return {"generator": generator.get_state()}

        def load_state_dict(self, state):
            generator.set_state(state["generator"])

    return Source()


def train(steps_before_stop=None, resume=None):
    model = tiny_gpt()
    saved, losses = {}, []
    config = TrainConfig(
        max_steps=8, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=100, seed=1, device="cpu",
        precision="fp32", optimizer="muon", muon_weight_decay=0.01, schedule="wsd",
    )  # fmt: skip

    def on_step(step, loss):
        losses.append(loss)
        if step == steps_before_stop:
            trainer.request_stop()

    def save(tag, model, state):
        saved[tag] = ({k: v.clone() for k, v in model.state_dict().items()}, state)

    trainer = Trainer(model, config, windows(7), save=save, on_step=on_step, progress=False)
    if resume is not None:
        model.load_state_dict(resume[0])
        trainer.load_state_dict(resume[1])
    trainer.fit()
    return losses, saved, model


def test_resume_from_saved_state_continues_exactly():
    straight, _, straight_model = train()
    first, saved, _ = train(steps_before_stop=5)
    weights, state = saved["last"]
    buffer = io.BytesIO()
    torch.save(state, buffer)  # what train_state.pt holds, read back as the run directory reads it
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    second, _, resumed_model = train(resume=(weights, state))
    assert first + second == straight
    for (name, a), b in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_plain_adamw_state_is_refused_by_muon():
    optimizer = build_optimizer(tiny_gpt(), name="muon", lr=1e-3)
    from lmforge.errors import UserInputError

    with pytest.raises(UserInputError, match="--optimizer"):
        optimizer.load_state_dict(build_optimizer(tiny_gpt(), lr=1e-3).state_dict())


def test_sharded_parameters_are_refused_with_one_line():
    """FSDP and tensor parallelism hand the optimizer DTensors (they carry ``device_mesh``): Muon's
    Newton-Schulz needs each whole matrix, so the combination is refused before any step."""
    from lmforge.errors import UserInputError

    model = tiny_gpt()
    model.h[0].attn.c_attn.weight.device_mesh = object()  # what a DTensor parameter looks like here
    with pytest.raises(UserInputError, match="--optimizer muon .* --parallel fsdp or tp"):
        build_optimizer(model, name="muon", lr=1e-3)


# --- the batched step (train/muon.py) against torch.optim.Muon -----------------------------------
def newton_schulz_one_by_one(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Keller Jordan's quintic iteration written out for one matrix, in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    x = (x.T if tall else x) / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(24, 24), (24, 72), (72, 24)])
def test_batched_newton_schulz_is_the_iteration_of_each_matrix(shape):
    from lmforge.train.muon import newton_schulz

    stacked = torch.randn(5, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stacked[2] *= 1000  # each matrix is scaled by its own norm
    batched = newton_schulz(stacked, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float64)
    for got, g in zip(batched, stacked):
        assert torch.allclose(got, newton_schulz_one_by_one(g), atol=1e-12)


@pytest.mark.parametrize("shape", [(24, 48), (24, 150), (150, 24)])
def test_gram_form_is_the_same_iteration(shape):
    """The Gram form (for matrices twice as wide as high or more, in fp32) against the iteration
    written out, in float64, and in fp32 within fp32's rounding of it."""
    from lmforge.train.muon import newton_schulz, newton_schulz_gram

    stacked = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    wide = stacked if shape[0] <= shape[1] else stacked.mT
    exact = torch.stack([newton_schulz_one_by_one(g) for g in stacked])
    gram = newton_schulz_gram(wide, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    torch.testing.assert_close(gram if shape[0] <= shape[1] else gram.mT, exact, rtol=0, atol=1e-10)
    single = newton_schulz(stacked.float(), (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32)
    torch.testing.assert_close(single.double(), exact, rtol=0, atol=1e-5)


def test_bf16_iteration_never_takes_the_gram_form(monkeypatch):
    """bf16 matmuls run 3-4x faster than fp32 where the CPU has bf16 units: the direct form stays."""
    from lmforge.train import muon

    calls = []
    monkeypatch.setattr(muon, "newton_schulz_gram", lambda *args: calls.append(args) or args[0])
    stacked = torch.randn(2, 16, 160, generator=torch.Generator().manual_seed(5))
    muon.newton_schulz(stacked, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.bfloat16)
    assert calls == []
    muon.newton_schulz(stacked, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32)
    assert len(calls) == 1 and calls[0][0].dtype == torch.float32


def test_batched_step_matches_torchs_muon_and_shares_its_state(monkeypatch):
    """In bf16 (torch's arithmetic) three steps land where torch.optim.Muon's do, to bf16's
    rounding; the state dicts are interchangeable, so a run resumes across the two."""
    from lmforge.train import muon

    monkeypatch.setattr(muon, "ns_dtype", lambda device: torch.bfloat16)
    ours, theirs = tiny_gpt(), tiny_gpt()
    hidden = [p for n, p in ours.named_parameters() if n.endswith(HIDDEN)]
    reference = [p for n, p in theirs.named_parameters() if n.endswith(HIDDEN)]
    settings = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="original")
    a, b = muon.BatchedMuon(hidden, **settings), torch.optim.Muon(reference, **settings)
    generator = torch.Generator().manual_seed(0)
    starts = [p.detach().clone() for p in hidden]
    for _ in range(3):
        for p, q in zip(hidden, reference):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q, start in zip(hidden, reference, starts):
        moved = (q.detach() - start).norm()
        assert (p.detach() - q.detach()).norm() < 0.02 * moved  # bf16 rounds to 3 significant digits
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()["state"][0]) == {"momentum_buffer"} == set(b.state_dict()["state"][0])


def test_newton_schulz_runs_in_fp32_where_bf16_is_emulated(monkeypatch):
    from lmforge.train.muon import ns_dtype

    monkeypatch.setenv("LMFORGE_CPU_CAPABILITY", "avx2")  # acts as a Zen 3: no bf16 units
    assert ns_dtype(torch.device("cpu")) == torch.float32
