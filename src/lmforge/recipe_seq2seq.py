"""The seq2seq side of the pretraining recipe (``recipe.py``): an encoder-decoder model on a prepared
seq2seq dataset (``lmforge prepare --task seq2seq``, data/seq2seq_shards.py).

    job = plan_pretraining(data="data/copy", out="runs/copy", model="rnn-attn", train={"max_steps": 400})
    -> recipe.py sees a seq2seq dataset (meta.json "task") and hands the plan to ``plan_seq2seq``:
       vocab_size = the target tokenizer's size (source_vocab_size and shared_vocab false when the
       sides have their own tokenizers), decoder_start_token_id = the target's start id (bos, else
       eos: data/seq2seq_batches.py ``target_special_ids``); batches of pairs, bucketed by length
       (``Seq2SeqBatches``), the same validation pairs at every evaluation (``fixed_eval_batches``),
       and the plain language-model loss over the target tokens (labels -100 on padding).

Which branch a run takes is decided by the model's ``lm_kind`` ("seq2seq") and the dataset's task,
never by a family name; a seq2seq model on a language-model dataset, or the other way round, is
one line naming both. Sources longer than the model's ``context_limit`` and targets longer than its
``target_limit`` are truncated (the pretrain header says how many); models without limits (the RNN)
read every pair whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import CheckpointError, DataError, UserInputError

SEQ2SEQ_MODELS = "an encoder-decoder preset (seq2seq-nano, rnn-attn, rnn-seq2seq)"


def plan_seq2seq(
    entries: list[Any],
    config: Any,
    *,
    label: str,
    preset: str,
    run_path: Path,
    shape: dict[str, Any],
    overwrite: bool,
    resume: Path | None,
    saved: dict[str, Any] | None,
    settings: tuple[str, dict[str, Any]] | None,
) -> Any:
    """``plan_pretraining``'s seq2seq branch (its settings already merged and checked): the dataset,
    the model with its vocabularies and start id from the tokenizers, the job. ``settings`` is the
    resumed run's (family, model config); None for a new run of the preset ``label``."""
    from lmforge.models.registry import check_settings, preset_config
    from lmforge.recipe import PretrainJob, build_checked

    data_path = Path(entries[0].path)
    dataset = load_pairs_dataset(data_path, mixture=len(entries) > 1)
    if resume is not None and saved is not None and settings is not None:
        check_resumable(dataset, saved, resume)
        family, model_config = settings
    else:
        check_settings(label, shape)
        try:
            family, model_config = preset_config(label, **shape)
        except ValueError as error:
            raise UserInputError(str(error)) from None
        model_config.update(vocabulary_settings(dataset))
    net, parallel = build_checked(family, model_config, config, lambda sketch: longest_row(dataset, sketch))
    return PretrainJob(
        run_path,
        resume is not None,
        overwrite,
        label,
        family,
        net,
        dataset,
        data_path,
        config,
        {"preset": preset, "data": extra_config(dataset, data_path)},
        parallel=parallel,
        notes=truncation_notes(dataset, net),
    )


def family_is_seq2seq(family: str) -> bool:
    """Whether a model family writes a target for a source (``lm_kind == "seq2seq"``)."""
    from lmforge.models.registry import model_class

    try:
        cls = model_class(family)
    except ValueError:  # not a family this lmforge knows: Run.load_model says so
        return False
    return cls.lm_kind == "seq2seq"


def check_data_kind(data_path: Path, seq2seq_model: bool, label: str) -> bool:
    """True when ``data_path`` is a seq2seq dataset; one line when the model and the data disagree."""
    from lmforge.data.seq2seq_shards import TASK, dataset_task

    task = dataset_task(data_path)
    if task is None:  # not a prepared dataset: the loaders say why
        return seq2seq_model
    seq2seq_data = task == TASK
    if seq2seq_model and not seq2seq_data:
        raise UserInputError(
            f"--model {label} is an encoder-decoder (it writes a target for a source), but {data_path} is "
            "a language-model dataset (one token stream); prepare source/target pairs with `lmforge "
            "prepare --task seq2seq --data PAIRS ...`, or choose a language model such as gpt-nano"
        )
    if seq2seq_data and not seq2seq_model:
        raise UserInputError(
            f"{data_path} holds source/target pairs (prepared with --task seq2seq), but --model {label} is a "
            f"language model that reads one token stream; choose {SEQ2SEQ_MODELS}"
        )
    return seq2seq_data


