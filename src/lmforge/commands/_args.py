"""Build an argparse parser from a command function's signature and docstring.

A command is a plain typed function. Parameters before ``*`` become positional arguments,
keyword-only ones become ``--flags`` (underscores turn into dashes; ``as_json`` becomes
``--json``). The docstring's first paragraph is the summary, its ``Args:`` section gives each
flag's help and an ``Examples:`` section becomes the epilog. So the help text cannot drift
from the code::

    def encode(text: str, *, tokenizer: Path, as_json: bool = False) -> None:
        '''Show how TEXT splits into tokens.

        Args:
            text: the text to encode.
            tokenizer: a tokenizer directory.
        '''

gives ``lmforge tokenizer encode [-h] --tokenizer TOKENIZER [--json] text``.
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

FLAG_RENAMES = {"as_json": "json"}
DEFAULT_HELP = {"as_json": "print one JSON object instead of the human summary"}
_SECTION = re.compile(r"^(Args|Arguments|Returns|Raises|Examples?|Notes?):\s*$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str], str]:
    """Split a Google-style docstring into (description, {arg: help}, examples)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    arg_help: dict[str, str] = {}
    examples: list[str] = []
    section = None
    current = None
    for line in lines:
        header = _SECTION.match(line.strip()) if not line.startswith(" ") else None
        if header:
            section = header.group(1).rstrip("s").lower()
            current = None
            continue
        if section is None:
            description.append(line)
        elif section in ("arg", "argument"):
            match = re.match(r"^\s{2,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if match and len(line) - len(line.lstrip()) <= 8:
                current = match.group(1)
                arg_help[current] = match.group(2).strip()
            elif current and line.strip():
                arg_help[current] += " " + line.strip()
        elif section == "example":
            examples.append(line)
    return "\n".join(description).strip(), arg_help, "\n".join(examples).rstrip()


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _argument_spec(annotation: Any, default: Any) -> dict[str, Any]:
    """argparse keyword arguments for one parameter's type."""
    annotation, _ = _unwrap_optional(annotation)
    origin = get_origin(annotation)
    if annotation is bool:
        # A flag that is off by default reads best as a plain switch; one that is on, or None
        # ("let the library choose", e.g. per tokenizer kind), gets --x and --no-x.
        return {"action": "store_true" if default is False else argparse.BooleanOptionalAction}
    if origin is Literal:
        choices = list(get_args(annotation))
        return {"choices": choices, "type": type(choices[0])}
    if origin in (list, tuple):
        (item,) = get_args(annotation)[:1] or (str,)
        return {"nargs": "+", "type": item if item in (int, float, Path) else str}
    if annotation in (int, float, Path):
        return {"type": annotation}
    return {"type": str}


def build_parser(func: Callable[..., Any], prog: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose arguments are ``func``'s parameters."""
    description, arg_help, examples = parse_docstring(func.__doc__)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=("examples:\n" + examples) if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(func)
    for name, param in inspect.signature(func).parameters.items():
        annotation = hints.get(name, str)
        spec = _argument_spec(annotation, param.default)
        help_text = arg_help.get(name, DEFAULT_HELP.get(name, ""))
        has_default = param.default is not inspect.Parameter.empty
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            flag = "--" + FLAG_RENAMES.get(name, name).replace("_", "-")
            kwargs: dict[str, Any] = {"dest": name, "help": help_text, **spec}
            if has_default:
                kwargs["default"] = param.default
                if param.default not in (None, False, True) and "action" not in spec:
                    kwargs["help"] = f"{help_text} (default: {param.default})".strip()
            else:
                kwargs["required"] = True

            parser.add_argument(flag, **kwargs)
        else:
            if has_default:
                spec["nargs"] = "*" if spec.get("nargs") == "+" else "?"
                spec["default"] = param.default
            parser.add_argument(name, help=help_text, **spec)
    return parser


def summary(func: Callable[..., Any]) -> str:
    """The first line of a command's docstring, for the top-level command list."""
    description, _, _ = parse_docstring(func.__doc__)
    return description.splitlines()[0] if description else ""
