"""The pretraining recipe as a library: from a model choice, a prepared dataset and settings to a
run directory. ``lmforge pretrain`` only parses flags into these calls and prints what they return.
It sits on the floor of ``run.py`` (it writes run directories), above ``train/`` (which never does).

    job = plan_pretraining(data="data/shakespeare-char", out="runs/gpt", model="gpt-nano",
                           train={"max_time": 60})          # checks everything, builds the model
    print(job.describe())                                    # what is about to happen
    summary = run_pretraining(job)                           # trains, checkpoints, plots

``plan_pretraining`` does every check before anything is written: resume compatibility (shape,
tokenizer, training state), settings merged with the run's own (a flag the user gave wins; one
not given keeps the run's value), flags of another family, a split shorter than a window.
``run_pretraining`` creates the run directory, applies the model transforms (``transforms.py``),
drives the ``Trainer`` with the family's objective and batch source, and removes a directory it
created if training fails before the first checkpoint (``Run.removed_unless_saved``), so a failed
start leaves nothing behind.

Nothing here names a model family: the model says whether it carries state between windows
(``carries_state``: recurrent models read parallel streams with ``CarriedStateLoss``, the others
random windows with the plain LM loss), whether it predicts masked tokens (``lm_kind``
"masked": [CLS] window [SEP] rows 15% masked, evaluated on a fixed masking of the validation split
with masked-token accuracy beside the loss), how to describe itself and how many parameters it has.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import CheckpointError, TokenizerError, UserInputError
from lmforge.hardware import resolve_device, resolve_precision
from lmforge.models.loss import perplexity
from lmforge.train import distributed
from lmforge.train.config import TrainConfig, check_bounds
from lmforge.train.model_settings import ModelSettings
from lmforge.train.objectives import (
    CarriedStateLoss,
    Objective,
    language_model_loss,
    masked_language_model_loss,
)


@dataclass
class PretrainJob:
    """Everything checked and built, nothing written yet."""

    run_path: Path
    resuming: bool
    overwrite: bool
    model_label: str  # the preset name, or the family of a resumed run
    family: str
    net: nn.Module
    dataset: Any  # data.shards.PreparedDataset
    data_path: Path
    config: TrainConfig
    extra_config: dict[str, Any] = field(default_factory=dict)  # written to config.json as is
    mixture: list[Any] | None = None  # data.mixture.MixtureEntry per source, when --data mixes several
    datasets: list[Any] = field(default_factory=list)  # the PreparedDataset of each mixture entry

    def warnings(self) -> list[str]:
        """What the user should know before a long run: bf16 asked for where it is emulated."""
        from lmforge.hardware import EMULATED_BF16_SLOWDOWN, bf16_is_emulated

        device = resolve_device(self.config.device)
        if resolve_precision(self.config.precision, device) == "bf16" and bf16_is_emulated(device):
            return [
                f"warning: this {device.type} has no bf16 hardware: bf16 is emulated, about "
                f"{EMULATED_BF16_SLOWDOWN}x slower than --precision fp32"
            ]
        return []

    def describe(self) -> list[str]:
        """The two header lines ``pretrain`` prints before training."""
        net, config, tokenizer = self.net, self.config, self.dataset.tokenizer
        device = resolve_device(config.device)
        budget = " and ".join(
            filter(
                None,
                [
                    config.max_steps and f"{config.max_steps} steps",
                    config.max_time and f"{config.max_time:g} s",
                ],
            )
        )
        train, val = len(self.dataset.split("train")), len(self.dataset.split("val"))
        source = f"{self.data_path} ({train:,} train / {val:,} val tokens, vocab {tokenizer.vocab_size})"
        if self.mixture:
            parts = [
                f"{entry.name} {entry.weight:.0%} ({data.num_tokens('train'):,} train tokens)"
                for entry, data in zip(self.mixture, self.datasets)
            ]
            source = f"{' + '.join(parts)}, vocab {tokenizer.vocab_size}"
        return [
            f"model: {self.model_label} {net.describe()}: {net.num_parameters():,} parameters "
            f"({net.num_parameters(exclude_embeddings=True):,} without embeddings)",
            f"data: {source}; "
            f"training on {device} in {resolve_precision(config.precision, device)} for {budget}",
        ]


def plan_pretraining(
    *,
    data: Path | str | list[str] | None = None,
    out: Path | None = None,
    model: str | None = None,
    shape: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    resume: Path | None = None,
    overwrite: bool = False,
) -> PretrainJob:
    """Check and build a pretraining job. ``shape`` and ``train`` hold only the settings the user
    gave (``ModelSettings`` and ``TrainConfig`` field names); the rest come from the preset and the
    dataclass defaults, or, with ``resume``, from the run. ``model`` defaults to gpt-nano. ``data`` is
    a prepared directory, or several as ``DIR:WEIGHT`` (a mixture, ``data/mixture.py``)."""
    from lmforge.data.mixture import check_one_tokenizer, parse_mixture
    from lmforge.data.shards import load_prepared
    from lmforge.models.registry import build_model, check_settings, preset_config
    from lmforge.run import Run, directory_fingerprint

    shape, train = dict(shape or {}), dict(train or {})
    check_bounds(ModelSettings(**shape))
    if resume is not None:
        run = Run.open(resume, flag="--resume")
        saved = run.read_config()
        if "train" not in saved or "data" not in saved or not run.state_path.exists():
            raise CheckpointError(
                f"{resume} holds weights but no training state to resume (it was converted or "
                "written by another command); start a new run with --data and --out instead"
            )
        family, model_config = saved["family"], dict(saved["model"])
        changed = [k for k, v in shape.items() if v != model_config.get(k)]
        if changed:
            raise CheckpointError(
                f"cannot resume {resume} with a different model shape ({', '.join(changed)} differ from "
                "the run); start a new run with --out instead"
            )
        preset = saved.get("preset", family)
        if model is not None and model not in (family, preset):
            raise CheckpointError(
                f"{resume} holds a {family} model, not --model {model}; leave out --model to resume it"
            )
        if out is not None and Path(out).resolve() != run.path.resolve():
            raise UserInputError("--resume continues the run in its own directory; leave out --out")
        data = data or _saved_mixture(saved["data"])
        if "max_steps" not in train and "max_time" not in train:
            train.update(max_steps=saved["train"]["max_steps"], max_time=saved["train"]["max_time"])
        config = TrainConfig.from_saved(saved["train"], **train)
        run_path, label = run.path, family
    else:
        if data is None or out is None:
            raise UserInputError("give --data DIR (from `lmforge prepare`) and --out RUN, or --resume RUN")
        config = TrainConfig(**train)
        model = model or "gpt-nano"
        preset, run_path, label = model, Path(out), model
    config.validate()

    entries = parse_mixture(data)
    datasets = [load_prepared(entry.path) for entry in entries]
    dataset, data = datasets[0], entries[0].path
    tokenizer = dataset.tokenizer
    tokenizer_id = directory_fingerprint(dataset.tokenizer_dir)
    fingerprints = [tokenizer_id] + [directory_fingerprint(other.tokenizer_dir) for other in datasets[1:]]
    check_one_tokenizer(entries, datasets, fingerprints)
    if resume is not None and saved["data"].get("tokenizer_fingerprint") != tokenizer_id:
        raise CheckpointError(
            f"{data} was tokenized with a different tokenizer than the run {resume}; use the run's data"
        )
    mixture = entries if len(entries) > 1 else None  # a mixture of one is that dataset, read as always
    if resume is not None and len(saved["data"].get("mixture", [None])) != len(entries):
        raise CheckpointError(
            f"{resume} was trained on {len(saved['data'].get('mixture', [None]))} data source(s), not "
            f"{len(entries)}; its data position cannot carry over: leave out --data to resume it"
        )
    if resume is None:
        check_settings(model, shape)
        try:
            family, model_config = preset_config(model, **shape)
        except ValueError as error:
            raise UserInputError(str(error)) from None
        model_config["vocab_size"] = tokenizer.vocab_size
    try:
        with torch.device("meta"):  # shapes only: no memory, whatever the sizes asked for
            sketch = build_model(family, model_config)
        check_memory(sketch, config)
        torch.manual_seed(config.seed)  # the initial weights, so the same --seed gives the same run
        net = build_model(family, model_config)
    except (ValueError, TypeError) as error:
        raise UserInputError(f"bad model settings: {error}") from None
    if net.lm_kind == "masked":
        from lmforge.data.masking import _special_ids

        try:
            _special_ids(tokenizer)  # [MASK], [CLS] and [SEP], or one line naming what is missing
        except TokenizerError as error:
            raise UserInputError(f"--model {label}: {error}") from None
    if mixture and net.carries_state:
        raise UserInputError(
            f"--model {label} carries its state from window to window through parallel streams of one "
            "dataset; a mixture is for the window models (gpt, bert, window): give one --data DIR"
        )
    window = net.config.block_size
    for entry, source in zip(entries, datasets):
        for name in ("train", "val"):
            if len(source.split(name)) <= window:
                raise UserInputError(
                    f"the {name} split of {entry.path} holds {len(source.split(name))} tokens, fewer than "
                    f"one window of block_size={window} + 1; lower --block-size or prepare more text"
                )
    extra = {
        "preset": preset,
        "data": {
            "path": str(Path(data).resolve()),
            "tokenizer_fingerprint": tokenizer_id,
            "tokenizer_kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
        },
    }
    if mixture:
        from lmforge.data.mixture import describe_mixture

        extra["data"]["mixture"] = describe_mixture(entries, datasets, fingerprints)
    return PretrainJob(
        run_path,
        resume is not None,
        overwrite,
        label,
        family,
        net,
        dataset,
        Path(data),
        config,
        extra,
        mixture,
        datasets,
    )


def _saved_mixture(saved: dict[str, Any]) -> list[str]:
    """The ``--data`` of a run, read back from its config.json: the directory, or each DIR:WEIGHT."""
    if "mixture" not in saved:
        return [saved["path"]]
    return [f"{source['path']}:{source['weight']!r}" for source in saved["mixture"]]


def check_memory(sketch: nn.Module, config: TrainConfig) -> None:
    """Refuse a model and step that clearly cannot fit in memory (``resources.py``), before the
    model is built for real: ``sketch`` is the model on the meta device."""
    from lmforge.resources import check_fits, training_estimate

    device = resolve_device(config.device)
    block_size = sketch.config.block_size
    estimate = training_estimate(
        sketch,
        batch_size=config.batch_size,
        block_size=block_size,
        eval_batches=config.eval_batches,
        optimizer=config.optimizer,
        half_precision=resolve_precision(config.precision, device) != "fp32",
    )
    check_fits(
        estimate,
        flags=f"--block-size {block_size} with --batch-size {config.batch_size}",
        what=f"a model of {sketch.num_parameters():,} parameters and one training step",
        device=device,
        hint="lower --block-size or --batch-size (or the model's size)",
    )


def training_batches(job: PretrainJob) -> tuple[Any, Objective]:
    """The batch source and objective the model's kind calls for; each rank reads its own part."""
    from lmforge.data.batching import WindowSampler
    from lmforge.data.streams import StreamSampler

    config, window = job.config, job.net.config.block_size
    tokens = job.dataset.split("train")
    if job.net.carries_state:  # consecutive windows of parallel streams; this rank's slice of them
        size = len(tokens) // distributed.world_size()
        tokens = tokens[distributed.rank() * size : (distributed.rank() + 1) * size]
        return StreamSampler(tokens, config.batch_size, window), CarriedStateLoss()
    seed = config.seed + distributed.rank()
    masked = job.net.lm_kind == "masked"
    if job.mixture:  # each row drawn from a source with probability its weight (data/mixture.py)
        from lmforge.data.mixture import MixtureSampler

        sampler = MixtureSampler(
            [source.split("train") for source in job.datasets],
            [entry.weight for entry in job.mixture],
            config.batch_size,
            window,
            seed,
            tokenizer=job.dataset.tokenizer if masked else None,
        )
        return sampler, masked_language_model_loss if masked else language_model_loss
    if masked:  # [CLS] window [SEP], 15% masked; the loss counts masked tokens only
        from lmforge.data.masking import MaskedWindowSampler

        sampler = MaskedWindowSampler(tokens, job.dataset.tokenizer, config.batch_size, window, seed)
        return sampler, masked_language_model_loss
    sampler = WindowSampler(tokens, config.batch_size, window, seed=seed)
    return sampler, language_model_loss


