"""The prompts PPO and GRPO sample responses to: where they come from, and the text the model reads.

    load_prompts("builtin:arith", "train")[0]
        -> Prompt(text="12+35=", messages=[{"role": "user", "content": "12+35="}])
    load_prompts("prompts.jsonl", "train")       # {"prompt": "..."} or {"messages": [...]} per line
    prompt.render(template)                       # "User: 12+35=\n\nAssistant:" (the default template)

``text`` is what a reward function is given (the user's words, as in the data); the model reads the
conversation rendered by the run's chat template with the assistant's turn opened, the same text
that SFT trained the assistant's answers after and that ``lmforge chat`` sends. A ``messages`` row
is the conversation up to its last user turn (anything after that turn is an answer, and dropped);
its ``text`` is that turn's content.

Built-in sources carry a train and a val split (``lmforge.data.instruct``); their prompts that do
not fit the model's context with the response are left out (a file's are an error). A file has no
split of its own, so the evaluation before and after training reads it too unless ``--eval-prompts`` names
another file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import DataError

BUILTIN = "builtin:"


@dataclass
class Prompt:
    text: str  # what the reward function sees
    messages: list[dict[str, str]] = field(default_factory=list)  # what the chat template renders

    def __post_init__(self) -> None:
        if not self.messages:
            self.messages = [{"role": "user", "content": self.text}]

    def render(self, template) -> str:
        """The text the policy continues: the conversation with the assistant's turn opened."""
        return template.render(self.messages, add_generation_prompt=True)


def load_prompts(spec: str, split: str = "train") -> list[Prompt]:
    """The prompts of a .jsonl file or a built-in instruction source; one clear line if there are none."""
    if spec.startswith(BUILTIN):
        from lmforge.data.instruct import builtin_rows

        prompts = [Prompt(str(row["prompt"])) for row in builtin_rows(spec, split)]
    else:
        prompts = _file_prompts(Path(spec))
    if not prompts:
        raise DataError(f"{spec} holds no prompts ({split} split); PPO and GRPO need at least one")
    return prompts


def _file_prompts(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise DataError(
            f'--prompts {path} does not exist or is not a file; give a .jsonl file ({{"prompt": ...}} '
            'or {"messages": [...]} per line) or builtin:stdlib-instruct / builtin:arith'
        )
    prompts = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}:{number}: not a JSON object ({error.msg}); a .jsonl file holds one object per line"
                ) from None
            prompts.append(_row_prompt(row, f"{path}:{number}"))
    return prompts


def _row_prompt(row: object, where: str) -> Prompt:
    if isinstance(row, dict) and isinstance(row.get("prompt"), str):
        return Prompt(row["prompt"])
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        messages = row["messages"]
        if not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise DataError(f"{where}: every message needs a 'role' and a 'content'")
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise DataError(f"{where}: the messages have no user turn to answer")
        last = users[-1]
        kept = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages[: last + 1]]
        return Prompt(kept[-1]["content"], kept)
    raise DataError(
        f"{where}: a prompt row needs a 'prompt' string or a 'messages' list ({{\"role\", \"content\"}} each)"
    )


def encode_prompts(
    prompts: list[Prompt],
    template,
    tokenizer,
    context: int | None,
    max_new_tokens: int,
    *,
    drop_long: bool = False,
) -> tuple[list[Prompt], list[list[int]]]:
    """The prompts that fit and their ids, rendered by ``template``. A prompt that leaves no room for
    the response (its tokens + ``max_new_tokens`` beyond the model's context) is one clear error,
    or with ``drop_long`` (a built-in source, written for no particular model) left out; an error
    still if none is left."""
    from lmforge.tokenizers.chat import encode_chat

    kept, encoded, longest = [], [], 0
    for prompt in prompts:
        ids = encode_chat(tokenizer, prompt.render(template))
        if not ids:
            raise DataError(f"the prompt {prompt.text[:40]!r} encodes to no tokens")
        if context is not None and len(ids) + max_new_tokens > context:
            longest = max(longest, len(ids))
            if drop_long:
                continue
            raise DataError(
                f"the prompt {prompt.text[:40]!r} is {len(ids)} tokens once rendered; with --max-new-tokens "
                f"{max_new_tokens} that is past the model's context of {context} tokens: shorten the "
                "prompts or lower --max-new-tokens"
            )
        kept.append(prompt)
        encoded.append(ids)
    if prompts and not kept:
        raise DataError(
            f"no prompt fits: the shortest leaves no room for --max-new-tokens {max_new_tokens} in the "
            f"model's context of {context} tokens; lower --max-new-tokens or use a model with a longer context"
        )
    return kept, encoded