def tokenizer_dir(dataset: Any, side: str) -> Path:
    """Where a prepared seq2seq dataset keeps the tokenizer of ``side`` (source or target)."""
    return dataset.path / dataset.meta["tokenizers"][side]["path"]


def tokenizer_fingerprint(dataset: Any) -> str:
    """The target tokenizer's fingerprint, or, with two tokenizers, one over both."""
    from lmforge.run import directory_fingerprint

    target = directory_fingerprint(tokenizer_dir(dataset, "target"))
    if dataset.shared_tokenizer:
        return target
    source = directory_fingerprint(tokenizer_dir(dataset, "source"))
    return hashlib.sha256(f"source:{source}|target:{target}".encode()).hexdigest()


def run_tokenizer_fingerprint(run: Any) -> str:
    """The same fingerprint read from a run directory (``tokenizer/`` and ``source_tokenizer/``)."""
    from lmforge.run import directory_fingerprint

    target = directory_fingerprint(run.tokenizer_dir)
    if not run.source_tokenizer_dir.exists():
        return target
    source = directory_fingerprint(run.source_tokenizer_dir)
    return hashlib.sha256(f"source:{source}|target:{target}".encode()).hexdigest()


def vocabulary_settings(dataset: Any) -> dict[str, Any]:
    """The model settings the dataset's tokenizers fix: vocabulary sizes and the decoder's start id."""
    from lmforge.data.seq2seq_batches import target_special_ids

    target = dataset.target_tokenizer
    settings: dict[str, Any] = {
        "vocab_size": target.vocab_size,
        "decoder_start_token_id": target_special_ids(target).start,
    }
    if not dataset.shared_tokenizer:
        settings.update(shared_vocab=False, source_vocab_size=dataset.source_tokenizer.vocab_size)
    return settings


def load_pairs_dataset(data_path: Path, mixture: bool) -> Any:
    """The prepared seq2seq dataset, refusing a mixture and a split without pairs."""
    from lmforge.data.seq2seq_shards import load_seq2seq

    if mixture:
        raise UserInputError(
            "a seq2seq model trains on one prepared pairs dataset; a mixture of several (DIR:WEIGHT) is "
            "for language models: prepare the pairs of every source into one dataset"
        )
    dataset = load_seq2seq(data_path)
    for split in ("train", "val"):
        if dataset.num_pairs(split) == 0:
            raise DataError(
                f"the {split} split of {data_path} holds no pairs; training needs pairs in both splits "
                "(re-run `lmforge prepare --task seq2seq` with more pairs or another --val-fraction)"
            )
    return dataset


def check_resumable(dataset: Any, saved: dict[str, Any], resume: Path) -> None:
    """A resumed seq2seq run continues on pairs tokenized as before."""
    from lmforge.data.seq2seq_shards import TASK

    task = saved["data"].get("task")
    if task != TASK:
        raise CheckpointError(
            f"{resume} was trained on a language-model dataset; resume it with its own data"
        )
    if saved["data"].get("tokenizer_fingerprint") != tokenizer_fingerprint(dataset):
        raise CheckpointError(
            f"{dataset.path} was tokenized with a different tokenizer than the run {resume}; use the run's data"
        )


def limits(net: Any) -> tuple[int | None, int | None]:
    """(source limit, decoder-input limit) of a seq2seq model; None where it reads any length."""
    return getattr(net, "context_limit", None), getattr(net, "target_limit", None)


def longest_row(dataset: Any, net: Any) -> int:
    """The widest batch row a step can see (source, or target plus its start token), within the
    model's limits: what the memory check sizes activations by."""
    source_limit, target_limit = limits(net)
    source = int(dataset.meta.get("longest_source", 1))
    target = int(dataset.meta.get("longest_target", 1)) + 1
    if source_limit is not None:
        source = min(source, source_limit)
    if target_limit is not None:
        target = min(target, target_limit)
    return max(source, target, 1)


