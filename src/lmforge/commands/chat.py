"""``lmforge chat``: a terminal conversation with a run (the session logic: finetune/chat_session.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from lmforge.bounds import DEVICE, NON_NEGATIVE, POSITIVE, RUN_DIR, SEED, Bounds, Text

HELP = "commands: /reset (forget the conversation), /system TEXT (set the system message), /quit or Ctrl-D"


def chat(
    *,
    checkpoint: Annotated[Path, RUN_DIR],
    system: Annotated[str | None, Text(what="a system message")] = None,
    strategy: Literal["sample", "greedy"] = "sample",
    max_new_tokens: Annotated[int, Bounds(positive=True, at_most=1_000_000)] = 200,
    temperature: Annotated[float, NON_NEGATIVE] = 0.8,
    top_k: Annotated[int, NON_NEGATIVE] = 200,
    top_p: Annotated[float, Bounds(positive=True, at_most=1.0)] = 1.0,
    repetition_penalty: Annotated[float, POSITIVE] = 1.0,
    seed: Annotated[int, SEED] = 1337,
    dtype: Literal["fp32", "bf16"] = "fp32",
    weights: Literal["auto", "best", "last"] = "auto",
    device: Annotated[str, DEVICE] = "auto",
) -> None:
    """Talk with a run in the terminal: each answer is printed as it is generated.

    Every turn renders the whole conversation with the run's chat template (the one
    `lmforge finetune sft` trained it with, RUN/tokenizer/chat_template.jinja; else the default
    "User: ...\\n\\nAssistant:" format), and the answer ends at the end token the model learned
    (end-of-text, or the template's end-of-turn token) or after --max-new-tokens. When the
    conversation outgrows the model's context the oldest turns are dropped (a note says so); the
    system message always stays.

    Type a message and press Enter. /reset forgets the conversation, /system TEXT sets the system
    message (/system alone removes it), /quit or Ctrl-D leaves. Lines can also be piped in
    (`printf 'Hi\\n/reset\\nBye\\n' | lmforge chat ...`): each line is one message or command.

    Args:
        checkpoint: a causal run, ideally fine-tuned with `lmforge finetune sft`.
        system: a system message to start with.
        strategy: sample (draw each token, shaped by --temperature, --top-k, --top-p) or greedy.
        max_new_tokens: the longest answer, in tokens.
        temperature: divide the logits by this before sampling; below 1 is more conservative, 0 is
            greedy.
        top_k: sample only among the k likeliest tokens (0: all of them).
        top_p: sample only among the likeliest tokens that together reach this probability (1: all).
        repetition_penalty: above 1 makes tokens already in the text less likely (1.2 is typical).
        seed: random seed; the same seed and messages give the same answers.
        dtype: fp32, or bf16 (weights cast to bfloat16).
        weights: best (lowest validation loss), last, or auto (best when it exists).
        device: auto, cpu, cuda.

    Examples:
        lmforge chat --checkpoint my_sft_run
        lmforge chat --checkpoint my_sft_run --strategy greedy --system "Answer in one sentence."
    """
    import torch

    from lmforge.finetune.chat_session import ChatSession
    from lmforge.generate import GenerationConfig
    from lmforge.inference import load_for_inference
    from lmforge.tokenizers.chat import ChatTemplate

    config = GenerationConfig(
        strategy=strategy,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
    )
    loaded = load_for_inference(
        checkpoint, causal_for="lmforge chat", weights=weights, device=device, dtype=dtype, pack_rows=1
    )
    template = ChatTemplate.for_tokenizer(loaded.run.tokenizer_dir, loaded.tokenizer)
    session = ChatSession(
        loaded.model,
        loaded.tokenizer,
        template,
        config,
        system=system,
        generator=torch.Generator(device=loaded.device).manual_seed(seed),
    )
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401 - line editing and history for input()
    which = "default (User:/Assistant:)" if template.is_default else "the run's"
    print(
        f"chatting with {checkpoint} ({loaded.model.describe()}; chat template: {which})\n{HELP}",
        file=sys.stderr,
    )
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:  # Ctrl-D
            break
        if not interactive and line == "":  # the end of piped input
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        command, _, rest = line.strip().partition(" ")
        if command in ("/quit", "/exit"):
            break
        if command == "/reset":
            session.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        if command == "/system":
            session.set_system(rest.strip())
            print(f"(system message {'set' if rest.strip() else 'removed'})", file=sys.stderr)
            continue
        if command.startswith("/") and command[1:].isalpha():
            print(f"(unknown command {command}; {HELP})", file=sys.stderr)
            continue
        reply = session.reply(line, on_text=lambda text: print(text, end="", flush=True))
        print(flush=True)
        if reply.dropped or reply.cut:
            print(_cut_note(reply, session.context), file=sys.stderr)
    if interactive:
        print(file=sys.stderr)


def _cut_note(reply, context: int) -> str:
    parts = []
    if reply.dropped:
        parts.append(f"dropped the {reply.dropped} oldest messages")
    if reply.cut:
        parts.append(f"kept the last {reply.prompt_tokens} tokens of the conversation")
    return f"(history cut to fit the context of {context} tokens: {', '.join(parts)})"