def fixed_eval_set(job: PretrainJob) -> list[Any]:
    """The same validation windows at every evaluation, so the curve compares like with like (for a
    masked LM also the same masking, whatever the run's seed, so runs compare with each other).
    For a mixture: per source, its rows of a fixed mixture of the val splits (``mixed_eval_batches``)."""
    from lmforge.data.batching import random_windows

    config, window = job.config, job.net.config.block_size
    if job.mixture:
        from lmforge.data.masking import EVAL_MASKING_SEED
        from lmforge.data.mixture import mixed_eval_batches

        masked = job.net.lm_kind == "masked"
        return mixed_eval_batches(
            [source.split("val") for source in job.datasets],
            [entry.weight for entry in job.mixture],
            config.batch_size,
            window,
            config.eval_batches,
            seed=EVAL_MASKING_SEED if masked else config.seed + 1,
            tokenizer=job.dataset.tokenizer if masked else None,
        )
    generator = torch.Generator().manual_seed(config.seed + 1)
    val = job.dataset.split("val")
    if job.net.lm_kind == "masked":
        from lmforge.data.masking import masked_eval_batches

        return masked_eval_batches(val, job.dataset.tokenizer, config.batch_size, window, config.eval_batches)
    windows = [random_windows(val, config.batch_size, window, generator) for _ in range(config.eval_batches)]
    return [{"input_ids": x, "labels": y} for x, y in windows]


