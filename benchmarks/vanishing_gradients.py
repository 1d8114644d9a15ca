"""Vanishing gradients, shown: ||dJ_t / dh_j|| against the distance t - j, Elman RNN against LSTM.

    python benchmarks/vanishing_gradients.py                     # random init and briefly trained, ~2 minutes
    python benchmarks/vanishing_gradients.py --train-steps 0     # random init only, seconds

J_t is the cross-entropy of the prediction at the last position t of a 100-character sequence of
tiny Shakespeare's validation text, h_j the hidden state after position j. Autograd gives every
dJ_t / dh_j at once: the model is stepped one character at a time (``forward(..., state=...)``,
the decoding path), each h_j keeps its gradient (``retain_grad``), and one backward pass from J_t
fills them all. The figure is the median over 64 sequences of the Euclidean norm (in float64,
so that the Elman network's tiny gradients do not underflow to 0).

The lecture's sketch (linear case): dJ_t / dh_j = dJ_t / dh_t prod_{j < k <= t} dh_k / dh_{k-1},
and for the Elman network dh_k / dh_{k-1} = diag(sigma'(a_k)) W_ah, so the norm shrinks about
geometrically with t - j when the factors' norms stay below 1. tanh' <= 1 and is small where tanh
saturates, so it shrinks even though ||W_ah|| is above 1 here (1.1 at init, about 4 trained). The LSTM's
cell state is updated additively (c_k = f_k * c_{k-1} + i_k * g_k), so with forget gates near 1
the gradient travels back along c with little decay. Both networks have the same width (256) and
embeddings (64); "trained" is 1,500 steps of `lmforge pretrain` (its defaults) on the training split.

Writes benchmarks/results/vanishing_gradients.png (log y-axis) and vanishing_gradients.json.
Skips (exit 0) without ../shared/data/tinyshakespeare.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, SHARED_DATA, table, write_result  # noqa: E402
from lmforge.commands.prepare import prepare  # noqa: E402
from lmforge.commands.pretrain import pretrain_with as pretrain  # noqa: E402
from lmforge.data.shards import load_prepared  # noqa: E402
from lmforge.models.registry import build_model, preset_config  # noqa: E402
from lmforge.run import Run  # noqa: E402

CORPUS = SHARED_DATA / "tinyshakespeare.txt"
SHAPE = {"n_embd": 64, "hidden_size": 256, "n_layer": 1}
SHOWN = [0, 1, 2, 5, 10, 20, 30, 50, 75, 99]  # distances t - j in the table


def gradient_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||dJ_t / dh_j|| for j = 0..t, t the last position: (B, t + 1), column j the distance t - j."""
    model.eval().double()  # no dropout; float64, so that norms of 1e-30 do not underflow to 0
    B, T = x.shape
    state, hidden = None, []
    for j in range(T):
        out = model(x[:, j : j + 1], state=state)
        state = out.state
        state[0].retain_grad()  # h_j (n_layer 1: state[0] is (1, B, H)); an LSTM's c_j is state[1]
        hidden.append(state[0])
    # J_t from h_t itself (the logits of the last call come from the layer's output sequence, a twin
    # of the returned state); in eval mode this is the same head on the same values
    logits = model.head(state[0][-1])  # (B, vocab)
    torch.testing.assert_close(logits, out.logits[:, -1])
    loss = F.cross_entropy(logits.float(), y[:, -1], reduction="sum")  # the sum of each row's J_t
    loss.backward()
    return torch.stack([h.grad[-1].norm(dim=-1) for h in hidden], dim=1)  # (B, T)


def sequences(tokens, count: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(tokens) - length - 1, (count,), generator=torch.Generator().manual_seed(seed))
    rows = torch.stack(
        [torch.from_numpy(tokens[s : s + length + 1].astype("int64")) for s in starts.tolist()]
    )
    return rows[:, :-1], rows[:, 1:]


def plot(curves: dict[str, torch.Tensor], path: Path, length: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"rnn": ("tab:red", "Elman RNN (tanh)"), "lstm": ("tab:blue", "LSTM")}
    fig, ax = plt.subplots(figsize=(8, 5))
    distance = torch.arange(length)
    for name, norms in curves.items():
        family, stage = name.split(" ", 1)
        colour, label = styles[family]
        median = norms.median(dim=0).values.flip(0)  # index = distance t - j
        low, high = norms.quantile(0.25, dim=0).flip(0), norms.quantile(0.75, dim=0).flip(0)
        dashes = "--" if stage == "random init" else "-"
        ax.plot(distance, median, dashes, color=colour, label=f"{label}, {stage}")
        ax.fill_between(distance, low, high, color=colour, alpha=0.12)
    ax.set_yscale("log")
    ax.set_xlabel("distance t - j (characters back from the predicted one)")
    ax.set_ylabel("||dJ_t / dh_j||  (median, 25-75% band)")
    ax.set_title("Vanishing gradients: how far back the loss at step t reaches")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100, help="sequence length (t + 1)")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=1500, help="0: random init only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not CORPUS.exists():
        print(f"skipped: {CORPUS} not found")
        return
    curves: dict[str, torch.Tensor] = {}
    spectral: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with contextlib.redirect_stdout(io.StringIO()):
            prepare(data=[str(CORPUS)], tokenizer="char", out=root / "data")
        dataset = load_prepared(root / "data")
        x, y = sequences(dataset.split("val"), args.sequences, args.length, args.seed)
        for family in ("rnn", "lstm"):
            torch.manual_seed(args.seed)
            _, config = preset_config(family, **SHAPE)
            model = build_model(family, {**config, "vocab_size": dataset.tokenizer.vocab_size})
            stages = [("random init", model)]
            if args.train_steps:
                with contextlib.redirect_stdout(io.StringIO()):
                    pretrain(
                        data=root / "data",
                        out=root / family,
                        model=family,
                        **SHAPE,
                        max_steps=args.train_steps,
                        eval_every=args.train_steps,
                        seed=args.seed,
                        progress=False,
                        as_json=True,
                    )
                stages.append(("trained", Run(root / family).load_model("last")))
            for stage, net in stages:
                name = f"{family} {stage}"
                curves[name] = gradient_norms(net, x, y).detach()
                if family == "rnn":
                    spectral[name] = torch.linalg.matrix_norm(net.recurrence.weight_hh_l0, ord=2).item()
                print(f"measured {name}", file=sys.stderr)

    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "vanishing_gradients.png"
    plot(curves, png, args.length)
    t = args.length - 1
    medians = {name: norms.median(dim=0).values for name, norms in curves.items()}  # index j
    rows = [[d, *(f"{medians[name][t - d].item():.2e}" for name in curves)] for d in SHOWN if d <= t]
    print(table(rows, ["t - j", *curves]))
    for name, value in spectral.items():
        print(f"{name}: largest singular value of W_ah = {value:.3f}")
    decay = {
        name: (m[t - min(50, t)] / m[t]).item() for name, m in medians.items()
    }  # ||dJ/dh_{t-50}|| / ||dJ/dh_t||
    for name, ratio in decay.items():
        print(f"{name}: gradient 50 steps back / at the last step = {ratio:.2e}")
    path = write_result(
        "vanishing_gradients",
        {
            "settings": {**vars(args), **SHAPE},
            "median_gradient_norm_by_distance": {
                name: [medians[name][t - d].item() for d in range(t + 1)] for name in curves
            },
            "ratio_50_back_to_last": decay,
            "elman_w_ah_largest_singular_value": spectral,
            "plot": str(png.relative_to(Path(__file__).parent.parent)),
        },
    )
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
