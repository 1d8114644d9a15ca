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
with masked-token accuracy beside the loss), whether it writes a target for a source (``lm_kind``
"seq2seq": batches of source/target pairs from a prepared seq2seq dataset, ``recipe_seq2seq.py``),
how to describe itself and how many parameters it has.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import CheckpointError, TokenizerError, UserInputError
from lmforge.hardware import resolve_device, resolve_precision
from lmforge.models.loss import perplexity
from lmforge.parallel.launch import Parallelism
from lmforge.train import distributed
from lmforge.train.config import TrainConfig, check_bounds
from lmforge.train.model_settings import ModelSettings
from lmforge.train.objectives import (
    CarriedStateLoss,
    Objective,
    language_model_loss,
    masked_language_model_loss,
)

# seconds between redraws of loss.png during training (recipe._train); the last is always drawn
PLOT_INTERVAL_S = 30.0


@dataclass
class PretrainJob:
    """Everything checked and built, nothing written yet."""

    run_path: Path
    resuming: bool
    overwrite: bool
    model_label: str  # the preset name, or the family of a resumed run
    family: str
    net: nn.Module
    dataset: Any  # data.shards.PreparedDataset; a seq2seq model's: data.seq2seq_shards.Seq2SeqDataset
    data_path: Path
    config: TrainConfig
    extra_config: dict[str, Any] = field(default_factory=dict)  # written to config.json as is
    mixture: list[Any] | None = None  # data.mixture.MixtureEntry per source, when --data mixes several
    datasets: list[Any] = field(default_factory=list)  # the PreparedDataset of each mixture entry
    parallel: Parallelism = field(default_factory=Parallelism)  # how torchrun's processes share it
    notes: list[str] = field(default_factory=list)  # lines for the user before training (truncation)

    def warnings(self) -> list[str]:
        """What the user should know before a long run: bf16 asked for where it is emulated, and
        the notes of the plan (seq2seq pairs longer than the model's limits)."""
        from lmforge.hardware import EMULATED_BF16_SLOWDOWN, bf16_is_emulated

        device = resolve_device(self.config.device)
        if resolve_precision(self.config.precision, device) == "bf16" and bf16_is_emulated(device):
            return [
                f"warning: this {device.type} has no bf16 hardware: bf16 is emulated, about "
                f"{EMULATED_BF16_SLOWDOWN}x slower than --precision fp32",
                *self.notes,
            ]
        return list(self.notes)

    def plain_copy(self) -> nn.Module:
        """A new, unspread model of this job's shape (to read a whole checkpoint into)."""
        from lmforge.models.registry import build_model

        return build_model(self.family, self.net.config.to_dict())

    def describe(self) -> list[str]:
        """The two header lines ``pretrain`` prints before training."""
        net, config = self.net, self.config
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
        if net.lm_kind == "seq2seq":
            from lmforge.recipe_seq2seq import describe_data

            source = describe_data(self.dataset, self.data_path)
        else:
            tokenizer = self.dataset.tokenizer
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
            f"training on {device} in {resolve_precision(config.precision, device)} for {budget}"
            + self._spread(),
        ]

    def _spread(self) -> str:
        from lmforge.parallel.launch import launched_world_size

        world = launched_world_size()
        return f", {world} processes, --parallel {self.parallel}" if world > 1 else ""


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
    from lmforge.models.registry import PRESETS, check_settings, preset_config, preset_training
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
        train.setdefault("parallel", "none")  # how to spread the run is this launch's choice, not the run's
        if "max_steps" not in train and "max_time" not in train:
            train.update(max_steps=saved["train"]["max_steps"], max_time=saved["train"]["max_time"])
        config = TrainConfig.from_saved(saved["train"], **train)
        run_path, label = run.path, family
    else:
        if data is None or out is None:
            raise UserInputError("give --data DIR (from `lmforge prepare`) and --out RUN, or --resume RUN")
        model = model or "gpt-nano"
        config = TrainConfig(**{**preset_training(model, str(train.get("parallel", "none"))), **train})
        preset, run_path, label = model, Path(out), model
    config.validate()

    entries = parse_mixture(data)
    from lmforge.recipe_seq2seq import check_data_kind, family_is_seq2seq, plan_seq2seq

    if resume is None and model not in PRESETS:
        try:
            preset_config(model)  # names the presets
        except ValueError as error:
            raise UserInputError(str(error)) from None
    wanted = family if resume is not None else PRESETS[model][0]
    if check_data_kind(entries[0].path, family_is_seq2seq(wanted), label):  # pairs: recipe_seq2seq.py
        settings = (family, model_config) if resume is not None else None
        return plan_seq2seq(
            entries,
            config,
            label=label,
            preset=preset,
            run_path=run_path,
            shape=shape,
            overwrite=overwrite,
            resume=resume,
            saved=saved if resume is not None else None,
            settings=settings,
        )
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
    net, parallel = build_checked(family, model_config, config)
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
        parallel,
    )


