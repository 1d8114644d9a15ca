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

A parameter annotated ``Annotated[dict | None, SomeDataclass]`` expands into one flag per field
of the dataclass, each with the help text and default of its field (``train/config.py``'s
``setting``), so settings shared by commands and the library are declared once. The function
receives a dict of the fields the user gave (on the command line or in ``--config``), and
nothing for the rest: a caller can tell "left at the default" from "given", which is what
``pretrain --resume`` needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from lmforge.bounds import Bounds, InputPath, Named, OutputPath, Text

RULE_TYPES = (Bounds, InputPath, OutputPath, Text, Named)
PATH_RULES = (InputPath, OutputPath)

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
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
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
        # extend: `--text A --text B` gives both texts, as `--text A B` does (store would keep B)
        return {"nargs": "+", "action": "extend", "type": item if item in (int, float, Path) else str}
    if annotation in (int, float, Path):
        return {"type": annotation}
    return {"type": str}


def _settings_class(annotation: Any) -> type | None:
    """The dataclass of an ``Annotated[..., SomeDataclass]`` parameter, else None."""
    if get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, type) and dataclasses.is_dataclass(meta):
                return meta
    return None


def _add_settings(parser: argparse.ArgumentParser, settings: type, rules: dict[str, Any]) -> list[str]:
    """One flag per field of ``settings``, absent from the result unless given; their names.
    Each field's rule (``setting(..., positive=True)``) joins ``rules``."""
    group = parser.add_argument_group(inspect.cleandoc(settings.__doc__ or settings.__name__).splitlines()[0])
    hints = typing.get_type_hints(settings)
    names = []
    for field in dataclasses.fields(settings):
        if field.name in getattr(settings, "not_flags", ()):  # a setting this command does not offer
            continue
        spec = _argument_spec(hints[field.name], field.default)
        help_text = field.metadata.get("help", "")
        if field.default not in (None, False, True):
            help_text = f"{help_text} (default: {field.default})"
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            help=help_text,
            default=argparse.SUPPRESS,
            **spec,
        )
        names.append(field.name)
        if field.metadata.get("rule") is not None:
            rules[field.name] = (flag_of(field.name), field.metadata["rule"])
    return names


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one ``error:`` line (and exit 2), not the usage block."""

    def error(self, message: str) -> typing.NoReturn:
        import sys

        sys.stderr.write(f"error: {self.prog}: {message}; see {self.prog} --help\n")
        raise SystemExit(2)


def build_parser(func: Callable[..., Any], prog: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose arguments are ``func``'s parameters."""
    description, arg_help, examples = parse_docstring(func.__doc__)
    parser = OneLineParser(
        prog=prog,
        description=description,
        epilog=("examples:\n" + examples) if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups: dict[str, list[str]] = {}
    rules: dict[str, Any] = {}
    hints = typing.get_type_hints(func, include_extras=True)
    for name, param in inspect.signature(func).parameters.items():
        annotation = hints.get(name, str)
        settings = _settings_class(annotation)
        if settings is not None:
            groups[name] = _add_settings(parser, settings, rules)
            continue
        if get_origin(annotation) is Annotated:
            for meta in annotation.__metadata__:
                if isinstance(meta, RULE_TYPES):
                    positional = param.kind is not inspect.Parameter.KEYWORD_ONLY
                    rules[name] = (name.upper() if positional else flag_of(name), meta)
        spec = _argument_spec(annotation, param.default)
        help_text = arg_help.get(name, DEFAULT_HELP.get(name, ""))
        has_default = param.default is not inspect.Parameter.empty
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            flag = "--" + FLAG_RENAMES.get(name, name).replace("_", "-")
            kwargs: dict[str, Any] = {"dest": name, "help": help_text, **spec}
            if has_default:
                if param.default and kwargs.get("action") == "extend":
                    del kwargs["action"]  # extend would add the user's items to a default list
                kwargs["default"] = param.default
                if param.default not in (None, False, True) and "action" not in spec:
                    kwargs["help"] = f"{help_text} (default: {param.default})".strip()
            else:
                kwargs["required"] = True

            parser.add_argument(flag, **kwargs)
        else:
            spec.pop("action", None)  # a positional list is given once
            if has_default:
                spec["nargs"] = "*" if spec.get("nargs") == "+" else "?"
                spec["default"] = param.default
            parser.add_argument(name, help=help_text, **spec)
    if groups:
        parser.set_defaults(_settings=groups)
    if rules:
        parser.set_defaults(_rules=rules)
    return parser


def flag_of(dest: str) -> str:
    """The flag a parameter or setting is given with: ``as_json`` -> ``--json``."""
    return "--" + FLAG_RENAMES.get(dest, dest).replace("_", "-")


def rules_of(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Each flag's declared rule, by destination: what the fuzzing harness draws bad values from."""
    return {dest: rule for dest, (_, rule) in (parser.get_default("_rules") or {}).items()}


def fold_settings(args: argparse.Namespace) -> argparse.Namespace:
    """Check each flag against its rule, and gather each settings dataclass's given flags into one
    dict under its parameter's name."""
    values = vars(args)
    rules = values.pop("_rules", {})
    # Values first, then paths: a bad number is reported the same whether or not a file exists.
    for name, (flag, rule) in sorted(rules.items(), key=lambda item: isinstance(item[1][1], PATH_RULES)):
        rule.check(flag, values.get(name))
    for param, names in values.pop("_settings", {}).items():
        values[param] = {name: values.pop(name) for name in names if name in values}
    return args


CONFIG_HELP = (
    "a recipe file (.yaml, .yml, .toml or .json) whose keys are this command's flags (dashes or "
    "underscores); flags given on the command line win"
)


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``, taking defaults from ``--config FILE`` first (litgpt's recipes).

    ``lmforge pretrain --config recipe.yaml --lr 1e-3`` trains with every setting of the recipe
    but the learning rate. A key that names no flag, or a value outside a flag's choices, is an
    error that names it.
    """
    from lmforge.errors import UserInputError

    parser.add_argument("--config", dest="_config", metavar="FILE", help=CONFIG_HELP)
    config = _config_path(argv)
    if config is not None:
        values = read_recipe(Path(config))
        actions = {action.dest: action for action in parser._actions}
        actions.pop("_settings", None)
        actions.pop("_rules", None)
        for key, value in values.items():
            dest = key.replace("-", "_")
            dest = "as_json" if dest == "json" else dest
            action = actions.get(dest)
            if action is None or dest in ("help", "_config"):
                raise UserInputError(f"{config}: {key!r} is not a flag of {parser.prog}; see --help")
            if action.choices is not None and value not in action.choices:
                choices = ", ".join(map(str, action.choices))
                raise UserInputError(f"{config}: {key} must be one of {choices}; got {value!r}")
            value = _recipe_value(config, key, value, action)
            action.required = False
            parser.set_defaults(**{dest: value})
    args = parser.parse_args(argv)
    del args._config
    return fold_settings(args)


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _recipe_value(config: str, key: str, value: Any, action: argparse.Action) -> Any:
    """A recipe value checked against its flag's kind: a switch takes a boolean (``"false"``, a
    non-empty string, must not switch it on), a number a number; one clear error otherwise."""
    from lmforge.errors import UserInputError

    if action.nargs == 0:  # a switch: --overwrite, --progress/--no-progress
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise UserInputError(f"{config}: {key} is a switch: give true or false; got {value!r}")
        return value
    if action.type is None or action.nargs in ("+", "*"):
        return value
    wrong = isinstance(value, bool) or (
        action.type in (int, float) and not isinstance(value, (int, float, str))
    )
    if action.type is int and isinstance(value, float) and not value.is_integer():
        wrong = True
    if not wrong:
        try:
            return action.type(value)
        except (TypeError, ValueError):
            pass
    kind = {int: "a whole number", float: "a number"}.get(action.type, "text")
    raise UserInputError(f"{config}: {key} must be {kind}; got {value!r}")


def _config_path(argv: list[str]) -> str | None:
    """The FILE of ``--config FILE`` or ``--config=FILE`` (read before parsing: it sets defaults)."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def read_recipe(path: Path) -> dict[str, Any]:
    """The mapping in a YAML, TOML or JSON recipe file, or one clear error."""
    import json

    from lmforge.errors import UserInputError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserInputError(f"--config {path} cannot be read ({error.strerror or error})") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        elif path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserInputError(
                    "YAML recipes need PyYAML: pip install pyyaml (or use .toml or .json)"
                ) from None
            values = yaml.safe_load(text)
        else:
            raise UserInputError(f"--config {path}: use a .yaml, .yml, .toml or .json file")
    except UserInputError:
        raise
    except Exception as error:  # noqa: BLE001 - each parser has its own error types
        raise UserInputError(f"--config {path} is not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(values, dict):
        raise UserInputError(f"--config {path} must hold a mapping of flag names to values")
    return values


def summary(func: Callable[..., Any]) -> str:
    """The first line of a command's docstring, for the top-level command list."""
    description, _, _ = parse_docstring(func.__doc__)
    return description.splitlines()[0] if description else ""
