"""``lmforge pretrain``: train a language model from scratch on a prepared dataset.

    lmforge pretrain --data data/shakespeare-char --out runs/gpt --max-time 60                 # gpt-nano
    lmforge pretrain --data data/shakespeare-char --out runs/lstm --model lstm --max-time 60   # an LSTM

Every family trains through the same trainer. GPT and the window model read random windows
(``data/batching.py``); recurrent models (rnn, lstm, gru) read consecutive windows of parallel
streams and carry their hidden state from one to the next (``data/streams.py``, truncated BPTT).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Literal

from lmforge.errors import CheckpointError, UserInputError

SHAPE_FLAGS = (
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "pos_encoding",
    "norm",
    "mlp",
    "bias",
    "mlp_hidden",
    "hidden_size",
    "context",
    "direct",
    "activation",
    "tie_embeddings",
)


def pretrain(
    *,
    data: Path | None = None,
    out: Path | None = None,
    model: str = "gpt-nano",
    n_layer: int | None = None,
    n_head: int | None = None,
    n_embd: int | None = None,
    block_size: int | None = None,
    mlp_hidden: int | None = None,
    dropout: float | None = None,
    bias: bool | None = None,
    pos_encoding: Literal["learned", "sinusoidal", "rope"] | None = None,
    norm: Literal["layernorm", "rmsnorm"] | None = None,
    mlp: Literal["gelu", "gelu_exact", "swiglu"] | None = None,
    hidden_size: int | None = None,
    context: int | None = None,
    direct: bool | None = None,
    activation: Literal["tanh", "relu", "sigmoid"] | None = None,
    tie_embeddings: bool | None = None,
    order: int = 3,
    smoothing: Literal["mle", "add-k", "kn", "modified-kn", "stupid-backoff"] = "modified-kn",
    add_k: float = 1.0,
    discount: float | None = None,
    max_steps: int | None = None,
    max_time: float | None = None,
    batch_size: int = 12,
    grad_accum: int = 1,
    lr: float = 3e-3,
    min_lr: float | None = None,
    warmup_steps: int = 50,
    weight_decay: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    grad_clip: float = 1.0,
    optimizer: Literal["adamw", "sgd"] = "adamw",
    eval_every: int = 250,
    eval_batches: int = 20,
    log_every: int = 10,
    seed: int = 1337,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    compile: bool = False,
    device: str = "auto",
    resume: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    as_json: bool = False,
) -> dict:
    """Pretrain a model on a prepared dataset, writing a run directory.

    The run directory holds config.json, model.safetensors (last) and best/model.safetensors
    (best validation loss), train_state.pt for --resume, metrics.jsonl and loss.png. Ctrl-C
    saves a checkpoint and stops; `--resume RUN` continues exactly where it stopped.

    Args:
        data: a directory written by `lmforge prepare` (needs meta.json, train.bin, val.bin).
        out: the run directory to create.
        model: a preset. Transformers (family gpt): gpt-nano, gpt-mini, gpt2, gpt2-medium,
            gpt2-large, gpt2-xl. Classic models, one preset per family: window (fixed-window
            neural LM, Bengio et al. 2003), rnn (Elman RNN), lstm, gru, and ngram (counted, not
            trained; takes --order, --smoothing, --add-k, --discount). Each flag below names the
            families it applies to; a flag for another family is refused.
        n_layer: [gpt, rnn, lstm, gru] Transformer blocks, or stacked recurrent layers.
        n_head: [gpt] attention heads.
        n_embd: [all] width of the token embeddings (gpt: the model width).
        block_size: [all] gpt: the context, the longest input it reads. window, rnn, lstm, gru:
            the training window (for recurrent models, how far back truncated backpropagation
            through time reaches); they read inputs of any length.
        mlp_hidden: [gpt] MLP hidden width (default 4 x n_embd).
        dropout: [all] dropout probability.
        bias: [gpt] biases in linear layers and norms.
        pos_encoding: [gpt] position encoding: learned (GPT-2), sinusoidal (Vaswani et al.), rope
            (rotary).
        norm: [gpt] layernorm or rmsnorm.
        mlp: [gpt] gelu (GPT-2's tanh approximation), gelu_exact (the erf form of BERT and nanoGPT)
            or swiglu (Llama).
        hidden_size: [window, rnn, lstm, gru] tanh units of the window model; width of the
            recurrent state.
        context: [window] how many previous tokens each prediction sees (n).
        direct: [window] direct connections from the embeddings to the output (Bengio et al.).
        activation: [rnn] sigma of the Elman network: tanh, relu or sigmoid (sigmoid runs the
            Python loop, the others nn.RNN).
        tie_embeddings: [gpt, rnn, lstm, gru] share the output layer with the token embedding
            (recurrent models: needs n_embd == hidden_size; the default ties exactly then).
        order: [ngram] n, the tokens an n-gram spans (3: a trigram model).
        smoothing: [ngram] mle (plain counts: unseen n-grams get 0), add-k (Laplace with k=1),
            kn (interpolated Kneser-Ney), modified-kn (three discounts, Chen & Goodman) or
            stupid-backoff (fast scores that are not probabilities).
        add_k: [ngram] k of add-k smoothing.
        discount: [ngram] the Kneser-Ney discount D (default: estimated from the counts).
        max_steps: stop after this many optimizer steps.
        max_time: stop after this many seconds of training; the learning-rate schedule is laid
            over this budget. With both, whichever ends first.
        batch_size: sequences per micro-batch.
        grad_accum: micro-batches per optimizer step.
        lr: peak learning rate.
        min_lr: final learning rate of the cosine decay (default lr / 10).
        warmup_steps: optimizer steps of linear warm-up.
        weight_decay: AdamW weight decay, applied to matrices only.
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        grad_clip: clip the gradient norm to this value (0: no clipping).
        optimizer: adamw or sgd.
        eval_every: evaluate on validation batches every this many steps.
        eval_batches: validation batches per periodic evaluation (the same ones every time).
        log_every: refresh the progress line every this many steps (metrics.jsonl gets every step).
        seed: seeds initialisation, data order and dropout.
        precision: auto (bf16 where the hardware computes it natively: recent GPUs, CPUs with
            AVX-512 BF16 or AMX; else fp32), fp32, bf16 (autocast; emulated and about 8x slower than
            fp32 on CPUs without bf16 hardware, e.g. AVX2 Zen 3) or fp16 (autocast with loss
            scaling; GPU only).
        compile: compile the model with torch.compile (slower start, faster steps).
        device: auto, cpu, cuda or cuda:N.
        resume: continue the run in this directory (its model and settings; --data defaults to its data).
        overwrite: replace an existing --out directory.
        progress: show a progress bar.

    Examples:
        lmforge prepare --data ../shared/data/tinyshakespeare.txt --tokenizer char --out data/shakespeare-char
        lmforge pretrain --data data/shakespeare-char --out runs/shakespeare --max-time 60
        lmforge pretrain --resume runs/shakespeare --max-time 120
        lmforge pretrain --data data/shakespeare-char --out runs/lstm --model lstm --n-layer 2 --max-time 60
        lmforge pretrain --data data/shakespeare-char --out runs/window --model window --context 12 --max-time 60
    """
    if model == "ngram":  # counted, not trained: none of the trainer's flags apply
        from lmforge.commands.pretrain_ngram import pretrain_ngram

        if resume is not None or data is None or out is None:
            raise UserInputError("an n-gram model is counted in one pass: give --data DIR and --out RUN")
        shape = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, dropout=dropout)
        shape.update(hidden_size=hidden_size, context=context, mlp=mlp, pos_encoding=pos_encoding)
        neural = [name for name, value in shape.items() if value is not None]
        if neural:
            raise UserInputError(
                f"{_flags(neural)} does not apply to --model ngram; its flags are --order, "
                "--smoothing, --add-k, --discount"
            )
        return pretrain_ngram(
            data=data,
            out=out,
            order=order,
            smoothing=smoothing,
            add_k=add_k,
            discount=discount,
            overwrite=overwrite,
            as_json=as_json,
        )
    import torch

    from lmforge.data.batching import WindowSampler, random_windows
    from lmforge.data.shards import load_prepared
    from lmforge.data.streams import StreamSampler
    from lmforge.hardware import EMULATED_BF16_SLOWDOWN, bf16_is_emulated
    from lmforge.models.registry import build_model, preset_config
    from lmforge.run import Run, directory_fingerprint
    from lmforge.train.evaluation import mean_loss, perplexity
    from lmforge.train.metrics import MetricsLog, plot_losses
    from lmforge.train.trainer import TrainConfig, Trainer

    overrides = {
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
        "block_size": block_size,
        "mlp_hidden": mlp_hidden,
        "dropout": dropout,
        "bias": bias,
        "pos_encoding": pos_encoding,
        "norm": norm,
        "mlp": mlp,
        "hidden_size": hidden_size,
        "context": context,
        "direct": direct,
        "activation": activation,
        "tie_embeddings": tie_embeddings,
    }
    if resume is not None:
        run = Run.open(resume)
        saved = run.read_config()
        if "train" not in saved or "data" not in saved or not run.state_path.exists():
            raise CheckpointError(
                f"{resume} holds weights but no training state to resume (it was converted or "
                "written by another command); start a new run with --data and --out instead"
            )
        family, model_config = saved["family"], dict(saved["model"])
        changed = [
            k for k in SHAPE_FLAGS if overrides.get(k) is not None and overrides[k] != model_config.get(k)
        ]
        if changed:
            raise CheckpointError(
                f"cannot resume {resume} with a different model shape ({', '.join(changed)} differ from the run); "
                "start a new run with --out instead"
            )
        data = data or Path(saved["data"]["path"])
        if out is not None and Path(out).resolve() != run.path.resolve():
            raise UserInputError("--resume continues the run in its own directory; leave out --out")
        if max_steps is None and max_time is None:
            max_steps, max_time = saved["train"]["max_steps"], saved["train"]["max_time"]
        # a training flag left at its default keeps the run's own setting, so resuming continues
        # the same schedule and batches; a flag given with another value changes it
        given = dict(batch_size=batch_size, grad_accum=grad_accum, lr=lr, min_lr=min_lr)
        given.update(warmup_steps=warmup_steps, weight_decay=weight_decay, beta1=beta1, beta2=beta2)
        given.update(grad_clip=grad_clip, optimizer=optimizer, eval_every=eval_every, log_every=log_every)
        given.update(seed=seed, precision=precision, eval_batches=eval_batches)
        kept = _run_settings(saved["train"], given)
        batch_size, grad_accum, lr, min_lr = (
            kept["batch_size"],
            kept["grad_accum"],
            kept["lr"],
            kept["min_lr"],
        )
        warmup_steps, weight_decay, beta1, beta2 = (
            kept[k] for k in ("warmup_steps", "weight_decay", "beta1", "beta2")
        )
        grad_clip, optimizer, eval_every, log_every = (
            kept[k] for k in ("grad_clip", "optimizer", "eval_every", "log_every")
        )
        seed, precision, eval_batches = kept["seed"], kept["precision"], kept["eval_batches"]
    else:
        if data is None or out is None:
            raise UserInputError("give --data DIR (from `lmforge prepare`) and --out RUN, or --resume RUN")
        if max_steps is None and max_time is None:
            raise UserInputError("give a budget: --max-steps N or --max-time SECONDS (or both)")
    dataset = load_prepared(data)
    tokenizer = dataset.tokenizer
    tokenizer_id = directory_fingerprint(dataset.tokenizer_dir)
    if resume is not None and saved["data"].get("tokenizer_fingerprint") != tokenizer_id:
        raise CheckpointError(
            f"{data} was tokenized with a different tokenizer than the run {resume}; use the run's data"
        )
    if resume is None:
        _check_flags(model, overrides)
        try:
            family, model_config = preset_config(model, **overrides)
        except ValueError as error:
            raise UserInputError(str(error)) from None
        model_config["vocab_size"] = tokenizer.vocab_size
    torch.manual_seed(seed)  # the initial weights, so the same --seed gives the same run
    try:
        net = build_model(family, model_config)
    except (ValueError, TypeError) as error:
        raise UserInputError(f"bad model settings: {error}") from None
    window = net.config.block_size
    train_tokens, val_tokens = dataset.split("train"), dataset.split("val")
    for name, tokens in (("train", train_tokens), ("val", val_tokens)):
        if len(tokens) <= window:
            raise UserInputError(
                f"the {name} split of {data} holds {len(tokens)} tokens, fewer than one window of "
                f"block_size={window} + 1; lower --block-size or prepare more text"
            )
    # recurrent models carry their hidden state from one window of a stream to the next
    stateful = getattr(net, "carries_state", False)
    if stateful:
        train_batches = StreamSampler(train_tokens, batch_size, window)
    else:
        train_batches = WindowSampler(train_tokens, batch_size, window, seed=seed)
    try:
        train_config = TrainConfig(
            max_steps=max_steps,
            max_time=max_time,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=lr,
            min_lr=min_lr,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            beta1=beta1,
            beta2=beta2,
            grad_clip=grad_clip,
            optimizer=optimizer,
            eval_every=eval_every,
            log_every=log_every,
            seed=seed,
            precision=precision,
            compile=compile,
            device=device,
        )
    except ValueError as error:
        raise UserInputError(str(error)) from None

    if resume is None:
        run = Run.create(out, overwrite=overwrite)
        run.save_tokenizer(tokenizer)
    run.write_config(
        {
            "family": family,
            "model": net.config.to_dict(),
            "train": {**vars(train_config), "eval_batches": eval_batches},
            "data": {
                "path": str(Path(data).resolve()),
                "tokenizer_fingerprint": tokenizer_id,
                "tokenizer_kind": tokenizer.kind,
                "vocab_size": tokenizer.vocab_size,
            },
        }
    )

    # the same validation windows at every evaluation, so the curve compares like with like
    eval_generator = torch.Generator().manual_seed(seed + 1)
    eval_set = [random_windows(val_tokens, batch_size, window, eval_generator) for _ in range(eval_batches)]
    eval_set = [{"input_ids": x, "labels": y} for x, y in eval_set]
    metrics = MetricsLog(
        run.metrics_path, resume_step=None if resume is None else run.load_train_state()["step"]
    )

    def save(tag: str, model, state: dict | None) -> None:
        run.save_weights(model, "best" if tag == "best" else "last")
        if state is not None:
            if stateful and model.carried_state is not None:  # where each stream's window ended
                state = {**state, "carried_state": [s.cpu() for s in model.carried_state]}
            run.save_train_state(state)

    def redraw() -> None:
        plot_losses(
            run.metrics_path,
            run.plot_path,
            title=f"{run.path.name}: {family}, {net.num_parameters():,} parameters",
        )

    trainer = Trainer(
        net,
        train_config,
        train_batches,
        evaluate=lambda m: mean_loss(m, eval_set)[0],
        save=save,
        log=metrics.write,
        on_eval=redraw,
        progress=progress and sys.stderr.isatty(),
    )
    if resume is not None:
        run.load_weights(net, "last")
        train_state = run.load_train_state()
        trainer.load_state_dict(train_state)
        if stateful and "carried_state" in train_state:
            net.carried_state = tuple(s.to(trainer.device) for s in train_state["carried_state"])
    total, without_embeddings = net.num_parameters(), net.num_parameters(exclude_embeddings=True)
    if not as_json:
        print(
            f"model: {model if resume is None else family} {describe_model(family, net.config)}: "
            f"{total:,} parameters ({without_embeddings:,} without embeddings)"
        )
        budget = " and ".join(
            filter(None, [max_steps and f"{max_steps} steps", max_time and f"{max_time:g} s"])
        )
        print(
            f"data: {data} ({len(train_tokens):,} train / {len(val_tokens):,} val tokens, vocab {tokenizer.vocab_size}); "
            f"training on {trainer.device} in {trainer.precision} for {budget}"
        )
    if trainer.precision == "bf16" and bf16_is_emulated(trainer.device):
        print(
            f"warning: this {trainer.device.type} has no bf16 hardware: bf16 is emulated, about "
            f"{EMULATED_BF16_SLOWDOWN}x slower than --precision fp32",
            file=sys.stderr,
        )
    try:
        result = trainer.fit()
    finally:
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
        "parameters": total,
        "interrupted": result.interrupted,
        "plot": str(run.plot_path),
    }
    if as_json:
        print(json.dumps(summary))
    else:
        if result.interrupted:
            print(
                f"interrupted at step {result.steps}; checkpoint saved. Continue with: lmforge pretrain --resume {run.path}"
            )
        first = result.first_val_loss
        print(
            f"trained {result.steps} steps ({result.tokens:,} tokens) in {result.elapsed_s:.1f} s, "
            f"{summary['tokens_per_s']:,.0f} tokens/s"
        )
        if first is not None and result.last_val_loss is not None:
            print(
                f"validation loss {first:.4f} -> {result.last_val_loss:.4f} "
                f"(perplexity {math.exp(first):.1f} -> {summary['val_perplexity']:.2f}); best {result.best_val_loss:.4f}"
            )
        print(f"run directory: {run.path}   curves: {run.plot_path}")
    return summary


def describe_model(family: str, config) -> str:
    """The shape of a model in a few words, for the summary line."""
    if family == "gpt":
        return f"{config.n_layer} layers x {config.n_embd} wide, context {config.block_size}"
    if family == "window":
        direct = " + direct connections" if config.direct else ""
        return (
            f"(the previous {config.context} tokens x {config.n_embd}-dim embeddings -> "
            f"{config.hidden_size} tanh units{direct}; trained on windows of {config.block_size})"
        )
    kind = f"Elman RNN, {config.activation}" if family == "rnn" else family.upper()  # LSTM, GRU
    layers = f"{config.n_layer} layer{'s' if config.n_layer > 1 else ''}"
    tied = ", tied" if config.tie_embeddings else ""
    return (
        f"({kind}, {layers} x {config.hidden_size}, {config.n_embd}-dim embeddings{tied}; "
        f"truncated BPTT over windows of {config.block_size})"
    )


def _check_flags(preset: str, overrides: dict) -> None:
    """Refuse a flag that the preset's family has no setting for, naming the flags it does take."""
    from lmforge.models.registry import PRESETS, config_fields

    if preset not in PRESETS:
        return  # preset_config names the presets
    family = PRESETS[preset][0]
    known = config_fields(family)
    wrong = [key for key, value in overrides.items() if value is not None and key not in known]
    if wrong:
        takes = [key for key in overrides if key in known]
        raise UserInputError(
            f"{_flags(wrong)} does not apply to --model {preset} (family {family}); "
            f"its model flags are {_flags(takes)}"
        )


def _flags(names: list[str]) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def _run_settings(saved: dict, given: dict) -> dict:
    """``given`` with every value still at ``pretrain``'s default replaced by the run's saved one."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(pretrain).parameters.items()}
    return {
        name: saved.get(name, value) if value == defaults[name] else value for name, value in given.items()
    }