def build_checked(
    family: str,
    model_config: dict[str, Any],
    config: TrainConfig,
    row_length: Callable[[nn.Module], int] | None = None,
) -> tuple[nn.Module, Parallelism]:
    """The model, after checking its sketch (memory, parallelism, checkpointing); ``row_length``
    (sketch -> tokens per batch row) sizes the memory check where rows are not ``block_size`` long."""
    from lmforge.models.registry import build_model, build_sketch
    from lmforge.train.transforms import check_checkpointable

    try:
        sketch = build_sketch(family, model_config)  # shapes only: no memory, whatever the sizes asked for
        check_memory(sketch, config, row_length(sketch) if row_length is not None else None)
        parallel = check_parallel(sketch, config)
        if config.activation_checkpointing:
            check_checkpointable(sketch)  # an LSTM has no blocks to recompute: one line, now
        torch.manual_seed(config.seed)  # the initial weights, so the same --seed gives the same run
        net = build_model(family, model_config)
    except (ValueError, TypeError) as error:
        raise UserInputError(f"bad model settings: {error}") from None
    return net, parallel


def check_parallel(sketch: nn.Module, config: TrainConfig) -> Parallelism:
    """``--parallel`` read and checked against the model and torchrun's world size, on every rank
    alike and before any process group exists, so a refusal ends every rank at once."""
    from lmforge.parallel.launch import launched_world_size, parse_parallel, resolve_parallel

    parallel = resolve_parallel(parse_parallel(config.parallel))
    world = launched_world_size()
    if parallel.tensor > 1:
        from lmforge.parallel.tensor import check_tensor_parallel

        check_tensor_parallel(sketch, parallel.tensor, sequence_parallel=parallel.sequence_parallel)
        if parallel.sequence_parallel and sketch.config.block_size % parallel.tensor:
            raise UserInputError(
                f"sequence parallelism splits each window of {sketch.config.block_size} tokens over "
                f"{parallel.tensor} ranks; choose a --block-size divisible by {parallel.tensor}"
            )
    if world > 1 and world % parallel.tensor == 0:
        data_ranks = world // parallel.tensor
        if config.batch_size % data_ranks:
            raise UserInputError(
                f"--batch-size {config.batch_size} does not split evenly over {data_ranks} data-parallel "
                f"processes; choose a multiple of {data_ranks} (it is the batch of all processes together)"
            )
    if parallel.data != "none" and getattr(sketch, "carries_state", False) and parallel.data != "ddp":
        raise UserInputError("a recurrent model trains with --parallel ddp (it is small; nothing to shard)")
    return parallel


def _saved_mixture(saved: dict[str, Any]) -> list[str]:
    """The ``--data`` of a run, read back from its config.json: the directory, or each DIR:WEIGHT."""
    if "mixture" not in saved:
        return [saved["path"]]
    return [f"{source['path']}:{source['weight']!r}" for source in saved["mixture"]]


