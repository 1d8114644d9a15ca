"""The ``lmforge`` entry point: find the command, parse its flags, turn errors into one line.

Commands are imported only when chosen, so ``lmforge --help`` never loads torch.
Exit status: 0 on success, 2 for an expected failure (an ``LMForgeError``: bad input the user
can fix, an unknown command or flag), 1 for anything unexpected, 130 on Ctrl-C (after whatever
the command saves on the way out). ``--debug`` anywhere shows the traceback.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence

from lmforge import __version__
from lmforge.errors import LMForgeError, UserInputError

# command -> (one-line summary, "module:function") or (summary, {subcommand: "module:function"})
COMMANDS: dict[str, tuple[str, str | dict[str, str]]] = {
    "tokenizer": (
        "Train a tokenizer, or see how one splits text into tokens.",
        {
            "train": "lmforge.commands.tokenizer:train",
            "encode": "lmforge.commands.tokenizer:encode",
            "decode": "lmforge.commands.tokenizer:decode",
        },
    ),
    "prepare": (
        "Tokenize a corpus into train/val token files for training.",
        "lmforge.commands.prepare:prepare",
    ),
    "corpora": (
        "List the public corpora --data downloads by name, and which are cached.",
        "lmforge.commands.corpora:corpora",
    ),
    "pretrain": (
        "Train a language model from scratch on a prepared dataset.",
        "lmforge.commands.pretrain:pretrain",
    ),
    "evaluate": (
        "Loss and perplexity of a trained model on a split or on text.",
        "lmforge.commands.evaluate:evaluate",
    ),
    "generate": ("Continue a prompt with a trained model.", "lmforge.commands.generate:generate"),
    "serve": (
        "Serve a model over HTTP: the OpenAI API, continuous batching, a playground.",
        "lmforge.commands.serve:serve",
    ),
    "score": (
        "Log-probability, per-token probabilities and perplexity of a text.",
        "lmforge.commands.score:score",
    ),
    "attention": (
        "Draw a model's attention weights over a text as heat maps.",
        "lmforge.commands.attention:attention",
    ),
    "finetune": (
        "Fine-tune a pretrained run: label texts (classify), answer in a chat format (sft).",
        {"classify": "lmforge.commands.finetune:classify", "sft": "lmforge.commands.finetune:sft"},
    ),
    "chat": ("Talk with a fine-tuned (sft) run in the terminal.", "lmforge.commands.chat:chat"),
    "align": (
        "Align a run: a reward model, DPO on preference pairs; PPO (RLHF) and GRPO against a reward.",
        {
            "reward": "lmforge.commands.align:reward",
            "dpo": "lmforge.commands.align:dpo",
            "ppo": "lmforge.commands.align_rl:ppo",
            "grpo": "lmforge.commands.align_rl:grpo",
        },
    ),
    "predict": ("Label texts with a fine-tuned classifier.", "lmforge.commands.predict:predict"),
    "reward": ("Score responses to a prompt with a trained reward model.", "lmforge.commands.reward:reward"),
    "fill-mask": (
        "Top-k fills, with probabilities, for each [MASK] of a text (BERT runs).",
        "lmforge.commands.fill_mask:fill_mask",
    ),
    "embed": (
        "Mean-pooled sentence embeddings of texts, and their cosine similarities.",
        "lmforge.commands.embed:embed",
    ),
    "probe": (
        "Rank candidates for the ___ of a text by the model's probability.",
        "lmforge.commands.probe:probe",
    ),
    "convert": (
        "Convert a Hugging Face GPT-2 model to an lmforge run, or back.",
        "lmforge.commands.convert:convert",
    ),
    "estimate": (
        "Compute, time, memory per GPU and communication of a training run, before it runs.",
        "lmforge.commands.estimate:estimate",
    ),
    "inspect": (
        "A model's module tree: shapes, parameters, FLOPs per token and weight memory.",
        "lmforge.commands.inspect:inspect",
    ),
    "demo": ("Run the whole pipeline on the built-in corpus in a few minutes.", "lmforge.commands.demo:demo"),
}


def _load(target: str):
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def _overview() -> str:
    lines = [
        f"lmforge {__version__}: tokenize, pretrain, fine-tune, decode and evaluate language models.",
        "",
        "usage: lmforge <command> [options]      (lmforge <command> --help for its options)",
        "",
        "commands:",
    ]
    for name, (text, target) in COMMANDS.items():
        lines.append(f"  {name:<12} {text}")
        if isinstance(target, dict):
            for sub in target:
                lines.append(f"      {name} {sub}")
    lines += [
        "",
        "global options:",
        "  --debug      show the full traceback of an error",
        "  --version    print the version",
    ]
    return "\n".join(lines)


def _resolve(argv: list[str]) -> tuple[str, str, list[str]]:
    """Split argv into (prog name, 'module:function', remaining args); exits on help/unknown."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_overview())
        raise SystemExit(0)
    if argv[0] == "--version":
        print(f"lmforge {__version__}")
        raise SystemExit(0)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserInputError(f"unknown command {name!r}; {hint}run 'lmforge --help' for the list")
    target = COMMANDS[name][1]
    if isinstance(target, str):
        return f"lmforge {name}", target, rest
    if not rest or rest[0] in ("-h", "--help"):
        print(f"usage: lmforge {name} {{{','.join(target)}}} ...\n\n{COMMANDS[name][0]}\n")
        for sub, sub_target in target.items():
            from lmforge.commands._args import summary

            print(f"  {sub:<10} {summary(_load(sub_target))}")
        raise SystemExit(0)
    if rest[0] not in target:
        raise UserInputError(
            f"lmforge {name}: unknown subcommand {rest[0]!r}; choose from {', '.join(target)}"
        )
    return f"lmforge {name} {rest[0]}", target[rest[0]], rest[1:]


def _check_utf8(argv: list[str]) -> None:
    """A byte that is not UTF-8 reaches Python as a lone surrogate (``\udcff``) that no later
    step can encode; say so here, once, rather than deep inside a tokenizer."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            raise UserInputError(f"the argument '{shown}' is not valid UTF-8 text; give UTF-8") from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        _check_utf8(argv)
        prog, target, rest = _resolve(argv)
        from lmforge.commands._args import build_parser, parse_with_config

        func = _load(target)
        args = parse_with_config(build_parser(func, prog), rest)
        func(**vars(args))
    except LMForgeError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader left (`lmforge ... | head`): what it wanted was printed; say nothing more, and
        # point stdout at nothing so that Python's flush at exit does not raise again
        import contextlib
        import os

        with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as exit:  # the parser's one error line is printed; --help exits 0 as usual
        if exit.code == 2:
            return 2
        raise
    except Exception as error:  # noqa: BLE001 - the one place that turns surprises into a line
        if debug:
            raise
        print(
            f"unexpected error: {type(error).__name__}: {error} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