def truncation_notes(dataset: Any, net: Any) -> list[str]:
    """One line per side whose training rows exceed the model's limits (they are truncated)."""
    from lmforge.data.seq2seq_batches import length_report

    source_limit, target_limit = limits(net)
    if source_limit is None and target_limit is None:
        return []
    report = length_report(dataset.pairs("train"), source_limit, target_limit)
    notes = []
    for side, limit, what in (
        ("source", source_limit, "source limit"),
        ("target", target_limit, "target limit (start token included)"),
    ):
        if report[f"{side}s_truncated"]:
            notes.append(
                f"note: {report[f'{side}s_truncated']:,} of {report['pairs']:,} training {side}s do not fit the "
                f"model's {what} of {limit} tokens (the longest {side}: {report[f'longest_{side}']}); they are "
                "truncated"
            )
    return notes


def describe_data(dataset: Any, data_path: Path) -> str:
    """The data part of pretrain's header: pairs, tokens and vocabularies."""
    meta = dataset.meta
    target = dataset.target_tokenizer.vocab_size
    vocab = (
        f"vocab {target}"
        if dataset.shared_tokenizer
        else f"source vocab {dataset.source_tokenizer.vocab_size}, target vocab {target}"
    )
    return (
        f"{data_path} ({dataset.num_pairs('train'):,} train / {dataset.num_pairs('val'):,} val pairs, "
        f"{meta.get('train_source_tokens', 0):,} + {meta.get('train_target_tokens', 0):,} train tokens, {vocab})"
    )


def extra_config(dataset: Any, data_path: Path) -> dict[str, Any]:
    """The data entry of the run's config.json."""
    target = dataset.target_tokenizer
    data = {
        "task": "seq2seq",
        "path": str(Path(data_path).resolve()),
        "tokenizer_fingerprint": tokenizer_fingerprint(dataset),
        "tokenizer_kind": target.kind,
        "vocab_size": target.vocab_size,
        "shared_tokenizer": dataset.shared_tokenizer,
    }
    if not dataset.shared_tokenizer:
        data["source_vocab_size"] = dataset.source_tokenizer.vocab_size
    return data


def save_tokenizers(run: Any, dataset: Any) -> None:
    """The run's ``tokenizer/`` (the targets'), and ``source_tokenizer/`` when the sides differ."""
    run.save_tokenizer(dataset.target_tokenizer)
    if not dataset.shared_tokenizer:
        run.save_source_tokenizer(dataset.source_tokenizer)


def _ids(job: Any) -> Any:
    from lmforge.data.seq2seq_batches import TargetIds, target_special_ids

    ids = target_special_ids(job.dataset.target_tokenizer)
    return TargetIds(start=job.net.config.decoder_start_token_id, end=ids.end, pad=ids.pad)


def training_batches(job: Any) -> Any:
    """Bucketed batches of training pairs (the global batch; under data parallelism each rank
    reads its rows of it, ``distributed.RankSlice``)."""
    from lmforge.data.seq2seq_batches import Seq2SeqBatches

    source_limit, target_limit = limits(job.net)
    return Seq2SeqBatches(
        job.dataset.pairs("train"),
        job.config.batch_size,
        _ids(job),
        seed=job.config.seed,
        max_source_length=source_limit,
        max_target_length=target_limit,
    )


def fixed_eval_set(job: Any) -> list[dict[str, torch.Tensor]]:
    """The same validation pairs at every evaluation: ``eval_batches`` batches spread over the split."""
    from lmforge.data.seq2seq_batches import fixed_eval_batches

    source_limit, target_limit = limits(job.net)
    return fixed_eval_batches(
        job.dataset.pairs("val"),
        job.config.batch_size,
        _ids(job),
        job.config.eval_batches,
        max_source_length=source_limit,
        max_target_length=target_limit,
    )