def check_memory(sketch: nn.Module, config: TrainConfig, block_size: int | None = None) -> None:
    """Refuse a model and step that clearly cannot fit in memory (``resources.py``), before the
    model is built for real: ``sketch`` is the model on the meta device; ``block_size`` the tokens
    of a batch row (default the model's)."""
    from lmforge.resources import check_fits, training_estimate

    device = resolve_device(config.device)
    block_size = block_size or sketch.config.block_size
    estimate = training_estimate(
        sketch,
        batch_size=config.batch_size,
        block_size=block_size,
        eval_batches=config.eval_batches,
        optimizer=config.optimizer,
        half_precision=resolve_precision(config.precision, device) != "fp32",
        checkpointing=config.activation_checkpointing,
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
    seed = config.seed  # the global batch; under data parallelism each rank reads its rows of it
    masked = job.net.lm_kind == "masked"
    if job.net.lm_kind == "seq2seq":  # pairs, bucketed by length; the loss over the target tokens
        from lmforge import recipe_seq2seq

        sampler, objective = recipe_seq2seq.training_batches(job), language_model_loss
    elif job.net.carries_state:  # consecutive windows of parallel streams
        sampler = StreamSampler(job.dataset.split("train"), config.batch_size, window)
        objective = CarriedStateLoss()
    elif job.mixture:  # each row drawn from a source with probability its weight (data/mixture.py)
        from lmforge.data.mixture import MixtureSampler

        sampler = MixtureSampler(
            [source.split("train") for source in job.datasets],
            [entry.weight for entry in job.mixture],
            config.batch_size,
            window,
            seed,
            tokenizer=job.dataset.tokenizer if masked else None,
        )
        objective = masked_language_model_loss if masked else language_model_loss
    elif masked:  # [CLS] window [SEP], 15% masked; the loss counts masked tokens only
        from lmforge.data.masking import MaskedWindowSampler

        tokens = job.dataset.split("train")
        sampler = MaskedWindowSampler(tokens, job.dataset.tokenizer, config.batch_size, window, seed)
        objective = masked_language_model_loss
    else:
        tokens = job.dataset.split("train")
        sampler, objective = WindowSampler(tokens, config.batch_size, window, seed=seed), language_model_loss
    if distributed.data_parallel_size() > 1:  # the global batch, of which this rank reads its rows
        sampler = distributed.RankSlice(
            sampler, distributed.data_parallel_rank(), distributed.data_parallel_size()
        )
    return sampler, objective


def fixed_eval_set(job: PretrainJob) -> list[Any]:
    """The same validation windows at every evaluation, so the curve compares like with like (for a
    masked LM also the same masking, whatever the run's seed, so runs compare with each other).
    For a mixture: per source, its rows of a fixed mixture of the val splits (``mixed_eval_batches``)."""
    from lmforge.data.batching import random_windows

    config, window = job.config, job.net.config.block_size
    if job.net.lm_kind == "seq2seq":
        from lmforge import recipe_seq2seq

        return recipe_seq2seq.fixed_eval_set(job)
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
    """Train ``job`` into its run directory; returns the summary ``pretrain`` prints. Under torchrun
    this starts the process group (``parallel.setup``) and ends it when training ends."""
    from lmforge.parallel import launch as parallel

    mesh = parallel.setup(job.parallel, resolve_device(job.config.device), timeout_s=job.config.dist_timeout)
    try:
        return _run(job, mesh, progress)
    except Exception as error:
        lost = parallel.lost_contact(error, job.config.dist_timeout) if mesh is not None else None
        if lost is None:
            raise
        raise lost from None
    finally:
        if mesh is not None:
            parallel.teardown()


def _run(job: PretrainJob, mesh, progress: bool) -> dict[str, Any]:
    from lmforge.run import Run

    main = distributed.is_main_process()
    created, failure = False, None
    if job.resuming:
        run = Run.open(job.run_path)
    elif main:
        try:
            run = Run.create(job.run_path, overwrite=job.overwrite)
            created = True
        except BaseException as error:  # the others must not wait for rank 0 in the next collective
            failure = error
    else:
        run = Run(job.run_path)
    if not distributed.all_agree(failure is None):
        if failure is not None:
            raise failure
        raise UserInputError(f"rank 0 could not create {job.run_path}; see its message")
    with run.removed_unless_saved(created):
        return _train(job, run, mesh, progress)


def _train(job: PretrainJob, run, mesh, progress: bool) -> dict[str, Any]:
    from lmforge.parallel import checkpoint as dist_checkpoint
    from lmforge.train.evaluation import grouped_losses, loss_and_accuracy, mean_loss
    from lmforge.train.metrics import MetricsLog, plot_losses
    from lmforge.train.optim import describe_optimizer
    from lmforge.train.trainer import Trainer
    from lmforge.train.transforms import ready_for_training

    net, config = job.net, job.config
    main = distributed.is_main_process()
    sharded = mesh is not None and job.parallel.sharded
    if main:
        if not job.resuming and net.lm_kind == "seq2seq":
            from lmforge.recipe_seq2seq import save_tokenizers

            save_tokenizers(run, job.dataset)
        elif not job.resuming:
            run.save_tokenizer(job.dataset.tokenizer)
        run.write_config(
            {
                "family": job.family,
                "model": net.config.to_dict(),
                "train": dataclasses.asdict(config),
                **job.extra_config,
            }
        )
    if job.resuming and not sharded:
        run.load_weights(net, "last")  # before any transform: a plain model takes plain tensors
    train_model, transforms, device = ready_for_training(net, config, parallel=job.parallel, mesh=mesh)
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

    def save(tag: str, model: nn.Module, state: dict | None) -> None:
        which = "best" if tag == "best" else "last"
        if sharded:  # every rank takes part in gathering the weights and writing the shards
            tensors, ties = dist_checkpoint.full_state(model)
            if state is not None:
                dist_checkpoint.save(run.path / dist_checkpoint.DCP_DIR, model, trainer.optimizer)
                state = {**state, "optimizer": None, "sharded": dist_checkpoint.DCP_DIR}
            if main:
                run.save_tensors(tensors, ties, which)
        elif main:
            run.save_weights(net, which)  # the plain model: no wrapper's names
        if main and state is not None:
            run.save_train_state(state)

    def redraw() -> None:
        if main:
            title = f"{run.path.name}: {job.family}, {net.num_parameters():,} parameters"
            plot_losses(run.metrics_path, run.plot_path, title=title)
            drawn[0] = time.monotonic()

    drawn = [time.monotonic()]  # the first in-training redraw after PLOT_INTERVAL_S, not at step 0

    def redraw_now_and_then() -> None:
        """A redraw costs about half a second (the first, with matplotlib's import, two), taken from
        a --max-time budget: at most one per PLOT_INTERVAL_S (none at step 0), and one at the end."""
        if time.monotonic() - drawn[0] >= PLOT_INTERVAL_S:
            redraw()

    trainer = Trainer(
        train_model,
        config,
        batches,
        evaluate=evaluate,
        save=save,
        log=metrics.write if metrics else None,
        on_eval=redraw_now_and_then,
        progress=progress and sys.stderr.isatty(),
        objective=objective,
    )
    if job.resuming:
        state = run.load_train_state()
        if state.get("sharded"):
            dist_checkpoint.load(run.path / state["sharded"], train_model, trainer.optimizer)
        elif sharded:  # a run saved whole, now spread: every rank takes its part of the whole
            plain = job.plain_copy()
            run.load_weights(plain, "last")
            dist_checkpoint.load_whole(
                train_model, trainer.optimizer, plain.state_dict(), state["optimizer"], plain
            )
            state = {**state, "optimizer": None}
        trainer.load_state_dict(state)
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
        "optimizer": describe_optimizer(trainer.optimizer),
        "precision": trainer.precision,
        "processes": distributed.world_size(),
        "plot": str(run.plot_path),
    }
    if job.mixture:  # Table 2.2 of GPT-3: what each source contributed, in tokens and in epochs
        from lmforge.data.mixture import sources_summary

        summary["sources"] = sources_summary(job.mixture, job.datasets, batches.tokens_seen, last_eval)
    return summary