def run_pretraining(job: PretrainJob, *, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into its run directory; returns the summary ``pretrain`` prints."""
    from lmforge.run import Run

    main = distributed.is_main_process()
    created = False
    if job.resuming:
        run = Run.open(job.run_path)
    elif main:
        run = Run.create(job.run_path, overwrite=job.overwrite)
        created = True
    else:
        run = Run(job.run_path)
    with run.removed_unless_saved(created):
        return _train(job, run, progress)


def _train(job: PretrainJob, run, progress: bool) -> dict[str, Any]:
    from lmforge.train.evaluation import grouped_losses, loss_and_accuracy, mean_loss
    from lmforge.train.metrics import MetricsLog, plot_losses
    from lmforge.train.trainer import Trainer
    from lmforge.train.transforms import ready_for_training

    net, config = job.net, job.config
    main = distributed.is_main_process()
    if main:
        if not job.resuming:
            run.save_tokenizer(job.dataset.tokenizer)
        run.write_config(
            {
                "family": job.family,
                "model": net.config.to_dict(),
                "train": dataclasses.asdict(config),
                **job.extra_config,
            }
        )
    train_model, transforms, device = ready_for_training(net, config)
    batches, objective = training_batches(job)
    eval_set = fixed_eval_set(job)
    last_eval: dict[str, float] = {}

    def evaluate(model: nn.Module) -> float | dict[str, float]:
        if job.mixture:  # the mixture's loss, and each source's beside it (val_loss_<name>)
            groups = dict(zip((entry.name for entry in job.mixture), eval_set))
            last_eval.update(grouped_losses(model, groups, masked=net.lm_kind == "masked"))
            return dict(last_eval)
        if net.lm_kind != "masked":
            return mean_loss(model, eval_set)[0]
        last_eval.update(loss_and_accuracy(model, eval_set))  # masked-token loss and accuracy
        return dict(last_eval)

    resume_step = run.load_train_state()["step"] if job.resuming else None
    metrics = MetricsLog(run.metrics_path, resume_step=resume_step) if main else None

    def save(tag: str, _model: nn.Module, state: dict | None) -> None:
        if not main:
            return
        run.save_weights(net, "best" if tag == "best" else "last")  # the plain model: no wrapper's names
        if state is not None:
            run.save_train_state(state)

    def redraw() -> None:
        if main:
            title = f"{run.path.name}: {job.family}, {net.num_parameters():,} parameters"
            plot_losses(run.metrics_path, run.plot_path, title=title)

    trainer = Trainer(
        train_model,
        config,
        batches,
        evaluate=evaluate,
        save=save,
        log=metrics.write if metrics else None,
        on_eval=redraw,
        progress=progress and sys.stderr.isatty(),
        objective=objective,
    )
    if job.resuming:
        run.load_weights(net, "last")
        trainer.load_state_dict(run.load_train_state())
    try:
        result = trainer.fit()
    finally:
        if metrics:
            metrics.close()
    redraw()
    summary = {
        "run": str(run.path),
        "steps": result.steps,
        "tokens": result.tokens,
        "elapsed_s": round(result.elapsed_s, 2),
        "tokens_per_s": round(result.tokens / max(result.elapsed_s, 1e-9), 1),
        "train_loss": result.last_train_loss,
        "first_val_loss": result.first_val_loss,
        "val_loss": result.last_val_loss,
        "best_val_loss": result.best_val_loss,
        "val_perplexity": perplexity(result.last_val_loss) if result.last_val_loss is not None else None,
        **({"val_accuracy": last_eval["accuracy"]} if "accuracy" in last_eval else {}),
        "parameters": net.num_parameters(),
        "interrupted": result.interrupted,
        "transforms": [t.name for t in transforms],
        "plot": str(run.plot_path),
    }
    if job.mixture:  # Table 2.2 of GPT-3: what each source contributed, in tokens and in epochs
        from lmforge.data.mixture import sources_summary

        summary["sources"] = sources_summary(job.mixture, job.datasets, batches.tokens_seen, last_eval)
    return summary
